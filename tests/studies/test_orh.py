"""Obuchowski-Rockette-Hillis analysis against the published VanDyke results (EXPECTED.md §1a-1c).

Every expected number is written as printed in its source; ``close`` checks it to that
printed precision (half a unit in the last printed digit).
"""

from __future__ import annotations

import numpy as np
import pytest

from studies.analysis.auc_cov import auc_covariance, jackknife_aucs, unbiased_covariance
from studies.analysis.orh import OrhResult, orh, orh_from_ratings
from studies.analysis.roc import auc
from studies.formats import read_mrmcaov_csv
from studies.ratings import Ratings


def close(value: float, printed: str) -> bool:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(value - float(printed)) <= 0.5 * 10.0**-decimals * (1 + 1e-9)


def check(pairs: list[tuple[float, str]]) -> None:
    bad = [(v, p) for v, p in pairs if not close(v, p)]
    assert not bad, f"(computed, published) pairs off at the printed precision: {bad}"


@pytest.fixture(scope="module")
def vandyke(shared_data) -> Ratings:
    return read_mrmcaov_csv(shared_data / "mrmc" / "VanDyke.csv")


@pytest.fixture(scope="module")
def jk(vandyke: Ratings) -> OrhResult:
    return orh_from_ratings(vandyke, cov_method="jackknife")


def test_reader_aucs_iowa(jk: OrhResult) -> None:
    published = [["0.91964573", "0.85877617", "0.90386473", "0.97310789", "0.82979066"],
                 ["0.94782609", "0.90531401", "0.92173913", "0.99935588", "0.92995169"]]
    check([(jk.auc[i][j], published[i][j]) for i in range(2) for j in range(5)])
    assert jk.modalities == ["1", "2"] and jk.readers == ["1", "2", "3", "4", "5"]
    assert (jk.n_cases, jk.n_real, jk.n_synthetic) == (114, 69, 45)


def test_jackknife_anova_and_components_rjafroc(jk: OrhResult) -> None:
    c = jk.components
    check([(c.ms_t, "0.00479617053"), (c.ms_r, "0.00383619999"), (c.ms_tr, "0.00055103062"),
           (c.var_r, "0.00153499935"), (c.var_tr, "0.00020040252"), (c.cov1, "0.00034661371"),
           (c.cov2, "0.00034407483"), (c.cov3, "0.00023902837"), (c.var_error, "0.00080228827"),
           (c.ms_r_by_modality[0], "0.0030826287"), (c.ms_r_by_modality[1], "0.0013046019"),
           (c.var_error_by_modality[0], "0.00101410277"), (c.var_error_by_modality[1], "0.00059047376"),
           (c.cov2_by_modality[0], "0.00048396180"), (c.cov2_by_modality[1], "0.00020418785")])


def test_rrrc_jackknife_mrmcaov_and_rjafroc(jk: OrhResult) -> None:
    t = jk.rrrc
    d = t.differences[0]
    check([(t.statistic, "4.4563187"), (t.df2, "15.259675"), (t.p, "0.051665686"),
           (t.denominator, "0.0010762629"),
           (d.estimate, "-0.04380032"), (d.se, "0.020748618"), (d.statistic, "-2.1109995"),
           (d.ci_low, "-0.087959499"), (d.ci_high, "0.00035885444"), (d.p, "0.05166569")])
    assert t.df1 == 1 and (d.modality_a, d.modality_b) == ("1", "2")
    m1, m2 = t.modalities
    check([(m1.auc, "0.89703704"), (m1.se, "0.033173597"), (m1.df, "12.744648"), (m1.ci_low, "0.82522360"),
           (m1.ci_high, "0.96885048"), (m2.auc, "0.94083736"), (m2.se, "0.021566368"), (m2.df, "12.710190"),
           (m2.ci_low, "0.89413783"), (m2.ci_high, "0.98753689")])


def test_frrc_jackknife_iowa_and_rjafroc(jk: OrhResult) -> None:
    t = jk.frrc
    d = t.differences[0]
    check([(t.statistic, "5.4759532"), (t.p, "0.019279843"), (d.se, "0.018717483"), (d.statistic, "-2.34"),
           (d.ci_low, "-0.080485914"), (d.ci_high, "-0.0071147303")])
    assert t.df2 is None and d.df is None
    m1, m2 = t.modalities
    check([(m1.se, "0.02428971"), (m1.ci_low, "0.84943008"), (m1.ci_high, "0.94464399"),
           (m2.se, "0.01677632"), (m2.ci_low, "0.90795637"), (m2.ci_high, "0.97371835")])
    var_error = ["0.00069890", "0.00110605", "0.00084234", "0.00015058", "0.00121357"]
    cov1 = ["0.00037347", "0.00076016", "0.00035532", "0.00000108", "0.00024304"]
    diffs = [("-0.02818", "0.02551"), ("-0.04654", "0.02630"), ("-0.01787", "0.03121"),
             ("-0.02625", "0.01729"), ("-0.10016", "0.04406")]
    check([(r.var_error, v) for r, v in zip(jk.readers_frrc, var_error)]
          + [(r.cov1, v) for r, v in zip(jk.readers_frrc, cov1)]
          + [(r.differences[0].estimate, e) for r, (e, _) in zip(jk.readers_frrc, diffs)]
          + [(r.differences[0].se, s) for r, (_, s) in zip(jk.readers_frrc, diffs)])


def test_rrfc_jackknife_rjafroc(jk: OrhResult) -> None:
    t = jk.rrfc
    d = t.differences[0]
    check([(t.statistic, "8.704"), (t.p, "0.041958752"), (d.se, "0.014846287"), (d.ci_low, "-0.085020224"),
           (d.ci_high, "-0.0025804202")])
    assert (t.df1, t.df2) == (1, 4)
    m1, m2 = t.modalities
    check([(m1.se, "0.02482994"), (m2.se, "0.01615303"), (m1.ci_low, "0.82809808"),
           (m1.ci_high, "0.96597599"),
           (m2.ci_low, "0.89598936"), (m2.ci_high, "0.98568536")])
    assert m1.df == m2.df == 4


def test_rrrc_delong_mrmcaov_jss(vandyke: Ratings) -> None:
    res = orh_from_ratings(vandyke, cov_method="delong")
    c, t = res.components, res.rrrc
    d = t.differences[0]
    m1, m2 = t.modalities
    check([(c.var_r, "0.0015364254"), (c.var_tr, "0.0002045840"), (c.var_error, "0.0007921325"),
           (c.cov1, "0.0003420090"), (c.cov2, "0.0003395265"), (c.cov3, "0.0002358497"),
           (t.denominator, "0.001069415"), (t.statistic, "4.484854"), (t.df2, "15.06611"),
           (t.p, "0.05123303"), (d.se, "0.0206825"), (d.ci_low, "-0.0878671960"),
           (d.ci_high, "0.0002665519"), (d.statistic, "-2.117747"),
           (c.cov2_by_modality[0], "0.0004775239"), (c.cov2_by_modality[1], "0.0002015292"),
           (m1.se, "0.03307642"), (m1.df, "12.59597"), (m1.ci_low, "0.8253461"), (m1.ci_high, "0.9687280"),
           (m2.se, "0.02150464"), (m2.df, "12.56530"), (m2.ci_low, "0.8942155"), (m2.ci_high, "0.9874592")])


def test_rrrc_unbiased_mrmcaov_jss(vandyke: Ratings) -> None:
    res = orh_from_ratings(vandyke, cov_method="unbiased")
    c, t = res.components, res.rrrc
    d = t.differences[0]
    m1, m2 = t.modalities
    check([(c.var_error, "0.0007883925"), (c.cov1, "0.0003416706"), (c.cov2, "0.0003390650"),
           (c.cov3, "0.0002356148"), (t.statistic, "4.489614"), (t.df2, "15.03418"), (t.p, "0.0511618"),
           (d.ci_low, "-0.0878519409"), (d.ci_high, "0.0002512968"),
           (m1.se, "0.0330712"), (m2.se, "0.0214912"), (m1.df, "12.58802"), (m2.df, "12.53391"),
           (m1.ci_low, "0.8253526"), (m1.ci_high, "0.9687214"), (m2.ci_low, "0.8942323"),
           (m2.ci_high, "0.9874424")])


def test_jackknife_matches_brute_force_case_deletion(vandyke: Ratings) -> None:
    cube = vandyke.score_cube()
    scores = cube.values.reshape(10, -1)[:3]
    fast = jackknife_aucs(truth=cube.truth, scores=scores)
    for m in (0, 50, 113):
        keep = np.arange(cube.truth.size) != m
        slow = [auc(truth=cube.truth[keep], score=s[keep]) for s in scores]
        assert fast[:, m] == pytest.approx(slow, abs=1e-14)


def test_unbiased_handles_missing_cases_and_reduces_to_balanced(vandyke: Ratings) -> None:
    cube = vandyke.score_cube()
    scores = cube.values.reshape(10, -1)
    full = unbiased_covariance(truth=cube.truth, scores=scores)
    assert full == pytest.approx(auc_covariance(truth=cube.truth, scores=scores, method="unbiased"))
    # Reading 0 skips half the cases: its covariance with reading 1 only uses shared cases,
    # and its own variance is that of the AUC on its 57 cases alone.
    holey = scores.copy()
    holey[0, ::2] = np.nan
    cov = unbiased_covariance(truth=cube.truth, scores=holey)
    alone = unbiased_covariance(truth=cube.truth[1::2], scores=scores[:1, 1::2])
    assert cov[0, 0] == pytest.approx(alone[0, 0], rel=1e-12)
    assert cov[2:, 2:] == pytest.approx(full[2:, 2:], rel=1e-12)
    assert cov[0, 0] > full[0, 0]  # fewer cases, more variance


def test_single_modality_and_single_reader() -> None:
    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(20, int), np.ones(20, int)]
    scores = rng.normal(size=(1, 3, 40)) + truth
    one = orh(scores=scores, truth=truth)
    assert one.rrrc.differences == [] and np.isnan(one.rrrc.statistic)
    est = one.rrrc.modalities[0]
    ms_r = np.var(one.auc[0], ddof=1)
    assert est.se == pytest.approx(np.sqrt(ms_r / 3 + max(one.components.cov2, 0)))
    assert est.ci_low < est.auc < est.ci_high
    solo = orh(scores=scores[:, :1], truth=truth)
    assert solo.rrrc is None and solo.rrfc is None
    assert solo.frrc.modalities[0].se == pytest.approx(np.sqrt(solo.components.var_error))


def test_bad_inputs() -> None:
    truth = np.r_[0, 0, 1, 1]
    with pytest.raises(ValueError, match="modalities, readers, cases"):
        orh(scores=np.zeros((2, 4)), truth=truth)
    with pytest.raises(ValueError, match="fully crossed"):
        orh(scores=np.array([[[1, 2, np.nan, 4.0]]]), truth=truth, cov_method="jackknife")
    with pytest.raises(ValueError, match="cov_method"):
        orh(scores=np.ones((1, 2, 4)), truth=truth, cov_method="bootstrap")
