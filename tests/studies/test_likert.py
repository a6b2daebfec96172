"""Realism Likert comparison of real vs synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from studies.analysis.likert import compare_likert, likert_by_reader
from studies.ratings import Ratings


def test_counts_means_and_effect_by_hand() -> None:
    likert = np.array([5, 4, 4, 3, 5, 2, 3, 1, 2, np.nan])
    truth = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    res = compare_likert(likert=likert, truth=truth)
    assert (res.n_real, res.n_synthetic) == (5, 4)  # the NaN is dropped
    assert res.counts_real == {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}
    assert res.counts_synthetic == {1: 1, 2: 2, 3: 1, 4: 0, 5: 0}
    assert (res.mean_real, res.mean_synthetic, res.median_real) == (4.2, 2.0, 4.0)
    # Synthetic 3 ties real 3 once; every other pair the real image wins: PS = 0.5 / 20.
    assert res.prob_superiority == pytest.approx(0.5 / 20)
    assert res.rank_biserial == pytest.approx(2 * 0.5 / 20 - 1)
    assert res.u_synthetic == pytest.approx(0.5)
    expected = stats.mannwhitneyu([2, 3, 1, 2], [5, 4, 4, 3, 5], alternative="two-sided").pvalue
    assert res.p == pytest.approx(expected)


def test_identical_distributions_give_half() -> None:
    likert = np.array([1, 2, 3, 4, 5] * 2, float)
    res = compare_likert(likert=likert, truth=np.r_[[0] * 5, [1] * 5])
    assert res.prob_superiority == 0.5 and res.rank_biserial == 0.0 and res.p == pytest.approx(1.0)
    tied = compare_likert(likert=np.full(4, 3.0), truth=np.array([0, 0, 1, 1]))
    assert tied.prob_superiority == 0.5 and np.isnan(tied.p)


def test_per_reader_and_pooled() -> None:
    r = Ratings(reader=["a"] * 4 + ["b"] * 4, case=list("wxyz") * 2, modality=["m"] * 8,
                truth=[0, 0, 1, 1] * 2, score=np.zeros(8), likert=[5, 4, 2, 1, 3, 3, 3, np.nan])
    out = likert_by_reader(r)
    assert out["per_reader"]["a"].prob_superiority == 0.0
    assert out["per_reader"]["b"].n_synthetic == 1 and out["per_reader"]["b"].prob_superiority == 0.5
    assert out["pooled"].n_real == 4 and out["pooled"].n_synthetic == 3


def test_errors() -> None:
    with pytest.raises(ValueError, match="likert must be in"):
        compare_likert(likert=np.array([0.0, 6.0]), truth=np.array([0, 1]))
    r = Ratings(reader=["a"], case=["x"], modality=["m"], truth=[0], score=[1.0])
    with pytest.raises(ValueError, match="no likert"):
        likert_by_reader(r)
