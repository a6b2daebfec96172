"""Binary-call statistics: accuracy, sensitivity, specificity, exact CIs and tests vs chance.

Convention: truth 1 = synthetic, call 1 = "synthetic". Sensitivity = P(call synthetic |
synthetic) (fakes detected), specificity = P(call real | real); ``fooled = 1 - sensitivity``.

"Indistinguishable from real" is an *equivalence* claim: :func:`tost_binomial` tests
H0: |p - 0.5| >= margin with two one-sided exact binomial tests (never "p > 0.05 vs chance").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


def _check_counts(k: int, n: int) -> None:
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def clopper_pearson(*, k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of a binomial proportion.

    Args:
        k: successes.
        n: trials.
        level: confidence level, in (0, 1).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n == 0``.
    """
    _check_counts(k, n)
    _check_level(level)
    if n == 0:
        return float("nan"), float("nan")
    alpha = 1 - level
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def binomial_test(*, k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test of H0: proportion = ``p``; NaN when ``n == 0``.

    Args:
        k: successes.
        n: trials.
        p: proportion under H0, in (0, 1).
    """
    _check_counts(k, n)
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return float("nan") if n == 0 else float(stats.binomtest(k, n, p).pvalue)


@dataclass(frozen=True)
class TostResult:
    """Two one-sided exact binomial tests of equivalence to ``p0`` within ``margin``.

    Attributes:
        p_lower: p-value of H0: p <= p0 - margin (vs p > p0 - margin).
        p_upper: p-value of H0: p >= p0 + margin (vs p < p0 + margin).
        p: ``max(p_lower, p_upper)``, the TOST p-value.
        equivalent: ``p < alpha`` with ``alpha = 1 - level``: equivalence shown at that level
            (the same as the ``1 - 2 alpha`` exact CI lying inside the margin, up to discreteness).
    """

    p0: float
    margin: float
    alpha: float
    p_lower: float
    p_upper: float
    p: float
    equivalent: bool


def tost_binomial(*, k: int, n: int, margin: float, p0: float = 0.5, level: float = 0.95) -> TostResult:
    """Exact binomial TOST equivalence test of a proportion to ``p0`` (e.g. accuracy to chance).

    Args:
        k: successes (e.g. correct calls).
        n: trials.
        margin: equivalence margin, e.g. 0.1 for "accuracy within 0.4-0.6".
        p0: the value equivalence is claimed to.
        level: ``1 - alpha`` of each one-sided test.

    Returns:
        A :class:`TostResult`.
    """
    _check_counts(k, n)
    _check_level(level)
    if not (0 < margin and 0 < p0 - margin and p0 + margin < 1):
        raise ValueError(f"need 0 < p0 - margin and p0 + margin < 1, got p0={p0}, margin={margin}")
    alpha = round(1 - level, 12)  # 0.05, not 0.050000000000000044
    if n == 0:
        nan = float("nan")
        return TostResult(p0=p0, margin=margin, alpha=alpha, p_lower=nan, p_upper=nan, p=nan,
                          equivalent=False)
    p_lower = float(stats.binom.sf(k - 1, n, p0 - margin))  # P(X >= k | p = p0 - margin)
    p_upper = float(stats.binom.cdf(k, n, p0 + margin))  # P(X <= k | p = p0 + margin)
    p = max(p_lower, p_upper)
    return TostResult(p0=p0, margin=margin, alpha=alpha, p_lower=p_lower, p_upper=p_upper, p=p,
                      equivalent=bool(p < alpha))


@dataclass(frozen=True)
class Proportion:
    """A proportion ``k / n`` with its exact CI (NaN when ``n == 0``)."""

    k: int
    n: int
    value: float
    ci_low: float
    ci_high: float


def proportion(*, k: int, n: int, level: float = 0.95) -> Proportion:
    """``k / n`` with a Clopper-Pearson CI.

    Args:
        k: successes.
        n: trials.
        level: confidence level.
    """
    low, high = clopper_pearson(k=k, n=n, level=level)
    return Proportion(k=int(k), n=int(n), value=k / n if n else float("nan"), ci_low=low, ci_high=high)


@dataclass(frozen=True)
class BinaryMetrics:
    """Binary-call performance of one reader (or pooled ratings).

    Attributes:
        accuracy: correct calls / all calls.
        sensitivity: synthetic called synthetic / synthetic.
        specificity: real called real / real.
        fooled: synthetic called real / synthetic (``1 - sensitivity``).
        called_synthetic: fraction of all calls that were "synthetic" (response bias).
        p_vs_chance: two-sided exact binomial test of accuracy = 0.5.
        tost: equivalence of accuracy to 0.5 within the margin.
    """

    n: int
    accuracy: Proportion
    sensitivity: Proportion
    specificity: Proportion
    fooled: Proportion
    called_synthetic: Proportion
    p_vs_chance: float
    tost: TostResult


def binary_metrics(*, truth: np.ndarray, call: np.ndarray, level: float = 0.95,
                   tost_margin: float = 0.1) -> BinaryMetrics:
    """Accuracy, sensitivity, specificity with exact CIs, the test vs chance and TOST.

    Args:
        truth: ``(n,)`` 0/1, 1 = synthetic.
        call: ``(n,)`` 0/1, 1 = called synthetic.
        level: confidence level of the CIs and of the TOST.
        tost_margin: equivalence margin of accuracy around 0.5.

    Returns:
        A :class:`BinaryMetrics`.
    """
    truth, call = np.asarray(truth), np.asarray(call)
    if truth.shape != call.shape or truth.ndim != 1:
        raise ValueError(f"truth {truth.shape} and call {call.shape} must be 1-D of equal length")
    for name, arr in (("truth", truth), ("call", call)):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be 0/1, got values {np.unique(arr)}")
    syn, correct = truth == 1, truth == call
    n, k = truth.size, int(correct.sum())
    n1, tp = int(syn.sum()), int((call[syn] == 1).sum())
    n0, tn = n - n1, int((call[~syn] == 0).sum())
    return BinaryMetrics(
        n=n,
        accuracy=proportion(k=k, n=n, level=level),
        sensitivity=proportion(k=tp, n=n1, level=level),
        specificity=proportion(k=tn, n=n0, level=level),
        fooled=proportion(k=n1 - tp, n=n1, level=level),
        called_synthetic=proportion(k=int(call.sum()), n=n, level=level),
        p_vs_chance=binomial_test(k=k, n=n),
        tost=tost_binomial(k=k, n=n, margin=tost_margin, level=level),
    )
