"""analyze() end to end: the VanDyke study (scores only) and a simulated VTT with every column."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studies.analysis.binary import binary_metrics
from studies.analysis.learning import learning_effect
from studies.analysis.summary import analyze, to_jsonable
from studies.formats import read_imrmc
from studies.ratings import Ratings


def make_study(*, seed: int = 0, n_readers: int = 4, n_real: int = 24, n_synthetic: int = 24, n_dup: int = 6,
               n_catch: int = 3, n_train: int = 4, learn: float = 0.0, modalities: tuple[str, ...] = ("gen",),
               drop: float = 0.0) -> Ratings:
    """A simulated visual Turing test: training block, shuffled main block with catch cases and
    hidden repeats, 1-6 confidence scores, calls at >= 4, realism Likert and an organ stratum.

    ``learn`` adds that much latent separation per trial (readers learning the tell);
    ``drop`` removes that fraction of main ratings at random (readers skipping cases).
    """
    rng = np.random.default_rng(seed)
    real = [f"r{i}" for i in range(n_real)]
    syn = [f"s{i}" for i in range(n_synthetic)]
    truth = {**{c: 0 for c in real}, **{c: 1 for c in syn}}
    organ = {c: ("liver", "lung")[i % 2] for i, c in enumerate(real + syn)}
    latent = {c: 0.8 * truth[c] + rng.normal(0, 1) for c in truth}  # case difficulty, shared by readers
    dups = {f"d{i}": c for i, c in enumerate(rng.choice(real + syn, n_dup, replace=False))}
    catch = [f"c{i}" for i in range(n_catch)]
    train = [f"t{i}" for i in range(n_train)]
    truth.update({d: truth[c] for d, c in dups.items()})
    truth.update({c: 1 for c in catch} | {c: i % 2 for i, c in enumerate(train)})
    organ.update({d: organ[c] for d, c in dups.items()} | {c: "liver" for c in catch + train})
    rows: dict[str, list] = {k: [] for k in (
        "reader", "case", "modality", "truth", "score", "call", "confidence", "likert", "trial",
        "is_duplicate", "duplicate_of", "is_training", "is_catch", "organ")}
    for j in range(n_readers):
        bias = rng.normal(0, 0.3)
        for m_i, m in enumerate(modalities):
            main = list(rng.permutation(real + syn + catch + list(dups)))
            for pos, case in enumerate(train + main):
                if case in train:
                    base = truth[case] + rng.normal(0, 1)
                elif case in catch:
                    base = 4.0  # an obvious fake
                else:
                    base = latent[dups.get(case, case)]
                sign = 2 * truth[case] - 1  # learning pushes both classes apart
                x = base + 0.3 * m_i * truth[case] + learn * pos * sign + bias + rng.normal(0, 0.7)
                conf = int(np.clip(np.round(x + 3.5), 1, 6))
                likert = float(np.clip(np.round(4 - 0.8 * truth[case] + rng.normal(0, 0.8)), 1, 5))
                rows["reader"].append(f"R{j}")
                rows["case"].append(case)
                rows["modality"].append(m)
                rows["truth"].append(truth[case])
                rows["score"].append(float(conf))
                rows["call"].append(int(conf >= 4))
                rows["confidence"].append(float(abs(conf - 3.5) + 0.5))
                rows["likert"].append(likert if rng.random() > 0.05 else np.nan)
                rows["trial"].append(pos)
                rows["is_duplicate"].append(case in dups)
                rows["duplicate_of"].append(dups.get(case, ""))
                rows["is_training"].append(case in train)
                rows["is_catch"].append(case in catch)
                rows["organ"].append(organ[case])
    organ_col = np.array(rows.pop("organ"))
    r = Ratings(**{k: np.array(v) for k, v in rows.items()}, strata={"organ": organ_col})
    if drop:
        main = ~(r.flag("is_training") | r.flag("is_catch") | r.flag("is_duplicate"))
        r = r.subset(~(main & (rng.random(len(r)) < drop)))
    return r


@pytest.fixture(scope="module")
def study() -> Ratings:
    return make_study(seed=1, learn=0.01)


@pytest.fixture(scope="module")
def summary(study: Ratings) -> dict:
    return analyze(study, n_boot=200, seed=3)


def test_summary_is_strict_json_with_every_section(summary: dict) -> None:
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    for key in ("counts", "binary", "auc", "orh", "agreement", "retest", "likert", "strata", "learning",
                "catch"):
        assert summary[key] is not None, key


def test_counts_separate_training_catch_and_duplicates(study: Ratings, summary: dict) -> None:
    c = summary["counts"]
    assert (c["readers"], c["cases"], c["real_cases"], c["synthetic_cases"]) == (4, 48, 24, 24)
    assert (c["excluded_training"], c["excluded_catch"], c["excluded_duplicates"]) == (4 * 4, 4 * 3, 4 * 6)
    assert c["ratings"] == 4 * 48 == len(study.main_analysis())


def test_binary_sections_match_direct_computation(study: Ratings, summary: dict) -> None:
    main = study.main_analysis()
    direct = to_jsonable(binary_metrics(truth=main.truth, call=main.call, tost_margin=0.1))
    assert summary["binary"]["pooled"] == direct
    sel = main.reader == "R2"
    r2 = summary["binary"]["per_reader"]["R2"]
    assert r2["accuracy"]["k"] == int((main.call[sel] == main.truth[sel]).sum())
    assert r2["sensitivity"]["n"] == 24 and r2["specificity"]["n"] == 24
    assert summary["binary"]["per_modality"]["gen"]["pooled"] == direct
    catch = summary["catch"]["pooled"]
    assert catch["sensitivity"]["n"] == 12 and catch["specificity"]["n"] == 0


def test_auc_orh_agreement_retest_likert_strata(study: Ratings, summary: dict) -> None:
    orh = summary["orh"]
    assert orh["fully_crossed"] and orh["cov_method"] == "jackknife"
    est = orh["rrrc"]["modalities"][0]
    assert est["auc"] == pytest.approx(np.mean(orh["auc"][0]))
    assert est["ci_low"] < est["auc"] < est["ci_high"]
    per_reader = [summary["auc"]["gen"][r]["auc"] for r in ("R0", "R1", "R2", "R3")]
    assert per_reader == pytest.approx(orh["auc"][0])
    agree = summary["agreement"]["gen"]
    assert len(agree["pairwise"]) == 6 and -1 <= agree["fleiss"]["kappa"] <= 1
    assert agree["fleiss"]["ci_low"] <= agree["fleiss"]["kappa"] <= agree["fleiss"]["ci_high"]
    assert summary["retest"]["pooled"]["n_cases"] == 4 * 6
    lk = summary["likert"]["pooled"]
    assert lk["n_real"] + lk["n_synthetic"] == int(np.isfinite(study.main_analysis().likert).sum())
    assert lk["mean_synthetic"] < lk["mean_real"]  # simulated: synthetic look less realistic
    organ = summary["strata"]["organ"]
    assert set(organ) == {"liver", "lung"}
    assert organ["liver"]["n_ratings"] + organ["lung"]["n_ratings"] == summary["counts"]["ratings"]
    assert organ["lung"]["orh"]["rrrc"]["modalities"][0]["auc"] > 0


def test_learning_is_detected_when_simulated() -> None:
    learned = analyze(make_study(seed=2, learn=0.06, n_real=40, n_synthetic=40), n_boot=0)["learning"]
    flat = analyze(make_study(seed=2, learn=0.0, n_real=40, n_synthetic=40), n_boot=0)["learning"]
    assert learned["pooled"]["learning"] and learned["pooled"]["slope_per_100_trials"] > 0
    assert learned["pooled"]["z"] > flat["pooled"]["z"]
    acc = [b["accuracy"]["value"] for b in learned["blocks"]]
    assert acc[-1] > acc[0]


def test_learning_trend_by_hand() -> None:
    # One reader, correct only in the second half: z = T / sqrt(p(1-p) Sxx) with T = sum (t - t_bar) y.
    trial = np.arange(8)
    correct = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    le = learning_effect(trial=trial, correct=correct, reader=np.array(["a"] * 8), n_blocks=2)
    dt = trial - 3.5
    assert le.pooled.z == pytest.approx((dt @ correct) / np.sqrt(0.25 * (dt @ dt)))
    assert le.pooled.slope_per_100_trials == pytest.approx(100 * (dt @ correct) / (dt @ dt))
    assert [b.accuracy.value for b in le.blocks] == [0.0, 1.0]
    assert (le.blocks[0].first_trial, le.blocks[0].last_trial, le.blocks[1].last_trial) == (0, 3, 7)


def test_seed_controls_the_bootstrap(study: Ratings) -> None:
    a = analyze(study, n_boot=100, seed=5)["agreement"]["gen"]["fleiss"]
    b = analyze(study, n_boot=100, seed=5)["agreement"]["gen"]["fleiss"]
    c = analyze(study, n_boot=100, seed=6)["agreement"]["gen"]["fleiss"]
    assert a == b and a["ci_low"] != c["ci_low"]


def test_two_modalities_and_incomplete_design() -> None:
    s = analyze(make_study(seed=3, modalities=("A", "B"), drop=0.1), n_boot=0)
    orh = s["orh"]
    assert not orh["fully_crossed"] and orh["cov_method"] == "unbiased"
    assert any("unbiased" in n for n in s["notes"])
    diff = orh["rrrc"]["differences"][0]
    assert (diff["modality_a"], diff["modality_b"]) == ("A", "B")
    a, b = (m["auc"] for m in orh["rrrc"]["modalities"])
    assert diff["estimate"] == pytest.approx(a - b)
    assert set(s["binary"]["per_modality"]) == {"A", "B"}


def test_vandyke_scores_only(shared_data) -> None:
    s = analyze(read_imrmc(shared_data / "mrmc" / "VanDyke.imrmc"), n_boot=0)
    assert s["binary"] is None and s["agreement"] is None and s["learning"] is None and not s["has_calls"]
    assert any("no binary calls" in n for n in s["notes"])
    rrrc = s["orh"]["rrrc"]
    assert rrrc["statistic"] == pytest.approx(4.456319, abs=5e-7)
    assert rrrc["modalities"][0]["ci_low"] == pytest.approx(0.82522360, abs=5e-9)
    assert not rrrc["modalities"][0]["tost_vs_chance"]["equivalent"]
    assert s["auc"]["0"]["0"]["auc"] == pytest.approx(0.91964573, abs=5e-9)


def test_bad_arguments_are_named() -> None:
    r = make_study(seed=0, n_readers=2, n_real=6, n_synthetic=6, n_dup=0, n_catch=0, n_train=0)
    with pytest.raises(ValueError, match="tost_margin"):
        analyze(r, tost_margin=0.6)
    with pytest.raises(ValueError, match="orh_cov"):
        analyze(r, orh_cov="bootstrap")
    with pytest.raises(ValueError, match="no ratings left"):
        analyze(r.subset(np.zeros(len(r), bool)))


def test_one_reader_and_a_one_class_stratum() -> None:
    r = make_study(seed=5, n_readers=1, n_dup=0, n_catch=0)
    generator = np.where(r.truth == 1, "ddpm", "")  # only synthetic cases have a generator
    r = Ratings(**{f: getattr(r, f) for f in ("reader", "case", "modality", "truth", "score", "call", "likert",
                                              "trial", "is_training")}, strata={"generator": generator})
    s = analyze(r, n_boot=0)
    assert s["agreement"] is None and s["retest"] is None and s["catch"] is None
    assert s["orh"]["rrrc"] is None and s["orh"]["frrc"]["modalities"][0]["se"] > 0
    assert any("one reader" in n for n in s["notes"])
    gen = s["strata"]["generator"]
    assert gen["ddpm"]["binary"]["specificity"]["n"] == 0 and "error" in gen["ddpm"]["orh"]
    assert gen[""]["binary"]["sensitivity"]["n"] == 0
    json.dumps(s, allow_nan=False)
