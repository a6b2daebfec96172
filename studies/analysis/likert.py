"""Realism Likert ratings (1 = clearly artificial ... 5 = fully realistic): real vs synthetic.

If synthetic images are as realistic as real ones, the two distributions coincide: the
probability of superiority ``P(L_syn > L_real) + 1/2 P(tie)`` is 0.5 and the rank-biserial
correlation ``2 PS - 1`` is 0 (negative = synthetic rated less realistic). The pooled
Mann-Whitney test treats ratings as independent, ignoring that each reader rates many
cases; the per-reader tests do not have that problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from studies.ratings import LIKERT_LEVELS, Ratings


@dataclass(frozen=True)
class LikertComparison:
    """Realism ratings of synthetic vs real images.

    Attributes:
        counts_real, counts_synthetic: ``{level: count}`` for levels 1-5.
        mean_real, mean_synthetic, median_real, median_synthetic: location of each group.
        u_synthetic: Mann-Whitney U of the synthetic group.
        p: two-sided Mann-Whitney p-value (NaN when a group is empty or all ratings tie).
        prob_superiority: ``P(L_syn > L_real) + 1/2 P(tie)``.
        rank_biserial: ``2 * prob_superiority - 1``.
    """

    n_real: int
    n_synthetic: int
    counts_real: dict[int, int]
    counts_synthetic: dict[int, int]
    mean_real: float
    mean_synthetic: float
    median_real: float
    median_synthetic: float
    u_synthetic: float
    p: float
    prob_superiority: float
    rank_biserial: float


def compare_likert(*, likert: np.ndarray, truth: np.ndarray) -> LikertComparison:
    """Compare realism Likert ratings of synthetic and real images.

    Args:
        likert: ``(n,)`` ratings 1-5, NaN where missing (dropped).
        truth: ``(n,)`` 0/1, 1 = synthetic.

    Returns:
        A :class:`LikertComparison`.
    """
    likert, truth = np.asarray(likert, dtype=float), np.asarray(truth)
    if likert.shape != truth.shape or likert.ndim != 1:
        raise ValueError(f"likert {likert.shape} and truth {truth.shape} must be 1-D of equal length")
    keep = np.isfinite(likert)
    if not np.isin(likert[keep], LIKERT_LEVELS).all():
        raise ValueError(f"likert must be in {LIKERT_LEVELS} or NaN, got values {np.unique(likert[keep])}")
    syn, real = likert[keep & (truth == 1)], likert[keep & (truth == 0)]
    nan = float("nan")
    u = p = ps = nan
    if syn.size and real.size:
        # U of the synthetic group from mid-ranks (ties count 1/2), then PS = U / (n_syn n_real).
        ranks = stats.rankdata(np.r_[syn, real])[: syn.size]
        u = float(ranks.sum() - syn.size * (syn.size + 1) / 2)
        ps = u / (syn.size * real.size)
        if np.unique(np.r_[syn, real]).size > 1:
            p = float(stats.mannwhitneyu(syn, real, alternative="two-sided").pvalue)

    def counts(x: np.ndarray) -> dict[int, int]:
        return {lv: int((x == lv).sum()) for lv in LIKERT_LEVELS}

    def loc(f: object, x: np.ndarray) -> float:
        return float(f(x)) if x.size else nan

    return LikertComparison(
        n_real=int(real.size), n_synthetic=int(syn.size),
        counts_real=counts(real), counts_synthetic=counts(syn),
        mean_real=loc(np.mean, real), mean_synthetic=loc(np.mean, syn),
        median_real=loc(np.median, real), median_synthetic=loc(np.median, syn),
        u_synthetic=float(u), p=p, prob_superiority=ps, rank_biserial=2 * ps - 1 if np.isfinite(ps) else nan,
    )


def likert_by_reader(ratings: Ratings) -> dict[str, object]:
    """Likert comparison pooled over readers and per reader.

    Args:
        ratings: ratings with a ``likert`` column.

    Returns:
        ``{"pooled": LikertComparison, "per_reader": {reader: LikertComparison}}``.
    """
    if ratings.likert is None:
        raise ValueError("ratings have no likert column")
    per = {}
    for r in ratings.readers():
        sel = ratings.reader == r
        per[str(r)] = compare_likert(likert=ratings.likert[sel], truth=ratings.truth[sel])
    return {"pooled": compare_likert(likert=ratings.likert, truth=ratings.truth), "per_reader": per}
