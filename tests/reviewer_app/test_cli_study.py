"""``synthdx study ...`` end to end on real SQLite files, real H&E tiles and real CT crops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reviewer_app.cli import main
from reviewer_app.study_backend import default_media_dir, open_backend, resolve_study
from studies import crud, formats
from tests.reviewer_app.study_support import PASSWORD, ct_crops, write_ct_manifest, write_he_manifest

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def he_db(shared_data, tmp_path, capsys, monkeypatch):
    """A 2D study created through the CLI, password from the environment."""
    monkeypatch.setenv("SYNTHDX_OWNER_PASSWORD", PASSWORD)
    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=20, n_training=2)
    db = tmp_path / "runs" / "vtt.sqlite"
    code, out, err = run(capsys, "study", "create", "--db", str(db), "--manifest", str(manifest), "--name", "he-vtt",
                         "--image-size", "64", "64", "--blocks", "2", "--duplicates", "2", "--duplicate-gap", "4",
                         "--seed", "5", "--instructions", "Rate each tile.")
    assert code == 0, err
    assert "created study 1 'he-vtt' (image2d)" in out
    return db


def test_create_add_reader_simulate_export_analyze(he_db, tmp_path, capsys):
    media = default_media_dir(he_db)
    assert media == he_db.parent / "vtt-media"
    assert len(list(media.glob("*.png"))) == 22 + 2  # every case plus two hidden repeats, opaque names only
    assert all(len(p.stem) == 32 and "scan" not in p.name and "gen" not in p.name for p in media.iterdir())

    code, out, _ = run(capsys, "study", "add-reader", "--db", str(he_db), "--name", "Dr A", "--role", "pathologist",
                       "--years", "8", "--base-url", "https://vtt.example.org/")
    assert code == 0
    link = out.strip().splitlines()[-1]
    assert link.startswith("https://vtt.example.org/study#token=")
    backend = open_backend(he_db)
    with backend.session() as session:
        reader = crud.reader_by_token(session=session, token=link.split("#token=")[1])
        assert reader.display_name == "Dr A" and reader.years_experience == 8

    assert run(capsys, "study", "simulate", "--db", str(he_db), "--readers", "4", "--accuracy", "0.7",
               "--seed", "1")[0] == 0
    code, out, _ = run(capsys, "study", "status", "--db", str(he_db), "--json")
    info = json.loads(out)
    assert info["cases"] == {"main": 20, "training": 2, "catch": 0, "duplicates": 2}
    assert [r["answered"] for r in info["readers"]] == [0, 24, 24, 24, 24]  # Dr A has not started
    assert info["audit_chain"] == "intact"

    # exports, read back by studies.formats
    csv_path, imrmc_path, rows_path = tmp_path / "r.csv", tmp_path / "r.imrmc", tmp_path / "rows.csv"
    for fmt, path in (("csv", csv_path), ("imrmc", imrmc_path), ("rows", rows_path)):
        assert run(capsys, "study", "export", "--db", str(he_db), "--format", fmt, "--out", str(path))[0] == 0
    long = formats.read_long_csv(csv_path)
    assert len(long) == 4 * 24 and set(long.readers()) == {"sim-02", "sim-03", "sim-04", "sim-05"}
    assert int(long.is_training.sum()) == 8 and int(long.is_duplicate.sum()) == 8
    imrmc = formats.read_imrmc(imrmc_path)
    assert len(imrmc) == 4 * 20 and len(imrmc.cases()) == 20  # main analysis only
    with backend.session() as session:
        truth = {c.public_id: int(c.truth == "synthetic") for c in crud.list_cases(session=session, study_id=1)}
    assert all(truth[c] == t for c, t in imrmc.case_truth().items())
    assert rows_path.read_text().splitlines()[0].startswith("reader,role,years_experience,case,truth")

    # analysis from the database and from both files
    sources = {"db": ["--db", str(he_db)], "csv": ["--ratings", str(csv_path)], "imrmc": ["--ratings", str(imrmc_path)]}
    summaries = {}
    for key, source in sources.items():
        code, out, err = run(capsys, "study", "analyze", *source, "--out", str(tmp_path / key), "--n-boot", "50")
        assert code == 0, err
        summaries[key] = json.loads((tmp_path / key / "summary.json").read_text())
        assert summaries[key]["counts"]["readers"] == 4 and summaries[key]["counts"]["cases"] == 20
        assert "<html>" in (tmp_path / key / "report.html").read_text()[:200].lower()
    assert summaries["imrmc"]["binary"] is None  # an .imrmc file has scores only
    db_summary = summaries["db"]
    assert db_summary["settings"]["tost_margin"] == 0.05  # the study's pre-registered margin
    assert summaries["csv"]["binary"]["pooled"]["accuracy"] == db_summary["binary"]["pooled"]["accuracy"]
    assert 0.55 < db_summary["binary"]["pooled"]["accuracy"]["value"] < 0.85


def test_audit_passes_on_indistinguishable_and_fails_on_leaky(he_db, shared_data, tmp_path, capsys):
    code, out, _ = run(capsys, "study", "audit", "--db", str(he_db))
    assert code == 0, out
    assert "audit PASSED" in out and "PASS classifier" in out
    leaky = write_he_manifest(tmp_path / "leaky", shared_data, n_main=30, leaky=True, seed=4)
    assert run(capsys, "study", "create", "--db", str(he_db), "--manifest", str(leaky), "--name", "leaky",
               "--password", PASSWORD, "--image-size", "64", "64")[0] == 0
    code, out, err = run(capsys, "study", "audit", "--db", str(he_db))
    assert code == 2 and "holds 2 studies (1: he-vtt, 2: leaky)" in err  # ambiguous: which study?
    code, out, _ = run(capsys, "study", "audit", "--db", str(he_db), "--study", "leaky")
    assert code == 3
    assert "FAIL classifier" in out and "audit FAILED" in out


def test_volume_study_audit_renders_slices_as_served(shared_data, tmp_path, capsys):
    crops = ct_crops(shared_data, 24)
    db = tmp_path / "ct.sqlite"
    for name, leaky in (("ct", False), ("ct-leaky", True)):
        manifest = write_ct_manifest(tmp_path / name, crops, leaky=leaky, seed=2)
        assert run(capsys, "study", "create", "--db", str(db), "--manifest", str(manifest), "--name", name,
                   "--password", PASSWORD, "--volume-shape", "8", "48", "48")[0] == 0
    code, out, _ = run(capsys, "study", "audit", "--db", str(db), "--study", "1")
    assert code == 0 and "one format across 216 files" in out  # 24 volumes x 8 served slices + 24 arrays
    code, out, _ = run(capsys, "study", "audit", "--db", str(db), "--study", "ct-leaky")
    assert code == 3 and "FAIL classifier" in out


def test_bad_manifest_is_one_line_and_leaves_nothing(shared_data, tmp_path, capsys):
    manifest = write_he_manifest(tmp_path, shared_data, n_main=4)
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3].replace(",real,", ",REAL,").replace(",synthetic,", ",fake,")
    manifest.write_text("\n".join(lines) + "\n")
    db = tmp_path / "s.sqlite"
    proc = subprocess.run([sys.executable, "-m", "reviewer_app.cli", "study", "create", "--db", str(db),
                           "--manifest", str(manifest), "--name", "x", "--password", PASSWORD],
                          check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cases.csv:4: truth must be 'real' or 'synthetic'" in proc.stderr
    assert not (tmp_path / "s-media").exists() or not any((tmp_path / "s-media").iterdir())


def test_password_rules(shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SYNTHDX_OWNER_PASSWORD", raising=False)
    manifest = write_he_manifest(tmp_path, shared_data, n_main=4)
    db = tmp_path / "p.sqlite"
    base = ["study", "create", "--db", str(db), "--manifest", str(manifest), "--name", "p"]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, _, err = run(capsys, *base)
    assert code == 2 and "no owner password" in err
    code, _, err = run(capsys, *base, "--password", "short")
    assert code == 2 and "at least 8 characters" in err
    assert run(capsys, *base, "--password", PASSWORD)[0] == 0
    with open_backend(db).session() as session:
        study = resolve_study(session, "p")
        assert crud.verify_owner_password(session=session, study_id=study.id, password=PASSWORD)
    code, _, err = run(capsys, *base, "--password", PASSWORD)
    assert code == 2 and "exists already" in err


def test_missing_database_and_unknown_study(tmp_path, capsys):
    code, _, err = run(capsys, "study", "status", "--db", str(tmp_path / "none.sqlite"))
    assert code == 2 and "not found" in err
    assert not (tmp_path / "none.sqlite").exists()
