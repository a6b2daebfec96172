"""Pre-launch leakage audit: can anything but the image content tell real from synthetic?

Run it on the stimuli before any reader sees them (READER_STUDIES.md §3, feature 2):

* ``names``: public ids and served names are unique, of one length and alphabet, and
  contain no truth word and no token (>= 6 characters) of the case's own provenance
  (source file names, generator names ...). Shorter tokens are skipped: a 4-hex-digit
  token turns up by chance in one 32-digit id out of ~2000.
* ``format_parity``: every served PNG has the same IHDR (size, bit depth, colour type,
  interlace) and the same chunk list, and only IHDR/IDAT/IEND; volumes share one shape
  and dtype.
* ``identical_files``: no two cases have the same bytes, except declared hidden duplicates
  (an exact copy across the classes is memorisation or a mix-up).
* ``classifier``: a ridge logistic regression on low-level statistics of the served
  bytes (file size, mean, std, histogram entropy, gradient energy, high-frequency FFT
  share, a robust noise level, border mean/std, clipped share, chroma), stratified k-fold cross-validated with
  a seed, predicts truth. Out-of-fold AUC with a DeLong 95 % CI. **Fails when AUC >
  ``auc_threshold`` (0.7) and the CI's lower bound > 0.5**: clearly above chance, not
  just noise from a small audit set. Catch cases (obvious fakes by design) and
  duplicate copies (identical rows would leak across folds) are left out.

Volumes are audited on what readers see when a ``renderer`` is given (the app passes
its windowing: stored int16 volume -> served uint8 slices or PNG bytes), else on the
stored HU arrays.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import norm

from studies.stimuli import PNG_CHUNKS, SUFFIX, encode_png, file_sha256, png_chunks, png_header, stimulus_path

Renderer = Callable[[np.ndarray], Iterable[np.ndarray | bytes]]
TRUTH_WORDS = ("real", "synth", "fake", "gen", "orig", "true", "false")
MIN_TOKEN = 6
FEATURES = ("log_file_size", "mean", "std", "entropy", "log_gradient_energy", "hf_fft_share", "log_noise_mad",
            "border_mean", "border_std", "clipped_share", "chroma")


@dataclass(frozen=True)
class AuditItem:
    """One stored stimulus as the audit sees it.

    Attributes:
        public_id: the case's opaque id.
        truth: "real" or "synthetic".
        kind: "image2d" or "volume".
        path: the stored file.
        provenance: the case's provenance (tokens must not appear in names).
        served_name: name or URL the app serves it under; ``<public_id><suffix>`` when None.
        duplicate_of: public id of the original when this is a hidden duplicate copy.
        is_catch: attention-check case (left out of the classifier).
    """

    public_id: str
    truth: str
    kind: str
    path: Path
    provenance: Mapping = field(default_factory=dict)
    served_name: str | None = None
    duplicate_of: str | None = None
    is_catch: bool = False


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one audit check."""

    name: str
    status: Literal["pass", "fail", "skip"]
    message: str
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AuditReport:
    """All checks; the study may launch only when :attr:`passed`."""

    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """No check failed (skipped checks are listed in :meth:`summary`)."""
        return all(c.status != "fail" for c in self.checks)

    def check(self, name: str) -> CheckResult:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; checks: {[c.name for c in self.checks]}")

    def summary(self) -> str:
        """One line per check, e.g. ``FAIL classifier: AUC 0.91 [0.84, 0.98] ...``."""
        return "\n".join(f"{c.status.upper():4} {c.name}: {c.message}" for c in self.checks)


# ----------------------------------------------------------------------------- checks
def _tokens(value: object) -> set[str]:
    """Lower-case pieces (>= MIN_TOKEN chars) of every string in a provenance value.

    Split once on path separators and dots (keeps whole stems like ``case_00012_scan``)
    and once on every non-alphanumeric character (keeps ``patient`` of ``patient-12``).
    """
    if isinstance(value, Mapping):
        return set().union(*(_tokens(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_tokens(v) for v in value)) if value else set()
    if isinstance(value, str):
        pieces = re.split(r"[/\\.\s]+", value) + re.split(r"[^0-9A-Za-z]+", value)
        return {t.lower() for t in pieces if len(t) >= MIN_TOKEN}
    return set()


def check_names(items: Sequence[AuditItem]) -> CheckResult:
    """Names and ids reveal neither truth nor source (see the module docstring)."""
    problems = []
    names = {it.public_id: it.served_name or f"{it.public_id}{SUFFIX[it.kind]}" for it in items}
    dupes = [k for k, n in Counter(it.public_id for it in items).items() if n > 1]
    if dupes:
        problems.append(f"public ids used twice: {dupes[:3]}")
    shapes = {(len(it.public_id), "hex" if re.fullmatch(r"[0-9a-f]+", it.public_id) else "other")
              for it in items}
    if len(shapes) > 1:
        problems.append(f"public ids differ in length or alphabet: {sorted(map(str, shapes))[:4]}")
    for it in items:
        for text in (it.public_id, names[it.public_id]):
            low = text.lower()
            words = [w for w in TRUTH_WORDS if w in low]
            if words:
                problems.append(f"{text!r} contains {words}")
            leaked = [t for t in _tokens(it.provenance) if t in low]
            if leaked:
                problems.append(f"{text!r} contains provenance tokens {sorted(leaked)}")
    status = "fail" if problems else "pass"
    return CheckResult("names", status, "; ".join(problems[:5]) if problems else f"{len(items)} opaque names",
                       {"problems": problems})


def _png_signature(data: bytes) -> tuple:
    types = [t for t, _ in png_chunks(data)]
    collapsed = [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]]  # one IDAT run
    return tuple(sorted(png_header(data).items())), tuple(collapsed)


def check_format_parity(served: Mapping[str, list[bytes]], truth: Mapping[str, str],
                        arrays: Mapping[str, tuple] | None = None) -> CheckResult:
    """All served PNGs share one header and chunk list (and volumes one shape/dtype).

    Args:
        served: public id -> served PNG bytes.
        truth: public id -> truth.
        arrays: public id -> ``(shape, dtype)`` of stored volumes.
    """
    counts: dict[tuple, Counter] = {}
    for pid, pngs in served.items():
        for data in pngs:
            counts.setdefault(_png_signature(data), Counter())[truth[pid]] += 1
    for pid, sig in (arrays or {}).items():
        counts.setdefault(("array",) + sig, Counter())[truth[pid]] += 1
    problems = [f"chunks {sig[1]} outside {PNG_CHUNKS}" for sig in counts
                if sig[0] != "array" and set(sig[1]) - set(PNG_CHUNKS)]
    png_sigs = [s for s in counts if s[0] != "array"]
    arr_sigs = [s for s in counts if s[0] == "array"]
    if len(png_sigs) > 1 or len(arr_sigs) > 1:
        problems.append(f"{len(png_sigs)} PNG formats and {len(arr_sigs)} array formats")
    details = {"formats": [{"format": str(sig), "by_truth": dict(c)} for sig, c in counts.items()]}
    if not counts:
        return CheckResult("format_parity", "skip", "nothing served to compare", details)
    n_files = sum(sum(c.values()) for c in counts.values())
    msg = "; ".join(problems) if problems else f"one format across {n_files} files"
    return CheckResult("format_parity", "fail" if problems else "pass", msg, details)


def check_identical_files(items: Sequence[AuditItem]) -> CheckResult:
    """No two stored files are byte-identical unless one is a declared duplicate copy."""
    by_hash: dict[str, list[AuditItem]] = {}
    for it in items:
        by_hash.setdefault(file_sha256(it.path), []).append(it)
    clashes = []
    for group in by_hash.values():
        originals = {it.duplicate_of or it.public_id for it in group}
        if len(originals) > 1:
            clashes.append(sorted((it.public_id, it.truth) for it in group))
    msg = f"{len(clashes)} groups of identical files: {clashes[:2]}" if clashes else "all files distinct"
    return CheckResult("identical_files", "fail" if clashes else "pass", msg, {"clashes": clashes})


# ----------------------------------------------------------------------------- features
def _gray_features(gray: np.ndarray, low: float, high: float, chroma: float, nbytes: int) -> np.ndarray:
    """Statistics of one 2D image; ``gray`` float, values in ``[low, high]``."""
    hist, _ = np.histogram(gray, bins=256, range=(low, high))
    p = hist[hist > 0] / hist.sum()
    dy, dx = np.diff(gray, axis=0), np.diff(gray, axis=1)
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(gray.shape[0])),
                         np.fft.fftshift(np.fft.fftfreq(gray.shape[1])), indexing="ij")
    high_band = np.hypot(fy, fx) > 0.25  # above half the Nyquist frequency
    # Donoho's noise estimate: median |finest diagonal Haar detail| / 0.6745; edges barely move
    # it. Only 2x2 blocks off the clip limits count: windowed CT is mostly flat black/white.
    h, w = gray.shape[0] // 2 * 2, gray.shape[1] // 2 * 2
    quads = [gray[0:h:2, 0:w:2], gray[0:h:2, 1:w:2], gray[1:h:2, 0:w:2], gray[1:h:2, 1:w:2]]
    inside = np.logical_and.reduce([(q > low) & (q < high) for q in quads])
    hh = ((quads[0] - quads[1] - quads[2] + quads[3]) / 2)[inside]
    noise = np.median(np.abs(hh)) / 0.6745 if hh.size else 0.0
    b = max(1, min(gray.shape) // 32)
    ring = np.ones(gray.shape, bool)
    ring[b:-b, b:-b] = False
    return np.array([
        np.log(max(nbytes, 1)), gray.mean(), gray.std(), -(p * np.log2(p)).sum(),
        np.log(np.mean(dy**2) + np.mean(dx**2) + 1e-12), power[high_band].sum() / max(power.sum(), 1e-12),
        np.log(noise + 1e-3), gray[ring].mean(), gray[ring].std(), np.mean((gray <= low) | (gray >= high)),
        chroma])


def png_features(data: bytes) -> np.ndarray:
    """Feature vector (:data:`FEATURES`) of one served PNG."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return _gray_features(rgb.mean(axis=2), 0.0, 255.0, float(rgb.std(axis=2).mean()), len(data))


def volume_features(volume: np.ndarray, hu_range: tuple[float, float], nbytes: int) -> np.ndarray:
    """Feature vector of a stored volume: slice features averaged over slices."""
    return np.mean([_gray_features(s.astype(np.float32), *hu_range, 0.0, nbytes) for s in volume], axis=0)


# ----------------------------------------------------------------------------- classifier
def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    xb = np.hstack([x, np.ones((len(x), 1))])  # (n, d + 1), last column = intercept

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = xb @ w
        penalty = np.r_[w[:-1], 0.0]
        return (float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * penalty @ penalty),
                xb.T @ (expit(z) - y) + l2 * penalty)

    return minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B").x


def auc_delong(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney AUC (ties 0.5) and its DeLong standard error.

    Args:
        scores: ``(n,)`` higher = more synthetic.
        y: ``(n,)`` 1 = synthetic.
    """
    pos, neg = scores[y == 1], scores[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (n_pos, n_neg)
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(psi.mean()), float(np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)))


def cross_validated_auc(x: np.ndarray, y: np.ndarray, *, seed: int, n_folds: int = 5,
                        l2: float = 1.0) -> tuple[float, float, np.ndarray]:
    """Out-of-fold AUC of a ridge logistic regression, stratified folds drawn with ``seed``.

    Args:
        x: ``(n, d)`` features.
        y: ``(n,)`` 1 = synthetic.
        seed: fold assignment seed.
        n_folds: folds (lowered to the smaller class size).
        l2: ridge penalty on standardised features.

    Returns:
        ``(auc, delong_se, out_of_fold_scores)``.
    """
    rng = np.random.default_rng(seed)
    k = min(n_folds, int(min(y.sum(), len(y) - y.sum())))
    fold = np.empty(len(y), int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % k
    scores = np.empty(len(y))
    for f in range(k):
        train, test = fold != f, fold == f
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
        sd[sd == 0] = 1.0  # a constant feature (e.g. fixed .npy size) carries nothing
        w = _fit_logistic((x[train] - mu) / sd, y[train].astype(float), l2)
        scores[test] = np.hstack([(x[test] - mu) / sd, np.ones((test.sum(), 1))]) @ w
    auc, se = auc_delong(scores, y)
    return auc, se, scores


def check_classifier(features: Mapping[str, np.ndarray], truth: Mapping[str, str], *, seed: int,
                     auc_threshold: float = 0.7, n_folds: int = 5, min_per_class: int = 5) -> CheckResult:
    """Cross-validated truth classifier on low-level statistics (see the module docstring)."""
    ids = list(features)  # input order: folds must not depend on the random ids
    y = np.array([truth[i] == "synthetic" for i in ids], dtype=int)
    if min(y.sum(), len(y) - y.sum()) < min_per_class:
        return CheckResult("classifier", "skip", f"needs >= {min_per_class} real and synthetic cases, got "
                           f"{len(y) - y.sum()} real and {y.sum()} synthetic")
    x = np.stack([features[i] for i in ids])  # (n, d)
    auc, se, _ = cross_validated_auc(x, y, seed=seed, n_folds=n_folds)
    z = norm.ppf(0.975)
    low, high = max(0.0, auc - z * se), min(1.0, auc + z * se)
    univariate = {name: auc_delong(x[:, j], y)[0] for j, name in enumerate(FEATURES[:x.shape[1]])}
    worst = sorted(univariate.items(), key=lambda kv: -abs(kv[1] - 0.5))[:3]
    failed = auc > auc_threshold and low > 0.5
    msg = (f"AUC {auc:.2f} [{low:.2f}, {high:.2f}] on {len(y)} cases; most telling: "
           + ", ".join(f"{k} {v:.2f}" for k, v in worst))
    return CheckResult("classifier", "fail" if failed else "pass", msg, {
        "auc": auc, "se": se, "ci": (low, high), "n": len(y), "threshold": auc_threshold,
        "univariate_auc": univariate})


# ----------------------------------------------------------------------------- entry points
def run_audit(items: Sequence[AuditItem], *, seed: int = 0, renderer: Renderer | None = None,
              hu_range: tuple[float, float] = (-1024, 3071), auc_threshold: float = 0.7,
              n_folds: int = 5) -> AuditReport:
    """Audit stored stimuli before launch.

    Args:
        items: every case of the study (training, catch and duplicate copies included).
        seed: seed of the classifier's folds.
        renderer: volumes only: stored int16 ``(z, y, x)`` -> served images (uint8 arrays,
            encoded here with :func:`studies.stimuli.encode_png`, or PNG bytes as served).
        hu_range: HU range of stored volumes (histogram range when no renderer is given).
        auc_threshold: classifier AUC above which (with CI above 0.5) the audit fails.
        n_folds: cross-validation folds.
    """
    truth = {it.public_id: it.truth for it in items}
    served: dict[str, list[bytes]] = {}
    arrays: dict[str, tuple] = {}
    features: dict[str, np.ndarray] = {}
    for it in items:
        if it.kind == "image2d":
            served[it.public_id] = [it.path.read_bytes()]
        else:
            volume = np.load(it.path, allow_pickle=False)
            arrays[it.public_id] = (volume.shape, str(volume.dtype))
            if renderer is not None:
                rendered = renderer(volume)
                served[it.public_id] = [r if isinstance(r, bytes) else encode_png(r) for r in rendered]
            elif not (it.is_catch or it.duplicate_of):
                features[it.public_id] = volume_features(volume, hu_range, it.path.stat().st_size)
        if it.public_id in served and not (it.is_catch or it.duplicate_of):
            features[it.public_id] = np.mean([png_features(b) for b in served[it.public_id]], axis=0)
    return AuditReport((
        check_names(items),
        check_format_parity(served, truth, arrays),
        check_identical_files(items),
        check_classifier(features, truth, seed=seed, auc_threshold=auc_threshold, n_folds=n_folds),
    ))


def audit_study(*, session, study_id: int, media_dir: str | Path, renderer: Renderer | None = None,
                served_names: Mapping[str, str] | None = None, seed: int = 0,
                auc_threshold: float = 0.7) -> AuditReport:
    """:func:`run_audit` on every case of a stored study.

    Args:
        session: database session (read only).
        study_id: the study.
        media_dir: the study's media directory.
        renderer: see :func:`run_audit`.
        served_names: public id -> the name or URL the app serves it under.
        seed: classifier fold seed.
        auc_threshold: see :func:`run_audit`.
    """
    from studies import crud

    cases = crud.list_cases(session=session, study_id=study_id)
    public = {c.id: c.public_id for c in cases}
    hu_range = tuple(crud.get_study(session=session, study_id=study_id).design["stimulus"]["hu_range"])
    items = [AuditItem(public_id=c.public_id, truth=c.truth, kind=c.kind,
                       path=stimulus_path(media_dir, c.public_id, c.kind), provenance=c.provenance,
                       served_name=(served_names or {}).get(c.public_id),
                       duplicate_of=public.get(c.duplicate_of), is_catch=c.is_catch) for c in cases]
    return run_audit(items, seed=seed, renderer=renderer, hu_range=hu_range, auc_threshold=auc_threshold)
