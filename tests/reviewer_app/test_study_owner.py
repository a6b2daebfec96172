"""Owner page logic on a real SQLite study: the password on every action, links, lock, audit,
exports, analysis figures, and creating a study from an uploaded manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import InputError
from reviewer_app import owner_handlers as o
from studies import crud, formats
from studies.simulate import simulate
from tests.reviewer_app.study_support import PASSWORD, create_study, write_he_manifest


@pytest.fixture
def opened(shared_data, tmp_path):
    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=20)
    backend, study_id = create_study(tmp_path / "s.sqlite", manifest, name="he-vtt")
    state, out = o.open_study(backend, o.OwnerState(), "he-vtt", PASSWORD)
    assert state.study_id == study_id and out["study_panel"] == {"visible": True}
    return backend, study_id, state


def test_wrong_name_or_password_opens_nothing_and_every_action_rechecks(opened):
    backend, study_id, state = opened
    for name, password in (("he-vtt", "not the password"), ("no-such-study", PASSWORD), ("he-vtt", "")):
        bad, out = o.open_study(backend, o.OwnerState(), name, password)
        assert bad.study_id is None and out["status"] == o.WRONG and out["study_panel"] == {"visible": False}
    actions = [lambda p: o.refresh(backend, state, p), lambda p: o.audit(backend, state, p),
               lambda p: o.exports(backend, state, p), lambda p: o.analysis(backend, state, p),
               lambda p: o.lock(backend, state, p, True),
               lambda p: o.add_reader(backend, state, p, "Dr X", "other", 3, "http://h")]
    for action in actions:
        with pytest.raises(InputError, match="Wrong study name or password"):
            action("guess-guess")
    with backend.session() as session:
        assert crud.reader_progress(session=session, study_id=study_id) == []
        assert not crud.get_study(session=session, study_id=study_id).locked
    with pytest.raises(InputError, match="Open a study first"):
        o.refresh(backend, o.OwnerState(), PASSWORD)


def test_readers_links_progress_and_lock(opened):
    backend, _, state = opened
    _, out = o.add_reader(backend, state, PASSWORD, "Dr B", "radiologist", 12, "https://vtt.example.org/")
    assert out["link"].startswith("https://vtt.example.org/study#token=")
    with backend.session() as session:
        assert crud.reader_by_token(session=session, token=out["link"].split("#token=")[1]).display_name == "Dr B"
    assert out["progress_table"]["value"] == [["Dr B", 0, 20, ""]]
    with pytest.raises(InputError, match="Tick the box"):
        o.lock(backend, state, PASSWORD, False)
    _, out = o.lock(backend, state, PASSWORD, True)
    assert "**locked**" in out["overview"]
    with pytest.raises(InputError, match="locked"):
        o.add_reader(backend, state, PASSWORD, "Dr C", "other", 1, "https://vtt.example.org")


def test_audit_exports_and_analysis(opened):
    backend, study_id, state = opened
    _, out = o.audit(backend, state, PASSWORD)
    assert out["audit_report"].startswith("### Audit PASSED") and "**PASS** classifier" in out["audit_report"]
    with pytest.raises(InputError, match="no ratings yet"):
        o.exports(backend, state, PASSWORD)
    with backend.session() as session:
        simulate(session=session, study_id=study_id, readers=3, accuracy=0.75, seed=2)
    _, out = o.exports(backend, state, PASSWORD)
    files = {p.rsplit("/", 1)[1]: p for p in out["files"]}
    assert set(files) == {"ratings.csv", "ratings.rows.csv", "ratings.imrmc", "summary.json", "report.html"}
    assert len(formats.read_long_csv(files["ratings.csv"])) == 60
    assert len(formats.read_imrmc(files["ratings.imrmc"]).readers()) == 3
    assert json.loads(Path(files["summary.json"]).read_text())["counts"]["readers"] == 3
    _, out = o.analysis(backend, state, PASSWORD)
    for key in ("accuracy", "auc", "roc", "likert", "learning"):
        assert out[f"plot_{key}"]["visible"] and out[f"plot_{key}"]["value"].data, key
    assert out["plot_stratum0"]["visible"] and "site" in out["plot_stratum0"]["value"].layout.title.text
    assert not out["plot_stratum1"]["visible"]
    assert out["analysis_text"].startswith("3 readers, 60 ratings")


def test_create_from_an_uploaded_manifest_only_under_the_study_files_folder(shared_data, tmp_path):
    from reviewer_app.study_backend import open_backend

    root = tmp_path / "files"
    manifest = write_he_manifest(root, shared_data, n_main=10)
    upload = tmp_path / "upload" / "cases.csv"
    upload.parent.mkdir()
    shutil.copy(manifest, upload)
    backend = open_backend(tmp_path / "web.sqlite", create=True)
    # seed, blocks, duplicates, gap, fraction low/high, margin, allow changes, levels, instructions, grids
    form = {"seed": 1, "blocks": 2, "duplicates": 0, "gap": 10, "fraction_low": 0, "fraction_high": 0,
            "margin": 0.1, "allow_changes": False, "levels": 4, "instructions": "Look closely.", "image_size": 64,
            "volume_slices": 8, "volume_size": 32}
    with pytest.raises(InputError, match="--study-files"):
        o.create(backend, o.OwnerState(), None, str(upload), "web", PASSWORD, *form.values())
    state, out = o.create(backend, o.OwnerState(), root, str(upload), "web", PASSWORD, *form.values())
    assert "Created **web**" in out["status"] and "10 main" in out["overview"]
    with backend.session() as session:
        study = crud.get_study(session=session, study_id=state.study_id)
        assert (study.tost_margin, study.confidence_levels, study.instructions) == (0.1, 4, "Look closely.")
        assert crud.verify_owner_password(session=session, study_id=study.id, password=PASSWORD)
    escape = tmp_path / "upload" / "escape.csv"
    escape.write_text("path,truth\n../upload/cases.csv,real\n")
    with pytest.raises(InputError, match="leaves the manifest's folder"):
        o.create(backend, o.OwnerState(), root, str(escape), "web2", PASSWORD, *form.values())
