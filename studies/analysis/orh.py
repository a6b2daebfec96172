"""Obuchowski-Rockette analysis with Hillis degrees of freedom (ORH) of reader-averaged AUC.

Model (t modalities, r readers, c cases): ``A_ij = mu + tau_i + R_j + (tau R)_ij + e_ij``,
the errors correlated through the shared cases with ``Var(e) = sigma^2``, Cov1 (same reader,
other modality), Cov2 (same modality, other reader), Cov3 (both differ), estimated from the
AUC covariance matrix (jackknife, DeLong or unbiased). Three generalisations:

* RRRC (random readers and cases): ``F = MS(T) / [MS(T:R) + r max(Cov2 - Cov3, 0)]`` with
  Hillis (2007) ddf; single modality ``SE = sqrt(MS(R)_i / r + max(Cov2_i, 0))``;
* FRRC (fixed readers): ``X2 = (t-1) MS(T) / [sigma^2 - Cov1 + (r-1) max(Cov2 - Cov3, 0)]``;
  single modality ``SE = sqrt((sigma^2_i + (r-1) max(Cov2_i, 0)) / r)``, normal quantiles;
* RRFC (fixed cases): ``F = MS(T) / MS(T:R)`` on ``(t-1, (t-1)(r-1))`` df; ``SE = sqrt(MS(R)_i / r)``.

Reproduces the Iowa OR-DBM MRMC 2.51, MRMCaov and RJafroc outputs for the VanDyke data
(``../shared/data/mrmc/EXPECTED.md``). References: Obuchowski and Rockette (1995), Hillis
et al. (2005) Stat Med 24:1579-607, Hillis (2007) Stat Med 26:596-619.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

from studies.analysis.auc_cov import COV_METHODS, CovMethod, auc_covariance
from studies.analysis.roc import auc as empirical_auc
from studies.ratings import Ratings


@dataclass(frozen=True)
class OrhComponents:
    """Mean squares of the AUC ANOVA and OR variance/covariance components.

    Attributes:
        ms_t, ms_r, ms_tr: MS(T), MS(R), MS(T:R) (``ms_t``/``ms_tr`` NaN when t = 1).
        var_r, var_tr: reader and treatment-by-reader variance components.
        var_error, cov1, cov2, cov3: mean AUC error variance and covariances (Cov1/Cov3 NaN when t = 1).
        ms_r_by_modality, var_error_by_modality, cov2_by_modality: the same within each modality, ``(t,)``.
    """

    ms_t: float
    ms_r: float
    ms_tr: float
    var_r: float
    var_tr: float
    var_error: float
    cov1: float
    cov2: float
    cov3: float
    ms_r_by_modality: list[float]
    var_error_by_modality: list[float]
    cov2_by_modality: list[float]


@dataclass(frozen=True)
class ModalityEstimate:
    """Reader-averaged AUC of one modality with its CI (df is None for normal-theory CIs)."""

    modality: str
    auc: float
    se: float
    df: float | None
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Difference:
    """``auc[modality_a] - auc[modality_b]`` with its test (t or z) and CI."""

    modality_a: str
    modality_b: str
    estimate: float
    se: float
    df: float | None
    statistic: float
    p: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class OrhTest:
    """One generalisation (RRRC, FRRC or RRFC): overall test, pairwise differences, per modality.

    Attributes:
        analysis: ``"RRRC"``, ``"FRRC"`` or ``"RRFC"``.
        statistic: F (RRRC, RRFC) or chi-square (FRRC); NaN with one modality.
        df1, df2: numerator / denominator df (``df2`` None for chi-square).
        p: p-value of no difference between modalities (NaN with one modality).
        denominator: the error term of the test statistic.
        differences: every pair of modalities.
        modalities: per-modality reader-averaged AUC and CI.
    """

    analysis: str
    statistic: float
    df1: float
    df2: float | None
    p: float
    denominator: float
    differences: list[Difference]
    modalities: list[ModalityEstimate]


@dataclass(frozen=True)
class ReaderEstimate:
    """FRRC per reader: AUC error variance, Cov1 and the differences between modalities."""

    reader: str
    var_error: float
    cov1: float
    differences: list[Difference]


@dataclass(frozen=True)
class OrhResult:
    """Full ORH analysis; ``rrrc``/``rrfc`` are None with a single reader."""

    cov_method: str
    level: float
    modalities: list[str]
    readers: list[str]
    n_cases: int  # cases read by at least one reader
    n_synthetic: int
    n_real: int
    auc: list[list[float]]  # (t, r)
    covariance: list[list[float]]  # (t*r, t*r), index i * r + j
    components: OrhComponents
    rrrc: OrhTest | None
    frrc: OrhTest
    rrfc: OrhTest | None
    readers_frrc: list[ReaderEstimate]


def _components(theta: np.ndarray, cov: np.ndarray) -> OrhComponents:
    t, r = theta.shape
    mt, mr, m = theta.mean(axis=1), theta.mean(axis=0), theta.mean()
    ti, rj = np.divmod(np.arange(t * r), r)  # modality and reader of each flat reading
    same_t, same_r = ti[:, None] == ti[None], rj[:, None] == rj[None]

    def mean_of(mask: np.ndarray) -> float:
        return float(cov[mask].mean()) if mask.any() else float("nan")

    var, cov1 = mean_of(same_t & same_r), mean_of(~same_t & same_r)
    cov2, cov3 = mean_of(same_t & ~same_r), mean_of(~same_t & ~same_r)
    nan = float("nan")
    ms_t = r * np.sum((mt - m) ** 2) / (t - 1) if t > 1 else nan
    ms_r = t * np.sum((mr - m) ** 2) / (r - 1) if r > 1 else nan
    ms_tr = (np.sum((theta - mt[:, None] - mr[None] + m) ** 2) / ((t - 1) * (r - 1))
             if t > 1 and r > 1 else nan)
    if t > 1:
        # Hillis et al. (2005): E MS(T:R) = var_tr + var - cov1 - cov2 + cov3, and
        # E MS(R) = t var_r + var_tr + var + (t-1) cov1 - cov2 - (t-1) cov3.
        var_tr = ms_tr - var + cov1 + cov2 - cov3
        var_r = (ms_r - var_tr - var - (t - 1) * cov1 + cov2 + (t - 1) * cov3) / t
    else:
        var_tr, var_r = nan, ms_r - var + cov2
    by_t = [(ti == i) for i in range(t)]
    return OrhComponents(
        ms_t=float(ms_t), ms_r=float(ms_r), ms_tr=float(ms_tr), var_r=float(var_r), var_tr=float(var_tr),
        var_error=var, cov1=cov1, cov2=cov2, cov3=cov3,
        ms_r_by_modality=[float(np.var(theta[i], ddof=1)) if r > 1 else nan for i in range(t)],
        var_error_by_modality=[mean_of(np.outer(b, b) & same_r) for b in by_t],
        cov2_by_modality=[mean_of(np.outer(b, b) & ~same_r) for b in by_t],
    )


def _ci(estimate: float, se: float, df: float | None, level: float) -> tuple[float, float]:
    q = stats.norm.ppf(0.5 + level / 2) if df is None else stats.t.ppf(0.5 + level / 2, df)
    return float(estimate - q * se), float(estimate + q * se)


def _difference(a: str, b: str, est: float, se: float, df: float | None, level: float) -> Difference:
    stat = est / se if se > 0 else float("nan")
    if df is None:
        p = 2 * stats.norm.sf(abs(stat))
    else:
        p = 2 * stats.t.sf(abs(stat), df)
    lo, hi = _ci(est, se, df, level)
    return Difference(modality_a=a, modality_b=b, estimate=float(est), se=float(se), df=df,
                      statistic=float(stat), p=float(p), ci_low=lo, ci_high=hi)


def _test(name: str, stat: float, df1: float, df2: float | None, den: float, pair_var: float,
          pair_df: float | None, singles: list[tuple[float, float | None]], mods: list[str],
          mt: np.ndarray, level: float) -> OrhTest:
    t = len(mods)
    if t > 1:
        p = float(stats.chi2.sf(stat, df1) if df2 is None else stats.f.sf(stat, df1, df2))
    else:
        stat, p = float("nan"), float("nan")
    diffs = [_difference(mods[a], mods[b], mt[a] - mt[b], np.sqrt(pair_var), pair_df, level)
             for a, b in combinations(range(t), 2)]
    est = []
    for i, (se, df) in enumerate(singles):
        lo, hi = _ci(mt[i], se, df, level)
        est.append(ModalityEstimate(modality=mods[i], auc=float(mt[i]), se=float(se), df=df,
                                    ci_low=max(0.0, lo), ci_high=min(1.0, hi)))
    return OrhTest(analysis=name, statistic=float(stat), df1=float(df1), df2=df2, p=p, denominator=float(den),
                   differences=diffs, modalities=est)


def orh(*, scores: np.ndarray, truth: np.ndarray, cov_method: CovMethod = "jackknife", level: float = 0.95,
        modalities: list[str] | None = None, readers: list[str] | None = None) -> OrhResult:
    """Obuchowski-Rockette-Hillis analysis of empirical AUC.

    Args:
        scores: ``(t, r, c)`` scores (higher = more synthetic) of r readers on c cases in t
            modalities. NaN marks a case a reader did not read in a modality; only the
            ``"unbiased"`` covariance handles such designs (MRMCaov does the same).
        truth: ``(c,)`` 0/1, 1 = synthetic.
        cov_method: AUC covariance estimator: ``"jackknife"`` (Iowa/RJafroc/MRMCaov default),
            ``"delong"`` or ``"unbiased"`` (the only one for designs that are not fully crossed).
        level: confidence level of the CIs, in (0, 1).
        modalities: ``t`` names (default ``"0"``, ``"1"``, ...).
        readers: ``r`` names (default ``"0"``, ``"1"``, ...).

    Returns:
        An :class:`OrhResult`; differences are ``modality_a - modality_b`` in input order.
    """
    # 1. Check inputs.
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 3:
        raise ValueError(f"scores must be (modalities, readers, cases), got shape {scores.shape}")
    t, r, c = scores.shape
    if not np.isfinite(scores).all() and cov_method != "unbiased":
        raise ValueError(f"cov_method {cov_method!r} needs a fully crossed design (every reader rates every "
                         "case in every modality); use cov_method='unbiased' or ScoreCube.complete_cases()")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if cov_method not in COV_METHODS:
        raise ValueError(f"unknown cov_method {cov_method!r}; choose from {list(COV_METHODS)}")
    mods = [str(m) for m in (modalities if modalities is not None else range(t))]
    rdrs = [str(x) for x in (readers if readers is not None else range(r))]
    if len(mods) != t or len(rdrs) != r:
        raise ValueError(f"{len(mods)} modality and {len(rdrs)} reader names "
                         f"for scores of shape {scores.shape}")
    truth = np.asarray(truth).astype(int)

    # 2. AUCs, their covariance and the OR components.
    flat = scores.reshape(t * r, c)
    # Each reading's AUC on the cases it includes (all of them in a fully crossed design).
    theta = np.array([empirical_auc(truth=truth[np.isfinite(s)], score=s[np.isfinite(s)])
                      for s in flat]).reshape(t, r)
    cov = auc_covariance(truth=truth, scores=flat, method=cov_method)
    comp = _components(theta, cov)
    mt = theta.mean(axis=1)
    ms_r_i = np.asarray(comp.ms_r_by_modality)
    # With one reader there is no Cov2 (NaN); it enters every formula multiplied by r - 1 = 0.
    cov2_i = np.maximum(np.nan_to_num(np.asarray(comp.cov2_by_modality)), 0.0)
    var_i = np.asarray(comp.var_error_by_modality)
    excess = max(comp.cov2 - comp.cov3, 0.0) if t > 1 and r > 1 else 0.0

    # 3. Random readers, random cases.
    rrrc = rrfc = None
    if r > 1:
        den = comp.ms_tr + r * excess
        ddf = den**2 / (comp.ms_tr**2 / ((t - 1) * (r - 1))) if t > 1 and comp.ms_tr > 0 else float("inf")
        singles = [(np.sqrt(ms_r_i[i] / r + cov2_i[i]),
                    float((ms_r_i[i] + r * cov2_i[i]) ** 2 / (ms_r_i[i] ** 2 / (r - 1))) if ms_r_i[i] > 0
                    else float("inf")) for i in range(t)]
        rrrc = _test("RRRC", comp.ms_t / den if t > 1 else float("nan"), t - 1, float(ddf), den,
                     2 * den / r, float(ddf), singles, mods, mt, level)
        # 4. Random readers, fixed cases.
        df_tr = float((t - 1) * (r - 1))
        singles = [(np.sqrt(ms_r_i[i] / r), float(r - 1)) for i in range(t)]
        rrfc = _test("RRFC", comp.ms_t / comp.ms_tr if t > 1 else float("nan"), t - 1, df_tr, comp.ms_tr,
                     2 * comp.ms_tr / r if t > 1 else float("nan"), df_tr, singles, mods, mt, level)

    # 5. Fixed readers, random cases.
    den = comp.var_error - comp.cov1 + (r - 1) * excess if t > 1 else float("nan")
    singles = [(np.sqrt((var_i[i] + (r - 1) * cov2_i[i]) / r), None) for i in range(t)]
    frrc = _test("FRRC", (t - 1) * comp.ms_t / den if t > 1 else float("nan"), t - 1, None, den,
                 2 * den / r, None, singles, mods, mt, level)
    per_reader = []
    for j in range(r):
        idx = np.arange(t) * r + j
        sub = cov[np.ix_(idx, idx)]
        off = sub[~np.eye(t, dtype=bool)]
        diffs = [_difference(mods[a], mods[b], theta[a, j] - theta[b, j],
                             np.sqrt(max(sub[a, a] + sub[b, b] - 2 * sub[a, b], 0.0)), None, level)
                 for a, b in combinations(range(t), 2)]
        cov1 = float(off.mean()) if off.size else float("nan")
        per_reader.append(ReaderEstimate(reader=rdrs[j], var_error=float(np.diag(sub).mean()), cov1=cov1,
                                         differences=diffs))

    read = np.isfinite(scores).any(axis=(0, 1))
    n1 = int(truth[read].sum())
    n_read = int(read.sum())
    return OrhResult(cov_method=cov_method, level=level, modalities=mods, readers=rdrs, n_cases=n_read,
                     n_synthetic=n1, n_real=n_read - n1, auc=theta.tolist(),
                     covariance=cov.tolist(), components=comp, rrrc=rrrc, frrc=frrc, rrfc=rrfc,
                     readers_frrc=per_reader)


def orh_from_ratings(ratings: Ratings, *, cov_method: CovMethod = "jackknife", level: float = 0.95,
                     modalities: list[str] | None = None) -> OrhResult:
    """ORH analysis of the ``score`` column of ``ratings``.

    Args:
        ratings: the ratings (use :meth:`Ratings.main_analysis` to leave out training, catch
            and duplicate rows).
        cov_method: ``"jackknife"``, ``"delong"`` or ``"unbiased"``.
        level: confidence level, in (0, 1).
        modalities: which modalities, in this order (differences are earlier minus later);
            all, in order of first appearance, when None.
    """
    cube = ratings.score_cube(value="score", modalities=modalities)
    if not cube.is_complete() and cov_method != "unbiased":
        missing = int(np.isnan(cube.values).sum())
        raise ValueError(f"cov_method {cov_method!r} needs every reader to rate every case in every "
                         f"modality; {missing} of {cube.values.size} reader x case x modality ratings are "
                         "missing (use cov_method='unbiased', or ScoreCube.complete_cases())")
    return orh(scores=cube.values, truth=cube.truth, cov_method=cov_method, level=level,
               modalities=list(cube.modalities), readers=list(cube.readers))
