"""Empirical ROC analysis: Wilcoxon AUC, DeLong structural components, covariance and CI.

Conventions: ``truth`` 1 = synthetic (signal present), ``score`` higher = more confident
synthetic. Ties between a synthetic and a real case count 1/2 (the Mann-Whitney kernel
``psi(x, y) = 1[x > y] + 1/2 * 1[x == y]``).

References: DeLong, DeLong and Clarke-Pearson (1988), Biometrics 44:837-45.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def _check(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    scores = np.asarray(scores, dtype=float)
    if truth.ndim != 1 or scores.shape[-1] != truth.shape[0]:
        raise ValueError(f"scores {scores.shape} must end with the number of cases {truth.shape}")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError(f"truth must be 0/1, got values {np.unique(truth)}")
    n1 = int(truth.sum())
    if n1 == 0 or n1 == truth.size:
        raise ValueError(f"AUC needs both real and synthetic cases, got {n1} synthetic of {truth.size}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (no missing ratings)")
    return truth.astype(bool), scores


def placement_values(*, truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong structural components (placement values) of one reader's scores.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        score: ``(c,)`` float.

    Returns:
        ``(v10, v01)``: ``v10`` ``(n1,)`` for each synthetic case the fraction of real cases
        it outscores (ties 1/2); ``v01`` ``(n0,)`` for each real case the fraction of
        synthetic cases that outscore it. Their means both equal the AUC.
    """
    pos, score = _check(truth, score)
    if score.ndim != 1:
        raise ValueError(f"score must be 1-D, got shape {score.shape}")
    x, y = score[pos], score[~pos]
    n1, n0 = x.size, y.size
    # Mid-rank in the pooled sample minus mid-rank within the own class = number of the
    # other class below it, ties counted 1/2: O(c log c) instead of the n1 x n0 kernel.
    r_all = stats.rankdata(score)
    v10 = (r_all[pos] - stats.rankdata(x)) / n0
    v01 = 1.0 - (r_all[~pos] - stats.rankdata(y)) / n1
    return v10, v01


def auc(*, truth: np.ndarray, score: np.ndarray) -> float:
    """Empirical (Wilcoxon / trapezoidal) AUC, ties counted 1/2.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        score: ``(c,)`` float, higher = more synthetic.

    Returns:
        P(score of a synthetic case > score of a real case) + 1/2 P(tie).
    """
    v10, _ = placement_values(truth=truth, score=score)
    return float(v10.mean())


def delong_covariance(*, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """DeLong covariance matrix of k empirical AUCs measured on the same cases.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        scores: ``(k, c)`` scores, one row per reader (or reader x modality).

    Returns:
        ``(k, k)`` covariance ``S10 / n1 + S01 / n0`` of the k AUCs, where S10 and S01 are
        the sample covariances (n - 1 denominators) of the structural components.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    comps = [placement_values(truth=truth, score=s) for s in scores]
    v10 = np.stack([c[0] for c in comps])  # (k, n1)
    v01 = np.stack([c[1] for c in comps])  # (k, n0)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return s10 / v10.shape[1] + s01 / v01.shape[1]


@dataclass(frozen=True)
class AucEstimate:
    """One AUC with its DeLong standard error and a normal-theory CI clipped to [0, 1]."""

    auc: float
    se: float
    ci_low: float
    ci_high: float
    n_synthetic: int
    n_real: int
    level: float


def delong_ci(*, truth: np.ndarray, score: np.ndarray, level: float = 0.95) -> AucEstimate:
    """AUC with DeLong standard error and a Wald CI (clipped to [0, 1]).

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        score: ``(c,)`` float.
        level: confidence level, in (0, 1).

    Returns:
        An :class:`AucEstimate`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    value = auc(truth=truth, score=score)
    se = float(np.sqrt(max(delong_covariance(truth=truth, scores=score)[0, 0], 0.0)))
    z = stats.norm.ppf(0.5 + level / 2)
    n1 = int(np.sum(truth))
    return AucEstimate(auc=value, se=se, ci_low=max(0.0, value - z * se), ci_high=min(1.0, value + z * se),
                       n_synthetic=n1, n_real=int(np.size(truth)) - n1, level=level)


def roc_curve(*, truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC operating points, one per distinct score.

    Args:
        truth: ``(c,)`` 0/1, 1 = synthetic.
        score: ``(c,)`` float.

    Returns:
        ``(fpr, tpr, thresholds)``, each ``(d + 1,)`` for d distinct scores: the point at
        ``thresholds[i]`` calls "synthetic" when ``score >= thresholds[i]``; the first point
        is (0, 0) at threshold +inf. The trapezoidal area under it equals :func:`auc`.
    """
    pos, score = _check(truth, score)
    order = np.argsort(-score, kind="stable")
    s, p = score[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(p)[last]
    fp = np.cumsum(~p)[last]
    tpr = np.r_[0.0, tp / pos.sum()]
    fpr = np.r_[0.0, fp / (~pos).sum()]
    return fpr, tpr, np.r_[np.inf, s[last]]
