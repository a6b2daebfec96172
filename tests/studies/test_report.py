"""Figures and the self-contained HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from studies.analysis.summary import analyze
from studies.formats import read_imrmc
from studies.report import TITLES, build_figures, write_report
from tests.studies.test_summary import make_study


@pytest.fixture(scope="module")
def study_and_summary():
    study = make_study(seed=4, learn=0.01)
    return study, analyze(study, n_boot=50)


def test_build_figures_full_study(study_and_summary) -> None:
    study, summary = study_and_summary
    figs = build_figures(summary=summary, ratings=study)
    assert list(figs) == ["accuracy", "auc", "roc", "likert", "learning", "stratum:organ"]
    assert TITLES["accuracy"] == figs["accuracy"].layout.title.text
    acc = figs["accuracy"].data[0]
    pooled = summary["binary"]["pooled"]["accuracy"]
    assert list(acc.x) == ["R0", "R1", "R2", "R3", "pooled"] and acc.y[-1] == pooled["value"]
    assert acc.error_y.arrayminus[-1] == pytest.approx(pooled["value"] - pooled["ci_low"])
    roc = figs["roc"].data
    assert len(roc) == 4 + 1 and roc[0].x[0] == 0 and roc[0].y[-1] == 1  # 4 readers + chance line
    real, synth = figs["likert"].data
    assert sum(int(t) for t in real.text) == summary["likert"]["pooled"]["n_real"]
    assert sum(real.y) == pytest.approx(1.0)
    assert figs["stratum:organ"].layout.title.text == "Results by organ"


def test_write_report(study_and_summary, tmp_path: Path) -> None:
    study, summary = study_and_summary
    paths = write_report(summary=summary, ratings=study, out_dir=tmp_path / "out")
    assert set(paths) == {"summary", "report"} and all(p.is_file() for p in paths.values())
    assert json.loads(paths["summary"].read_text()) == summary
    page = paths["report"].read_text()
    for title in list(TITLES.values()) + ["Results by organ"]:
        assert title in page, title
    # plotly.js is embedded exactly once and nothing is fetched from the network.
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert not re.search(r"<script[^>]+src=", page)
    assert page.count('class="plotly-graph-div"') == 6
    assert "pooled accuracy" in page


def test_report_for_scores_only(shared_data: Path, tmp_path: Path) -> None:
    ratings = read_imrmc(shared_data / "mrmc" / "VanDyke.imrmc")
    summary = analyze(ratings, n_boot=0)
    figs = build_figures(summary=summary, ratings=ratings)
    assert list(figs) == ["auc", "roc"]
    assert len(figs["roc"].data) == 2 * 5 + 1
    page = write_report(summary=summary, ratings=ratings, out_dir=tmp_path)["report"].read_text()
    assert "no binary calls" in page and TITLES["auc"] in page


def test_rejects_non_summary(study_and_summary) -> None:
    with pytest.raises(ValueError, match="lacks 'settings'"):
        build_figures(summary={}, ratings=study_and_summary[0])
