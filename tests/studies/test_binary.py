"""Exact binomial CIs and tests, TOST equivalence to chance, and binary-call metrics."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from studies.analysis.binary import binary_metrics, binomial_test, clopper_pearson, tost_binomial


def test_clopper_pearson_known_values() -> None:
    # 5/10 at 95%: (0.187086, 0.812914), the textbook value.
    lo, hi = clopper_pearson(k=5, n=10)
    assert (lo, hi) == pytest.approx((0.187086, 0.812914), abs=5e-7)
    # k = 0 and k = n have closed forms: upper = 1 - (alpha/2)^(1/n), lower = (alpha/2)^(1/n).
    assert clopper_pearson(k=0, n=10) == pytest.approx((0.0, 1 - 0.025**0.1))
    assert clopper_pearson(k=10, n=10) == pytest.approx((0.025**0.1, 1.0))
    assert clopper_pearson(k=0, n=10, level=0.9)[1] == pytest.approx(1 - 0.05**0.1)
    assert all(np.isnan(clopper_pearson(k=0, n=0)))


def test_binomial_test_by_hand() -> None:
    # P(X >= 7 | 10, 1/2) = (120 + 45 + 10 + 1) / 1024; symmetric, so two-sided doubles it.
    assert binomial_test(k=7, n=10) == pytest.approx(2 * 176 / 1024)
    assert binomial_test(k=5, n=10) == pytest.approx(1.0)


def _cdf(k: int, n: int, p: float) -> float:
    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def test_tost_equivalent_and_not() -> None:
    res = tost_binomial(k=50, n=100, margin=0.1)
    assert res.p_lower == pytest.approx(1 - _cdf(49, 100, 0.4), rel=1e-10)
    assert res.p_upper == pytest.approx(_cdf(50, 100, 0.6), rel=1e-10)
    assert res.p == max(res.p_lower, res.p_upper) and res.p < 0.05 and res.equivalent
    off = tost_binomial(k=60, n=100, margin=0.1)  # observed right at the margin
    assert off.p_upper == pytest.approx(_cdf(60, 100, 0.6), rel=1e-10) and off.p > 0.5 and not off.equivalent
    small = tost_binomial(k=5, n=10, margin=0.1)  # chance-level but too few trials to show equivalence
    assert not small.equivalent and small.alpha == 0.05


def test_binary_metrics_by_hand() -> None:
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    call = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1, 0])
    m = binary_metrics(truth=truth, call=call)
    assert (m.accuracy.k, m.accuracy.n) == (7, 10)
    assert (m.sensitivity.k, m.sensitivity.n, m.sensitivity.value) == (3, 4, 0.75)
    assert (m.specificity.k, m.specificity.n) == (4, 6)
    assert (m.fooled.k, m.fooled.value) == (1, 0.25)
    assert m.called_synthetic.value == 0.5
    assert m.p_vs_chance == pytest.approx(2 * 176 / 1024)
    assert (m.accuracy.ci_low, m.accuracy.ci_high) == clopper_pearson(k=7, n=10)


def test_validation() -> None:
    with pytest.raises(ValueError, match="k=11, n=10"):
        clopper_pearson(k=11, n=10)
    with pytest.raises(ValueError, match="margin"):
        tost_binomial(k=5, n=10, margin=0.6)
    with pytest.raises(ValueError, match="call must be 0/1"):
        binary_metrics(truth=np.array([0, 1]), call=np.array([0, 2]))
