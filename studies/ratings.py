"""The long table of reader-study ratings that every analysis takes.

One row per (reader, case, modality) presentation. Conventions used everywhere in
``studies``:

* ``truth`` 1 = synthetic ("signal present"), 0 = real;
* ``score`` is higher = more confident the image is synthetic (a 1-6 confidence scale,
  a 0-100 slider, or the binary call itself when nothing else was asked);
* ``call`` is the binary answer "synthetic" (1) / "real" (0);
* ``modality`` is the thing being compared (two generators, or the treatments of an
  ``.imrmc`` file); a study with one generator has one modality.

Hidden repeated cases carry their own case id with ``is_duplicate`` set and
``duplicate_of`` naming the original case; training and catch cases are flagged too.
All three are left out of the main analysis (:meth:`Ratings.main_analysis`) and
analysed on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np

ValueColumn = Literal["score", "call", "confidence", "likert"]
LIKERT_LEVELS = (1, 2, 3, 4, 5)

# Optional per-row columns (strata aside), in the order the CSV writer uses.
OPTIONAL_COLUMNS = (
    "call",
    "confidence",
    "likert",
    "trial",
    "is_duplicate",
    "duplicate_of",
    "is_training",
    "is_catch",
)


def ordered_unique(values: np.ndarray) -> np.ndarray:
    """Distinct values in order of first appearance (readers stay in the order they were entered)."""
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def _as_str(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, got shape {arr.shape}")
    return arr.astype(str)


def _as_bool(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            bad = arr[~np.isin(arr, (0, 1))][0]
            raise ValueError(f"column {name!r} must be boolean or 0/1, got {bad!r}")
        arr = arr.astype(bool)
    return arr


@dataclass(frozen=True)
class ScoreCube:
    """Scores arranged modality x reader x case (the layout of an MRMC analysis).

    Attributes:
        modalities: ``(t,)`` modality ids.
        readers: ``(r,)`` reader ids.
        cases: ``(c,)`` case ids.
        truth: ``(c,)`` int, 1 = synthetic.
        values: ``(t, r, c)`` float; NaN where the reader did not rate the case in that modality.
    """

    modalities: np.ndarray
    readers: np.ndarray
    cases: np.ndarray
    truth: np.ndarray
    values: np.ndarray

    def is_complete(self) -> bool:
        """Whether every reader rated every case in every modality (a fully crossed design)."""
        return bool(np.isfinite(self.values).all())

    def complete_cases(self) -> ScoreCube:
        """The cube restricted to cases rated by every reader in every modality."""
        keep = np.isfinite(self.values).all(axis=(0, 1))
        return replace(self, cases=self.cases[keep], truth=self.truth[keep], values=self.values[:, :, keep])


@dataclass(frozen=True)
class Ratings:
    """Reader-study ratings in long form; all arrays have one entry per row.

    Attributes:
        reader: ``(n,)`` str reader ids.
        case: ``(n,)`` str case ids.
        modality: ``(n,)`` str modality ids.
        truth: ``(n,)`` int 0/1, 1 = synthetic; one value per case.
        score: ``(n,)`` float, higher = more confident the image is synthetic.
        call: ``(n,)`` int 0/1 binary call "synthetic", or None when not collected
            (see :meth:`with_calls_from_score`).
        confidence: ``(n,)`` float confidence in the call (NaN when missing), or None.
        likert: ``(n,)`` float realism rating 1-5 (5 = most realistic; NaN when missing), or None.
        trial: ``(n,)`` int 0-based position of the case in the reader's sequence, or None.
        strata: name -> ``(n,)`` str array (e.g. ``{"organ": ...}``).
        is_duplicate: ``(n,)`` bool, row is a hidden repeat of ``duplicate_of``; or None.
        duplicate_of: ``(n,)`` str id of the repeated case ("" where not a duplicate); or None.
        is_training: ``(n,)`` bool training presentation (with feedback); or None.
        is_catch: ``(n,)`` bool attention-check ("obvious fake") case; or None.
    """

    reader: np.ndarray
    case: np.ndarray
    modality: np.ndarray
    truth: np.ndarray
    score: np.ndarray
    call: np.ndarray | None = None
    confidence: np.ndarray | None = None
    likert: np.ndarray | None = None
    trial: np.ndarray | None = None
    strata: dict[str, np.ndarray] = field(default_factory=dict)
    is_duplicate: np.ndarray | None = None
    duplicate_of: np.ndarray | None = None
    is_training: np.ndarray | None = None
    is_catch: np.ndarray | None = None

    def __post_init__(self) -> None:
        # 1. Coerce ids to str and flags to bool so that every analysis sees one dtype.
        set_ = object.__setattr__
        for name in ("reader", "case", "modality"):
            set_(self, name, _as_str(name, getattr(self, name)))
        n = len(self.reader)
        truth = np.asarray(self.truth)
        if truth.size and not np.isin(truth, (0, 1)).all():
            bad = truth[~np.isin(truth, (0, 1))][0]
            raise ValueError(f"truth must be 0 (real) or 1 (synthetic), got {bad!r}")
        set_(self, "truth", truth.astype(int))
        set_(self, "score", np.asarray(self.score, dtype=float))
        for name in ("confidence", "likert"):
            if getattr(self, name) is not None:
                set_(self, name, np.asarray(getattr(self, name), dtype=float))
        if self.call is not None:
            call = np.asarray(self.call)
            if call.size and not np.isin(call, (0, 1)).all():
                bad = call[~np.isin(call, (0, 1))][0]
                raise ValueError(f"call must be 0 (real) or 1 (synthetic), got {bad!r}")
            set_(self, "call", call.astype(int))
        if self.trial is not None:
            trial = np.asarray(self.trial)
            if trial.size and (not np.issubdtype(trial.dtype, np.integer) or trial.min() < 0):
                raise ValueError(f"trial must be non-negative integers, got dtype {trial.dtype} "
                                 f"min {trial.min()}")
            set_(self, "trial", trial.astype(int))
        for name in ("is_duplicate", "is_training", "is_catch"):
            if getattr(self, name) is not None:
                set_(self, name, _as_bool(name, getattr(self, name)))
        if self.duplicate_of is not None:
            set_(self, "duplicate_of", _as_str("duplicate_of", self.duplicate_of))
        set_(self, "strata", {str(k): _as_str(f"strata[{k!r}]", v) for k, v in self.strata.items()})

        # 2. Equal lengths.
        for name, col in self._columns().items():
            if col.shape != (n,):
                raise ValueError(f"column {name!r} has shape {col.shape}, expected ({n},) like 'reader'")

        # 3. Value checks.
        if not np.isfinite(self.score).all():
            raise ValueError(f"score must be finite, got {self.score[~np.isfinite(self.score)][0]} at row "
                             f"{int(np.flatnonzero(~np.isfinite(self.score))[0])}")
        if self.likert is not None:
            ok = np.isnan(self.likert) | np.isin(self.likert, LIKERT_LEVELS)
            if not ok.all():
                raise ValueError(f"likert must be 1-5 or NaN, got {self.likert[~ok][0]}")
        self._check_truth_per_case()
        self._check_unique_rows()
        self._check_duplicates()

    # ----------------------------------------------------------------- validation
    def _columns(self) -> dict[str, np.ndarray]:
        cols = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "strata"}
        cols.update({f"strata[{k!r}]": v for k, v in self.strata.items()})
        return {k: v for k, v in cols.items() if v is not None}

    def _check_truth_per_case(self) -> None:
        if not len(self.case):
            return
        cases, inverse = np.unique(self.case, return_inverse=True)
        lo = np.full(len(cases), 2)
        hi = np.full(len(cases), -1)
        np.minimum.at(lo, inverse, self.truth)
        np.maximum.at(hi, inverse, self.truth)
        if (lo != hi).any():
            raise ValueError(f"case {str(cases[lo != hi][0])!r} has both truth 0 and 1; "
                             "truth must be one per case")

    def _check_unique_rows(self) -> None:
        if not len(self):
            return
        keys = np.stack([self.reader, self.case, self.modality], axis=1)  # (n, 3)
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        if (counts > 1).any():
            reader, case, modality = (str(v) for v in uniq[counts > 1][0])
            raise ValueError(f"reader {reader!r} rated case {case!r} in modality {modality!r} "
                             "more than once; "
                             "hidden repeats need their own case id with is_duplicate/duplicate_of")

    def _check_duplicates(self) -> None:
        if (self.is_duplicate is None) != (self.duplicate_of is None):
            raise ValueError("is_duplicate and duplicate_of must be given together")
        if self.is_duplicate is None:
            return
        dup = self.is_duplicate
        missing = dup & (self.duplicate_of == "")
        if missing.any():
            raise ValueError(f"duplicate case {str(self.case[missing][0])!r} has an empty duplicate_of")
        truth_of = dict(zip(self.case[~dup].tolist(), self.truth[~dup].tolist()))
        rows = zip(self.case[dup].tolist(), self.duplicate_of[dup].tolist(), self.truth[dup].tolist())
        for case, orig, truth in rows:
            if orig not in truth_of:
                raise ValueError(f"duplicate case {case!r} repeats {orig!r}, which is not an original case")
            if truth_of[orig] != truth:
                raise ValueError(f"duplicate case {case!r} has truth {truth} but its original {orig!r} "
                                 f"has truth {truth_of[orig]}")

    # ----------------------------------------------------------------- helpers
    def __len__(self) -> int:
        return len(self.reader)

    def readers(self) -> np.ndarray:
        """Reader ids in order of first appearance."""
        return ordered_unique(self.reader)

    def cases(self) -> np.ndarray:
        """Case ids in order of first appearance."""
        return ordered_unique(self.case)

    def modalities(self) -> np.ndarray:
        """Modality ids in order of first appearance."""
        return ordered_unique(self.modality)

    def case_truth(self) -> dict[str, int]:
        """Case id -> truth (1 = synthetic)."""
        return {str(c): int(t) for c, t in zip(self.case, self.truth)}

    def subset(self, mask: np.ndarray) -> Ratings:
        """Rows where ``mask`` is true, every column kept.

        Args:
            mask: ``(n,)`` bool row selector.
        """
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(self),):
            raise ValueError(f"mask must be a bool array of shape ({len(self)},), "
                             f"got {mask.dtype} {mask.shape}")
        kw = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[mask])
              for f in fields(self) if f.name != "strata"}
        return Ratings(**kw, strata={k: v[mask] for k, v in self.strata.items()})

    def flag(self, name: Literal["is_duplicate", "is_training", "is_catch"]) -> np.ndarray:
        """A flag column, all false when it was not given."""
        value = getattr(self, name)
        return np.zeros(len(self), bool) if value is None else value

    def main_analysis(self) -> Ratings:
        """Rows of the main analysis: training, catch and duplicate presentations left out."""
        excluded = self.flag("is_training") | self.flag("is_catch") | self.flag("is_duplicate")
        return self.subset(~excluded)

    def with_calls_from_score(self, *, threshold: float) -> Ratings:
        """A copy whose binary call is ``score > threshold`` (1 = synthetic).

        Calls are never derived silently: the threshold must be given explicitly,
        e.g. 3.5 on a 1-6 confidence scale ("probably synthetic" and above).

        Args:
            threshold: score above which a rating counts as the call "synthetic".
        """
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        return replace(self, call=(self.score > threshold).astype(int))

    def score_cube(self, *, value: ValueColumn = "score", modalities: list[str] | None = None) -> ScoreCube:
        """Arrange a value column as modality x reader x case.

        Args:
            value: which column to arrange.
            modalities: which modalities, in this order; all (first-appearance order) when None.

        Returns:
            A :class:`ScoreCube` over the readers and cases of the selected rows; NaN marks
            reader/case/modality combinations without a rating.
        """
        col = getattr(self, value) if value in ("score", "call", "confidence", "likert") else None
        if col is None:
            raise ValueError(f"value column {value!r} is not available; "
                             f"choose from score, call, confidence, likert (present ones only)")
        mods = self.modalities() if modalities is None else np.asarray(modalities, dtype=str)
        unknown = set(mods) - set(self.modality)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(self.modalities())}")
        rows = np.isin(self.modality, mods)
        sub = self.subset(rows)
        readers, cases = sub.readers(), sub.cases()
        m_idx = {m: i for i, m in enumerate(mods)}
        r_idx = {r: i for i, r in enumerate(readers)}
        c_idx = {c: i for i, c in enumerate(cases)}
        values = np.full((len(mods), len(readers), len(cases)), np.nan)
        im = np.fromiter((m_idx[m] for m in sub.modality), int, len(sub))
        ir = np.fromiter((r_idx[r] for r in sub.reader), int, len(sub))
        ic = np.fromiter((c_idx[c] for c in sub.case), int, len(sub))
        values[im, ir, ic] = np.asarray(getattr(sub, value), dtype=float)
        truth_of = sub.case_truth()
        truth = np.array([truth_of[c] for c in cases], dtype=int)
        return ScoreCube(modalities=mods, readers=readers, cases=cases, truth=truth, values=values)
