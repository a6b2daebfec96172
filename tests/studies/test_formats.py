"""Ratings validation and the long CSV / iMRMC / MRMCaov file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from studies.formats import (
    read_imrmc,
    read_long_csv,
    read_mrmcaov_csv,
    write_imrmc,
    write_long_csv,
    write_mrmcaov_csv,
)
from studies.ratings import Ratings


def full_ratings() -> Ratings:
    return Ratings(
        reader=["ann", "ann", "ann", "bob", "bob", "bob"], case=["c1", "c2", "c2b"] * 2, modality=["g"] * 6,
        truth=[0, 1, 1] * 2, score=[1.5, 6.0, 5.0, 2.0, 0.1 + 0.2, 4.0], call=[0, 1, 1, 0, 0, 1],
        confidence=[3.0, np.nan, 2.0, 1.0, 1.0, 2.0], likert=[5, 2, np.nan, 4, 3, 1],
        trial=[0, 1, 2, 2, 0, 1],
        strata={"organ": ["liver", "lung", "lung"] * 2}, is_duplicate=[False, False, True] * 2,
        duplicate_of=["", "", "c2"] * 2, is_training=[False] * 6,
        is_catch=[False, False, False, False, False, True],
    )


def assert_same(a: Ratings, b: Ratings) -> None:
    for name in ("reader", "case", "modality", "truth", "score", "call", "trial", "is_duplicate",
                 "duplicate_of", "is_training", "is_catch"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("confidence", "likert"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert a.strata.keys() == b.strata.keys()
    assert all(np.array_equal(a.strata[k], b.strata[k]) for k in a.strata)


def test_long_csv_round_trip(tmp_path: Path) -> None:
    r = full_ratings()
    path = write_long_csv(r, tmp_path / "ratings.csv")
    header = path.read_text().splitlines()[0]
    assert header == ("reader,case,modality,truth,score,call,confidence,likert,trial,is_duplicate,"
                      "duplicate_of,is_training,is_catch,stratum_organ")
    back = read_long_csv(path)
    assert_same(r, back)
    assert back.score[4] == 0.1 + 0.2  # shortest round-trip repr, no precision lost


def test_long_csv_minimal_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("reader,case,modality,truth,score\n1,a,m,0,1\n1,b,m,1,3.5\n")
    r = read_long_csv(p)
    assert r.call is None and r.readers().tolist() == ["1"] and r.score.tolist() == [1.0, 3.5]
    p.write_text("reader,case,modality,truth,score\n1,a,m,0,1\n1,b,m,2,3\n")
    with pytest.raises(ValueError, match=r"a\.csv:3: column 'truth' must be 0 or 1, got '2'"):
        read_long_csv(p)
    p.write_text("reader,case,modality,truth\n1,a,m,0\n")
    with pytest.raises(ValueError, match=r"missing required columns \['score'\]"):
        read_long_csv(p)
    p.write_text("reader,case,modality,truth,score,seconds\n1,a,m,0,1,7.5\n")
    with pytest.raises(ValueError, match=r"unknown columns \['seconds'\]"):
        read_long_csv(p)
    assert len(read_long_csv(p, unknown_columns="ignore")) == 1
    p.write_text("reader,case,modality,truth,score\n1,a,m,0,1\n1,a,m,0\n")
    with pytest.raises(ValueError, match=r"a\.csv:3: 4 fields, the header has 5"):
        read_long_csv(p)
    p.write_text("reader,case,modality,truth,score\n1,a,m,0,1\n2,a,m,1,2\n")
    with pytest.raises(ValueError, match="case 'a' has both truth 0 and 1"):
        read_long_csv(p)


def test_imrmc_round_trip_and_header(tmp_path: Path) -> None:
    r = full_ratings().main_analysis()
    path = write_imrmc(r, tmp_path / "study.imrmc", description="VTT pilot\nliver CT")
    lines = path.read_text().splitlines()
    assert lines[:6] == ["VTT pilot", "liver CT", "N0:1", "N1:1", "NR:2", "NM:1"]
    assert lines[6] == "BEGIN DATA:" and lines[7:9] == ["-1,c1,truth,0", "-1,c2,truth,1"]
    assert lines[9] == "ann,c1,g,1.5"
    back = read_imrmc(path)
    for name in ("reader", "case", "modality", "truth", "score"):
        assert np.array_equal(getattr(r, name), getattr(back, name)), name
    with pytest.raises(ValueError, match="main_analysis"):
        write_imrmc(full_ratings(), tmp_path / "x.imrmc")


def test_vandyke_imrmc_equals_csv(shared_data: Path, tmp_path: Path) -> None:
    im = read_imrmc(shared_data / "mrmc" / "VanDyke.imrmc")
    csv = read_mrmcaov_csv(shared_data / "mrmc" / "VanDyke.csv")
    assert (len(im), len(im.readers()), len(im.cases()), len(im.modalities())) == (1140, 5, 114, 2)
    assert im.readers().tolist() == ["0", "1", "2", "3", "4"] and csv.readers().tolist() == list("12345")
    assert np.array_equal(im.score_cube().values, csv.score_cube().values)
    assert im.call is None and sum(im.case_truth().values()) == 45
    out = write_mrmcaov_csv(csv, tmp_path / "vd.csv")
    assert out.read_text().splitlines()[:2] == ["reader,treatment,case,truth,rating", "1,1,1,0,1.0"]
    assert np.array_equal(read_mrmcaov_csv(out).score_cube().values, csv.score_cube().values)


@pytest.mark.parametrize("body, message", [
    ("N0:1\n-1,a,truth,0\n", "no 'BEGIN DATA:' line"),
    ("BEGIN DATA:\n-1,a,truth,0\n-1,b,truth,1\nr,a,m,1,9\n", r"x\.imrmc:4: expected 4 fields"),
    ("BEGIN DATA:\n-1,a,truth,0\nr,a,m,1\nr,b,m,2\n", r"x\.imrmc:4: case 'b' has scores but no truth row"),
    ("BEGIN DATA:\n-1,a,truth,2\n", r"x\.imrmc:2: truth must be 0 or 1"),
    ("BEGIN DATA:\n-1,a,truth,0\n-1,a,truth,1\n", r"x\.imrmc:3: case 'a' has truth 1 here but 0 on line 2"),
    ("NR:3\nBEGIN DATA:\n-1,a,truth,0\n-1,b,truth,1\nr,a,m,1\nr,b,m,2\n", r"x\.imrmc:1: header says NR:3"),
    ("BEGIN DATA:\n-1,a,truth,0\nr,a,m,high\n", r"x\.imrmc:3: column 'score' must be a finite number"),
    ("BEGIN DATA:\n-1,a,truth,0\n-1,a,m,1\n", r"x\.imrmc:3: readerID -1 is reserved"),
])
def test_malformed_imrmc(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "x.imrmc"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        read_imrmc(path)


def test_mrmcaov_errors(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("reader,case,truth,rating\n1,1,0,3\n")
    with pytest.raises(ValueError, match=r"missing columns \['treatment'\]"):
        read_mrmcaov_csv(p)
    p.write_text("reader,treatment,case,truth,rating\n1,A,1,0,3\n1,A,2,1,x\n")
    with pytest.raises(ValueError, match=r"m\.csv:3: column 'rating'"):
        read_mrmcaov_csv(p)


def test_ratings_validation_and_helpers() -> None:
    r = full_ratings()
    assert r.readers().tolist() == ["ann", "bob"] and r.cases().tolist() == ["c1", "c2", "c2b"]
    main = r.main_analysis()
    assert len(main) == 4 and not main.flag("is_duplicate").any() and not main.flag("is_catch").any()
    cube = main.score_cube()
    assert cube.is_complete() and cube.values.shape == (1, 2, 2)
    assert cube.values[0, 1].tolist() == [2.0, 0.1 + 0.2]
    partial = main.subset(np.array([True, True, True, False])).score_cube()
    assert not partial.is_complete() and partial.complete_cases().cases.tolist() == ["c1"]
    derived = Ratings(reader=["a", "a"], case=["x", "y"], modality=["m", "m"], truth=[0, 1], score=[3.0, 4.0])
    assert derived.call is None and derived.with_calls_from_score(threshold=3.5).call.tolist() == [0, 1]
    with pytest.raises(ValueError, match="value column 'call' is not available"):
        derived.score_cube(value="call")
    base = dict(reader=["a", "a"], case=["x", "y"], modality=["m", "m"], truth=[0, 1], score=[1.0, 2.0])
    with pytest.raises(ValueError, match="column 'score' has shape"):
        Ratings(**{**base, "score": [1.0]})
    with pytest.raises(ValueError, match="truth must be 0 \\(real\\) or 1"):
        Ratings(**{**base, "truth": [0, 2]})
    with pytest.raises(ValueError, match="rated case 'x' in modality 'm' more than once"):
        Ratings(**{**base, "case": ["x", "x"], "truth": [0, 0]})
    with pytest.raises(ValueError, match="likert must be 1-5"):
        Ratings(**base, likert=[0, 3])
    with pytest.raises(ValueError, match="score must be finite"):
        Ratings(**{**base, "score": [1.0, np.nan]})
    with pytest.raises(ValueError, match="repeats 'z', which is not an original case"):
        Ratings(**base, is_duplicate=[False, True], duplicate_of=["", "z"])
    with pytest.raises(ValueError, match="has truth 1 but its original 'x' has truth 0"):
        Ratings(**base, is_duplicate=[False, True], duplicate_of=["", "x"])
