"""Empirical AUC, DeLong components/covariance/CI and ROC points, checked by hand and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from studies.analysis.roc import auc, delong_ci, delong_covariance, placement_values, roc_curve
from studies.formats import read_mrmcaov_csv


def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x[:, None] > y[None]) + 0.5 * (x[:, None] == y[None])


def test_auc_with_ties_by_hand() -> None:
    # Synthetic scores 2, 3 vs real 1, 2: pairs (2,1)=1, (2,2)=1/2, (3,1)=1, (3,2)=1 -> 3.5 / 4.
    truth, score = np.array([0, 0, 1, 1]), np.array([1.0, 2.0, 2.0, 3.0])
    assert auc(truth=truth, score=score) == 0.875
    v10, v01 = placement_values(truth=truth, score=score)
    assert v10.tolist() == [0.75, 1.0]  # synthetic 2 beats real 1, ties real 2
    assert v01.tolist() == [1.0, 0.75]  # real 1 is beaten by both, real 2 by one and tied once
    assert auc(truth=truth, score=np.ones(4)) == 0.5
    assert auc(truth=truth, score=-score) == 0.125


def test_auc_and_components_match_the_kernel() -> None:
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 80)
    score = rng.integers(1, 6, 80).astype(float)  # many ties
    k = kernel(score[truth == 1], score[truth == 0])
    v10, v01 = placement_values(truth=truth, score=score)
    assert auc(truth=truth, score=score) == pytest.approx(k.mean(), abs=1e-15)
    assert v10 == pytest.approx(k.mean(axis=1)) and v01 == pytest.approx(k.mean(axis=0))


def test_delong_covariance_against_the_definition() -> None:
    rng = np.random.default_rng(5)
    truth = np.r_[np.zeros(30, int), np.ones(25, int)]
    scores = rng.normal(size=(3, 55)) + truth + rng.normal(size=55)  # correlated readers
    pos = truth == 1
    v10 = np.stack([kernel(s[pos], s[~pos]).mean(axis=1) for s in scores])
    v01 = np.stack([kernel(s[pos], s[~pos]).mean(axis=0) for s in scores])
    expected = np.cov(v10) / 25 + np.cov(v01) / 30
    cov = delong_covariance(truth=truth, scores=scores)
    assert cov == pytest.approx(expected, rel=1e-12)
    assert np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    assert cov[0, 1] > 0  # shared case effect


def test_delong_ci() -> None:
    rng = np.random.default_rng(6)
    truth = np.r_[np.zeros(50, int), np.ones(50, int)]
    score = rng.normal(size=100) + truth
    est = delong_ci(truth=truth, score=score, level=0.95)
    var = delong_covariance(truth=truth, scores=score)[0, 0]
    assert est.se == pytest.approx(np.sqrt(var))
    assert est.ci_low == pytest.approx(est.auc - 1.959963984540054 * est.se)
    assert (est.n_synthetic, est.n_real) == (50, 50)
    wide = delong_ci(truth=truth, score=score, level=0.99)
    assert wide.ci_low < est.ci_low and wide.ci_high > est.ci_high
    perfect = delong_ci(truth=truth, score=truth.astype(float))
    assert (perfect.auc, perfect.se, perfect.ci_high) == (1.0, 0.0, 1.0)


def test_roc_curve_points_and_area() -> None:
    truth, score = np.array([0, 0, 1, 1]), np.array([1.0, 2.0, 2.0, 3.0])
    fpr, tpr, thr = roc_curve(truth=truth, score=score)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert thr.tolist() == [np.inf, 3.0, 2.0, 1.0]
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc(truth=truth, score=score))


def test_one_class_is_rejected() -> None:
    with pytest.raises(ValueError, match="both real and synthetic"):
        auc(truth=np.ones(3, int), score=np.arange(3.0))
    with pytest.raises(ValueError, match="truth must be 0/1"):
        auc(truth=np.array([0, 2]), score=np.arange(2.0))
    with pytest.raises(ValueError, match="level"):
        delong_ci(truth=np.array([0, 1]), score=np.arange(2.0), level=95)


def test_vandyke_reader_aucs(shared_data) -> None:
    r = read_mrmcaov_csv(shared_data / "mrmc" / "VanDyke.csv")
    sel = (r.reader == "2") & (r.modality == "1")
    assert auc(truth=r.truth[sel], score=r.score[sel]) == pytest.approx(0.85877617, abs=5e-9)
    fpr, tpr, _ = roc_curve(truth=r.truth[sel], score=r.score[sel])
    assert fpr.size == np.unique(r.score[sel]).size + 1  # one point per rating level used + the origin
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.85877617, abs=5e-9)
