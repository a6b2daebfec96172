"""Reader page logic against a real SQLite study: authorisation, ordering, telemetry, blinding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from reviewer_app import study_handlers as h
from reviewer_app import study_view as v
from reviewer_app.study_backend import render_stimulus
from reviewer_app.study_reader import Shown
from studies import crud
from studies.design import StudyDesign
from studies.stimuli import PNG_CHUNKS, load_image, load_volume, png_chunks
from tests.reviewer_app.study_support import (
    add_reader,
    create_study,
    ct_crops,
    write_ct_manifest,
    write_he_manifest,
)

ANSWER = {"call": "synthetic", "confidence": 2, "likert": 3, "comment": ""}


@pytest.fixture
def he(shared_data, tmp_path):
    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=8, n_training=2)
    backend, study_id = create_study(tmp_path / "s.sqlite", manifest,
                                     design=StudyDesign(seed=1, n_position_blocks=2, n_duplicates=1,
                                                        duplicate_min_gap=2))
    return backend, study_id


def started(backend, token):
    state, _ = h.open_link(backend, h.ReaderState(), token)
    return h.start(backend, state)


def answer(backend, state, **changes):
    """Submit from the screen the state describes (the browser echoes that position)."""
    a = {**ANSWER, **changes}
    return h.submit(backend, state, state.position, a["call"], a["confidence"], a["likert"], a["comment"])


def rating_rows(backend, study_id):
    with backend.session() as session:
        return crud.export_rows(session=session, study_id=study_id)


def test_invalid_token_shows_only_a_notice(he):
    backend, _ = he
    for token in ("", "not-a-token", None):
        state, out = h.open_link(backend, h.ReaderState(), token)
        assert state.token == "" and out["notice"] == h.INVALID_LINK
        assert out["case_panel"] == {"visible": False} and "image" not in out
    with pytest.raises(InputError, match="link is not valid"):
        h.start(backend, h.ReaderState(token="forged"))


def test_training_feedback_then_every_case_once_then_done(he):
    backend, study_id = he
    token = add_reader(backend, study_id)
    state, out = h.open_link(backend, h.ReaderState(), token)
    assert out["start"] == "Start (11 cases)" and out["token_in"] == ""  # the token leaves the browser's box
    state, out = h.start(backend, state)
    assert "Training case" in out["progress"] and "Case 1 of 11" in out["progress"]
    with pytest.raises(InputError, match="real or synthetic"):
        h.submit(backend, state, out["position"], None, 2, 3, "")
    with pytest.raises(InputError, match="Rate the realism"):
        h.submit(backend, state, out["position"], "real", 2, None, "")
    shown = []
    for _ in range(11):
        shown.append(state.public_id)
        state, out = answer(backend, state)
        if state.feedback:  # training: the truth, then "Next case"
            with backend.session() as session:
                truth = {c.public_id: c.truth for c in crud.list_cases(session=session, study_id=study_id)}
            assert f"This image is **{truth[shown[-1]]}**" in out["feedback"]["value"]
            assert out["next"] == {"visible": True} and out["call"]["interactive"] is False
            state, out = h.next_case(backend, state)
    assert out["notice"] == h.DONE and state.public_id is None
    rows = rating_rows(backend, study_id)
    assert [r["case"] for r in rows] == shown and len(set(shown)) == 11
    assert [r["position"] for r in rows] == list(range(11))
    assert all(r["shown_at"] and r["seconds"] >= 0 for r in rows)
    assert sum(r["is_training"] for r in rows) == 2 and sum(r["is_duplicate"] for r in rows) == 1


def test_double_and_stale_submits_store_nothing(he):
    backend, study_id = he
    state, out = started(backend, add_reader(backend, study_id))
    first_position = out["position"]
    state, out = answer(backend, state)
    state, out = h.next_case(backend, state)
    # a second click that was sent while the first case was on screen
    same, nothing = h.submit(backend, state, first_position, "real", 1, 1, "late")
    assert nothing == {} and same == state
    assert len(rating_rows(backend, study_id)) == 1
    assert rating_rows(backend, study_id)[0]["call"] == "synthetic"
    # submitting during the training feedback is ignored too
    state, out = answer(backend, state)
    assert state.feedback and h.submit(backend, state, state.position, "real", 1, 1, "")[1] == {}
    assert len(rating_rows(backend, study_id)) == 2


def test_a_case_outside_the_readers_sequence_is_refused(shared_data, tmp_path):
    # A hidden synthetic share gives each reader a different subset of the cases.
    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=12)
    backend, study_id = create_study(tmp_path / "s.sqlite", manifest, design=StudyDesign(
        seed=2, n_position_blocks=1, synthetic_fraction_range=(0.2, 0.8)))
    token_a, token_b = add_reader(backend, study_id, "A"), add_reader(backend, study_id, "B")
    with backend.session() as session:
        a, b = (crud.reader_by_token(session=session, token=t).id for t in (token_a, token_b))

        def has(reader_id, case):
            try:
                crud.case_for_reader(session=session, reader_id=reader_id, public_id=case.public_id)
                return True
            except crud.NotAssignedError:
                return False

        only_a = [c.public_id for c in crud.list_cases(session=session, study_id=study_id) if has(a, c) and not has(b, c)]
    assert only_a, "the design should give A a case that B does not read"
    state_b, _ = started(backend, token_b)
    # B's server-side state pointed at A's case (never possible through the page; checked anyway)
    forged = replace(state_b, public_id=only_a[0])
    for event in (lambda: answer(backend, forged), lambda: v.set_zoom(backend, forged, 2),
                  lambda: v.click(backend, replace(forged, kind="image2d"), 1, 1)):
        with pytest.raises(InputError, match="not on your reading list"):
            event()
    assert rating_rows(backend, study_id) == []


def test_reload_resumes_at_the_next_unanswered_case(he):
    backend, study_id = he
    token = add_reader(backend, study_id)
    state, _ = started(backend, token)
    for _ in range(3):
        state, _ = answer(backend, state)
        if state.feedback:
            state, _ = h.next_case(backend, state)
    expected = state.public_id
    # a new page load: empty server-side state, the same link
    state2, out2 = h.open_link(backend, h.ReaderState(), token)
    assert out2["start"] == "Continue with case 4 of 11"
    state2, out2 = h.start(backend, state2)
    assert state2.public_id == expected and out2["position"] == 3


def test_locked_study_takes_no_answers(he):
    backend, study_id = he
    token = add_reader(backend, study_id)
    state, _ = started(backend, token)
    with backend.session() as session:
        crud.lock_study(session=session, study_id=study_id)
    with pytest.raises(InputError, match="study is closed"):
        answer(backend, state)
    assert h.open_link(backend, h.ReaderState(), token)[1]["notice"] == h.CLOSED


def test_changes_only_where_the_study_allows_them(shared_data, tmp_path):
    manifest = write_he_manifest(tmp_path / "data", shared_data, n_main=6)
    for allow in (False, True):
        backend, study_id = create_study(tmp_path / f"s{allow}.sqlite", manifest, allow_changes=allow)
        state, out = started(backend, add_reader(backend, study_id))
        state, out = answer(backend, state, call="real")
        assert out["back"] == {"visible": allow}
        if not allow:
            with pytest.raises(InputError, match="cannot be changed"):
                h.back(backend, state)
            continue
        state, out = h.back(backend, state)
        assert out["position"] == 0 and out["call"]["value"] == "real"
        state, out = answer(backend, state, call="synthetic")
        assert out["position"] == 1  # back to the next unanswered case
        (row,) = rating_rows(backend, study_id)
        assert row["call"] == "synthetic" and row["revision"] == 1


def test_2d_zoom_and_click_serve_the_crop(he):
    backend, study_id = he
    state, out = started(backend, add_reader(backend, study_id))
    full = load_image(backend.media_dir / f"{state.public_id}.png")  # (64, 64, 3)
    np.testing.assert_array_equal(out["image"].pixels, full)
    state, out = v.set_zoom(backend, state, 2)
    np.testing.assert_array_equal(out["image"].pixels, np.repeat(np.repeat(full[16:48, 16:48], 2, 0), 2, 1))
    state, out = v.click(backend, state, 0, 0)  # top-left corner of the 2x view (16, 16): 4x around it
    assert state.zoom == 4 and out["zoom"] == 4
    np.testing.assert_array_equal(out["image"].pixels, np.repeat(np.repeat(full[8:24, 8:24], 4, 0), 4, 1))
    state, out = v.zoom_step(backend, state, -1)
    assert state.zoom == 2 and state.center == (0.25, 0.25)


def test_volume_views_and_telemetry_reach_the_rating(shared_data, tmp_path):
    manifest = write_ct_manifest(tmp_path / "data", ct_crops(shared_data, 6))
    backend, study_id = create_study(tmp_path / "ct.sqlite", manifest)
    state, out = started(backend, add_reader(backend, study_id))
    volume = load_volume(backend.media_dir / f"{state.public_id}.npy")  # (8, 48, 48) int16
    assert state.slice == 4 and state.preset == "Soft tissue"
    np.testing.assert_array_equal(out["image"].pixels, render_stimulus(volume, kind="volume", index=4))
    state, _ = v.move(backend, state, "up")
    state, _ = v.move(backend, state, "up")
    state, out = v.set_preset(backend, state, 2)  # key 2 = the study's second preset
    assert out["preset"] == "Lung" and state.width == 1500
    np.testing.assert_array_equal(out["image"].pixels, render_stimulus(volume, kind="volume", index=6, width=1500,
                                                                       level=-600))
    state, out = v.set_window(backend, state, 300, 50)
    state, out = v.move(backend, state, "end")
    assert out["slice"] == {"value": 7, "maximum": 7} and out["slice_text"] == "Slice 8 of 8"
    state, out = answer(backend, state)
    with backend.session() as session:
        (rating,) = crud.list_ratings(session=session, study_id=study_id)
    assert rating.slices_visited == [4, 5, 6, 7]
    assert rating.windows_used == ["Soft tissue", "Lung", {"width": 300.0, "level": 50.0}]


def test_study_image_urls_are_salted_per_case_and_png_is_bare(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    from reviewer_app.study_image import StudyImage

    image = StudyImage(format="png")
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    a = image.postprocess(Shown(pixels, "a" * 32))
    a_again = image.postprocess(Shown(pixels.copy(), "a" * 32))
    duplicate = image.postprocess(Shown(pixels, "b" * 32))
    assert a.path == a_again.path and a.path != duplicate.path
    assert a.orig_name == "view.png" and a.path.endswith("/view.png") and "a" * 32 not in a.path
    data = Path(a.path).read_bytes()
    assert Path(duplicate.path).read_bytes() == data
    assert {t for t, _ in png_chunks(data)} <= set(PNG_CHUNKS)
