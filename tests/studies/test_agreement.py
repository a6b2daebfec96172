"""Fleiss and Cohen kappas (textbook values), case-bootstrap CIs and test-retest kappa."""

from __future__ import annotations

import numpy as np
import pytest

from studies.analysis.agreement import agreement, cohen_kappa, fleiss_kappa, retest_agreement, retest_pairs
from studies.ratings import Ratings

# Fleiss (1971)-style worked example on Wikipedia "Fleiss' kappa": 10 items, 14 raters, 5 categories.
WIKI_FLEISS = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def test_fleiss_textbook_value() -> None:
    # P_bar = 0.378, P_e = 0.2128 (printed 0.213), kappa = 0.210.
    assert fleiss_kappa(counts=WIKI_FLEISS) == pytest.approx((0.378 - 0.2128) / (1 - 0.2128), abs=1e-4)
    assert round(fleiss_kappa(counts=WIKI_FLEISS), 3) == 0.210


def test_cohen_textbook_value() -> None:
    # Wikipedia "Cohen's kappa": 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = np.r_[[1] * 25, [0] * 25]
    b = np.r_[[1] * 20, [0] * 5, [1] * 10, [0] * 15]
    assert cohen_kappa(a=a, b=b) == pytest.approx(0.4)
    assert cohen_kappa(a=a, b=a) == 1.0
    assert np.isnan(cohen_kappa(a=np.ones(5), b=np.ones(5)))  # chance agreement 1: undefined
    labels = np.array(["real", "synth", "real", "synth"])
    assert cohen_kappa(a=labels, b=labels[::-1]) == pytest.approx(-1.0)


def test_agreement_combines_pairwise_and_fleiss() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 80)
    calls = np.stack([np.where(rng.random(80) < 0.8, truth, 1 - truth) for _ in range(3)], axis=1)
    res = agreement(calls=calls, readers=["a", "b", "c"], n_boot=300, seed=1)
    assert res.pairwise["a|c"] == pytest.approx(cohen_kappa(a=calls[:, 0], b=calls[:, 2]))
    assert res.mean_cohen.kappa == pytest.approx(np.mean(list(res.pairwise.values())))
    counts = np.stack([(calls == 0).sum(1), (calls == 1).sum(1)], axis=1)
    assert res.fleiss.kappa == pytest.approx(fleiss_kappa(counts=counts))
    assert 0.2 < res.fleiss.kappa < 0.6  # readers 80% right: kappa about 0.36
    assert res.fleiss.ci_low < res.fleiss.kappa < res.fleiss.ci_high
    again = agreement(calls=calls, readers=["a", "b", "c"], n_boot=300, seed=1)
    assert again == res
    other = agreement(calls=calls, readers=["a", "b", "c"], n_boot=300, seed=2)
    assert other.fleiss.ci_low != res.fleiss.ci_low
    assert res.percent_agreement == pytest.approx(np.mean([(calls[:, i] == calls[:, j]).mean()
                                                           for i, j in ((0, 1), (0, 2), (1, 2))]))


def _retest_ratings() -> Ratings:
    # Readers a and b see cases x0..x3 and hidden repeats y0..y3 of them; a repeats every call,
    # b flips the calls on the two synthetic repeats.
    cases = ["x0", "x1", "x2", "x3", "y0", "y1", "y2", "y3"]
    truth = [0, 0, 1, 1, 0, 0, 1, 1]
    call_a = [0, 1, 1, 0, 0, 1, 1, 0]
    call_b = [0, 0, 1, 1, 0, 0, 0, 0]
    dup = [False] * 4 + [True] * 4
    return Ratings(reader=["a"] * 8 + ["b"] * 8, case=cases * 2, modality=["m"] * 16, truth=truth * 2,
                   score=np.r_[call_a, call_b].astype(float), call=call_a + call_b, is_duplicate=dup * 2,
                   duplicate_of=["", "", "", "", "x0", "x1", "x2", "x3"] * 2)


def test_retest_kappa_by_hand() -> None:
    r = _retest_ratings()
    first, repeat, readers = retest_pairs(r)
    assert r.case[first].tolist() == ["x0", "x1", "x2", "x3"] * 2
    assert readers.tolist() == ["a"] * 4 + ["b"] * 4
    res = retest_agreement(r, n_boot=200, seed=0)
    assert res.per_reader["a"] == 1.0
    # b: first 0,0,1,1 vs repeat 0,0,0,0 -> p_o 0.5, p_e 0.5 * 1 = 0.5, kappa 0.
    assert res.per_reader["b"] == pytest.approx(0.0)
    assert res.per_reader_n == {"a": 4, "b": 4}
    assert res.percent_agreement == 0.75
    # pooled: first calls 0,1,1,0,0,0,1,1 vs repeats 0,1,1,0,0,0,0,0 -> p_o 6/8, p_e 0.5*0.75+0.5*0.25.
    assert res.pooled.kappa == pytest.approx((0.75 - 0.5) / 0.5)
    assert res.mean_abs_score_change == 0.25


def test_errors() -> None:
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(counts=np.array([[1, 1], [2, 1]]))
    with pytest.raises(ValueError, match=">= 2 readers"):
        agreement(calls=np.zeros((4, 1), int), readers=["a"])
    r = _retest_ratings()
    with pytest.raises(ValueError, match="no hidden repeated"):
        retest_pairs(r.main_analysis())
