"""Study lifecycle through crud on real SQLite files: blinding, resume, idempotence, isolation, audit."""

from __future__ import annotations

import re
import sqlite3
import threading

import numpy as np
import pytest
from sqlmodel import Session, func, select

from studies import crud
from studies.db import init_db, make_engine
from studies.design import StudyDesign
from studies.models import Assignment, AuditEvent, Rating, Reader
from studies.stimuli import CaseInput
from tests.studies.study_factory import PASSWORD, add_readers, image_cases, new_study, rate_next


def _count(session, model) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def test_create_study_stores_blinded_stimuli(tmp_path):
    design = StudyDesign(seed=3, n_duplicates=2, duplicate_min_gap=4)
    engine, study_id, media = new_study(tmp_path, n_main=12, design=design, n_training=2, n_catch=1)
    with Session(engine) as session:
        cases = crud.list_cases(session=session, study_id=study_id)
        study = crud.get_study(session=session, study_id=study_id)
    assert len(cases) == 12 + 2 + 1 + 2
    files = sorted(p.name for p in media.iterdir())
    assert files == sorted(f"{c.public_id}.png" for c in cases)
    assert all(re.fullmatch(r"[0-9a-f]{32}\.png", f) for f in files)
    assert not any("patient" in f or "synthetic" in f or "real" in f for f in files)
    copies = [c for c in cases if c.duplicate_of]
    originals = {c.id: c for c in cases}
    assert len(copies) == 2
    for copy in copies:
        original = originals[copy.duplicate_of]
        assert copy.public_id != original.public_id and copy.file_sha256 == original.file_sha256
        copied = (media / f"{copy.public_id}.png").read_bytes()
        assert copied == (media / f"{original.public_id}.png").read_bytes()
    assert study.design["design"]["seed"] == 3 and study.design["stimulus"]["image_size"] == [32, 32]
    assert PASSWORD not in study.owner_password_hash and study.owner_password_hash.startswith("scrypt$")
    with Session(engine) as session:
        assert crud.verify_owner_password(session=session, study_id=study_id, password=PASSWORD)
        assert not crud.verify_owner_password(session=session, study_id=study_id, password=PASSWORD + "x")
        with pytest.raises(ValueError, match="exists already"):
            crud.create_study(session=session, name="vtt", cases=image_cases(4, seed=1),
                              design=StudyDesign(seed=1), owner_password=PASSWORD,
                              media_dir=tmp_path / "other")


def test_failed_create_leaves_no_files(tmp_path):
    engine = make_engine(tmp_path / "s.sqlite")
    init_db(engine)
    cases = image_cases(6, seed=2) + [CaseInput(array=np.zeros((40, 48, 3), np.float32), truth="real",
                                                kind="image2d")]
    with Session(engine) as session, pytest.raises(ValueError, match="uint8"):
        crud.create_study(session=session, name="broken", cases=cases,
                          design=StudyDesign(seed=1, n_position_blocks=2), owner_password=PASSWORD,
                          media_dir=tmp_path / "media")
    assert list((tmp_path / "media").iterdir()) == []
    with Session(engine) as session, pytest.raises(ValueError, match="at least 8"):
        crud.create_study(session=session, name="weak", cases=image_cases(6, seed=2),
                          design=StudyDesign(seed=1), owner_password="short", media_dir=tmp_path / "media")


def test_reader_tokens_are_hashed_and_resolve(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    (reader_id, token), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        stored = session.get(Reader, reader_id)
        assert token not in stored.token_hash and len(token) >= 32
        assert crud.reader_by_token(session=session, token=token).id == reader_id
        # Change the last character to one it is not (a fixed "A" equals it 1 time in 64).
        altered = token[:-1] + ("B" if token[-1] == "A" else "A")
        assert altered != token
        assert crud.reader_by_token(session=session, token=altered) is None
        with pytest.raises(ValueError, match="role"):
            crud.add_reader(session=session, study_id=study_id, display_name="x", role="surgeon",
                            years_experience=1)
        with pytest.raises(ValueError, match="reader 0"):
            crud.add_reader(session=session, study_id=study_id, display_name="reader 0", role="other",
                            years_experience=1)


def test_resume_gives_the_next_unanswered_case_in_the_frozen_order(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=16, n_training=2)
    (reader_id, token), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        order = [a.id for a in session.exec(select(Assignment).where(Assignment.reader_id == reader_id)
                                            .order_by(Assignment.position))]
    for _ in range(5):
        rate_next(engine, reader_id)
    engine.dispose()  # the server goes away
    reopened = make_engine(tmp_path / "study.sqlite")
    with Session(reopened) as session:
        reader = crud.reader_by_token(session=session, token=token)
        view = crud.next_case_for_reader(session=session, reader_id=reader.id)
        assert (view.position, view.assignment_id, view.total) == (5, order[5], 18)
        assert view.block == "main" and not view.answered and not hasattr(view, "truth")
    while rate_next(reopened, reader_id) is not None:
        pass
    with Session(reopened) as session:
        rated = [r.assignment_id for r in crud.list_ratings(session=session, study_id=study_id)]
        assert rated == order and crud.next_case_for_reader(session=session, reader_id=reader_id) is None


def test_resubmission_is_idempotent_and_changes_follow_the_study_rule(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    (reader_id, _), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        view = crud.next_case_for_reader(session=session, reader_id=reader_id)
        kw = dict(session=session, reader_id=reader_id, assignment_id=view.assignment_id)
        first = crud.submit_rating(**kw, call="synthetic", confidence=3, likert=2, comment="edges")
        again = crud.submit_rating(**kw, call="synthetic", confidence=3, likert=2, comment="edges")
        assert again.id == first.id and again.revision == 0
        with pytest.raises(crud.ChangeNotAllowedError):
            crud.submit_rating(**kw, call="real", confidence=3, likert=2, comment="edges")
    with Session(engine) as session:
        assert _count(session, Rating) == 1
        actions = [e.action for e in crud.audit_events(session=session, study_id=study_id)]
        assert actions.count("submit_rating") == 1
        assert session.get(Rating, first.id).call == "synthetic"


def test_changing_an_answer_when_allowed_is_audited(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8, allow_changes=True)
    (reader_id, _), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        view = crud.next_case_for_reader(session=session, reader_id=reader_id)
        kw = dict(session=session, reader_id=reader_id, assignment_id=view.assignment_id)
        first = crud.submit_rating(**kw, call="synthetic", confidence=1)
        changed = crud.submit_rating(**kw, call="real", confidence=3)
        assert changed.id == first.id and changed.revision == 1 and changed.call == "real"
        event = crud.audit_events(session=session, study_id=study_id)[-1]
        assert event.action == "change_rating" and event.payload["before"]["call"] == "synthetic"
        assert _count(session, Rating) == 1


def test_new_ratings_only_in_order_and_answers_validated(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    (reader_id, _), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        later = session.exec(select(Assignment).where(Assignment.reader_id == reader_id,
                                                      Assignment.position == 3)).one()
        with pytest.raises(crud.OutOfOrderError, match="position 3"):
            crud.submit_rating(session=session, reader_id=reader_id, assignment_id=later.id, call="real",
                               confidence=1)
        view = crud.next_case_for_reader(session=session, reader_id=reader_id)
        for bad in ({"call": "fake", "confidence": 1}, {"call": "real", "confidence": 4},
                    {"call": "real", "confidence": 1, "likert": 6}):
            with pytest.raises(ValueError):
                crud.submit_rating(session=session, reader_id=reader_id, assignment_id=view.assignment_id,
                                   **bad)
        assert _count(session, Rating) == 0


def test_readers_cannot_touch_each_others_cases(tmp_path):
    design = StudyDesign(seed=5, synthetic_fraction_range=(0.3, 0.7), n_position_blocks=2)
    engine, study_id, media = new_study(tmp_path, n_main=30, design=design, n_training=1)
    (a, _), (b, _) = add_readers(engine, study_id, 2)
    with Session(engine) as session:
        def public_ids(reader_id):
            assigned = {a.case_id for a in session.exec(select(Assignment)
                                                        .where(Assignment.reader_id == reader_id))}
            cases = crud.list_cases(session=session, study_id=study_id)
            views = [crud.case_for_reader(session=session, reader_id=reader_id, public_id=c.public_id)
                     for c in cases if c.id in assigned]
            return {v.public_id for v in views}
        only_a = public_ids(a) - public_ids(b)
        assert only_a, "jittered subsets should differ between the two readers"
        foreign = next(iter(only_a))
        with pytest.raises(crud.NotAssignedError):
            crud.case_for_reader(session=session, reader_id=b, public_id=foreign)
        with pytest.raises(crud.NotAssignedError):
            crud.stimulus_for_reader(session=session, reader_id=b, public_id=foreign, media_dir=media)
        path = crud.stimulus_for_reader(session=session, reader_id=a, public_id=foreign, media_dir=media)
        assert path.is_file()
        a_next = crud.next_case_for_reader(session=session, reader_id=a)
        for call in (crud.mark_shown, crud.record_telemetry, crud.training_feedback):
            with pytest.raises(crud.NotAssignedError):
                call(session=session, reader_id=b, assignment_id=a_next.assignment_id)
        with pytest.raises(crud.NotAssignedError):
            crud.submit_rating(session=session, reader_id=b, assignment_id=a_next.assignment_id, call="real",
                               confidence=1)
        assert _count(session, Rating) == 0


def test_telemetry_and_training_feedback(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8, n_training=2)
    (reader_id, _), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        view = crud.next_case_for_reader(session=session, reader_id=reader_id)
        assert view.block == "training"
        kw = dict(session=session, reader_id=reader_id, assignment_id=view.assignment_id)
        crud.mark_shown(**kw)
        crud.record_telemetry(**kw, windows=["Lung"])
        with pytest.raises(ValueError, match="slice index"):  # a 2D study has no slices
            crud.record_telemetry(**kw, slices=[0])
        with pytest.raises(ValueError, match="preset"):
            crud.record_telemetry(**kw, windows=["Sinus"])
        with pytest.raises(crud.NotAssignedError, match="unrated"):
            crud.training_feedback(**kw)
        rating = crud.submit_rating(**kw, call="real", confidence=2,
                                    windows=[{"width": 350, "level": 40}, "Lung"])
        assert rating.windows_used == ["Lung", {"width": 350.0, "level": 40.0}]
        assert rating.shown_at is not None and rating.submitted_at >= rating.shown_at
        truth = crud.training_feedback(**kw)
        case = session.exec(select(Assignment).where(Assignment.id == view.assignment_id)).one()
        cases = crud.list_cases(session=session, study_id=study_id)
        assert truth == next(c.truth for c in cases if c.id == case.case_id)


def test_locked_study_refuses_ratings_and_readers(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    (reader_id, _), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        crud.lock_study(session=session, study_id=study_id)
        view = crud.next_case_for_reader(session=session, reader_id=reader_id)
        with pytest.raises(crud.StudyLockedError):
            crud.submit_rating(session=session, reader_id=reader_id, assignment_id=view.assignment_id,
                               call="real", confidence=1)
        with pytest.raises(crud.StudyLockedError):
            crud.add_reader(session=session, study_id=study_id, display_name="late", role="other",
                            years_experience=0)


def test_audit_chain_detects_an_edited_event(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    (reader_id, _), = add_readers(engine, study_id, 1)
    rate_next(engine, reader_id)
    with Session(engine) as session:
        actions = [e.action for e in crud.audit_events(session=session)]
        assert actions == ["create_study", "add_reader", "show", "submit_rating"]
        assert crud.verify_audit_chain(session=session) == []
        last_id = session.exec(select(AuditEvent.id).order_by(AuditEvent.id.desc())).first()
    engine.dispose()
    with sqlite3.connect(tmp_path / "study.sqlite") as con:
        con.execute("UPDATE audit_event SET payload = json_set(payload, '$.call', 'synthetic') WHERE id = ?",
                    (last_id,))
    with Session(make_engine(tmp_path / "study.sqlite")) as session:
        problems = crud.verify_audit_chain(session=session)
    assert problems == [f"event {last_id}: content does not match its hash (edited)"]


def test_progress_export_and_ratings_for_analysis(tmp_path):
    design = StudyDesign(seed=3, n_duplicates=2, duplicate_min_gap=4, n_position_blocks=2)
    engine, study_id, _ = new_study(tmp_path, n_main=10, design=design, n_training=2, n_catch=1)
    (a, _), (b, _) = add_readers(engine, study_id, 2)
    while rate_next(engine, a, call="synthetic", confidence=3) is not None:
        pass
    for _ in range(4):
        rate_next(engine, b, call="real", confidence=1)
    with Session(engine) as session:
        progress = crud.reader_progress(session=session, study_id=study_id)
        assert [(p.answered, p.total, p.finished) for p in progress] == [(15, 15, True), (4, 15, False)]
        rows = crud.export_rows(session=session, study_id=study_id)
        ratings = crud.build_ratings(session=session, study_id=study_id)
    assert len(rows) == len(ratings) == 19
    assert {r["score"] for r in rows if r["reader"] == "reader 0"} == {6}  # "synthetic", confidence 3 of 3
    assert {r["score"] for r in rows if r["reader"] == "reader 1"} == {3}  # "real", confidence 1
    first = ratings.subset(ratings.reader == "reader 0")  # finished: every kind of presentation
    assert (first.is_training.sum(), first.is_catch.sum(), first.is_duplicate.sum()) == (2, 1, 2)
    assert len(first.main_analysis()) == 10 and set(first.main_analysis().modality) == {"vtt"}
    flagged = [r["is_training"] or r["is_catch"] or r["is_duplicate"] for r in rows]
    assert len(ratings.main_analysis()) == flagged.count(False)
    assert list(first.trial) == list(range(15))
    dup_rows = [r for r in rows if r["is_duplicate"]]
    assert all(r["duplicate_of"] in {x["case"] for x in rows if not x["is_duplicate"]} for r in dup_rows)
    assert set(ratings.strata) == {"organ"}


def test_concurrent_ratings_from_eight_threads_lose_nothing(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=12, n_training=1)
    readers = add_readers(engine, study_id, 8)
    errors: list[BaseException] = []

    def work(reader_id: int) -> None:
        try:
            while rate_next(engine, reader_id, call="synthetic") is not None:
                pass
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(rid,)) for rid, _ in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as session:
        assert _count(session, Rating) == 8 * 13
        assert all(p.finished for p in crud.reader_progress(session=session, study_id=study_id))
        assert crud.verify_audit_chain(session=session) == []


def test_double_clicks_from_eight_threads_store_one_rating(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    (reader_id, _), = add_readers(engine, study_id, 1)
    with Session(engine) as session:
        assignment_id = crud.next_case_for_reader(session=session, reader_id=reader_id).assignment_id
    ids, errors, barrier = [], [], threading.Barrier(8)

    def click() -> None:
        try:
            barrier.wait()
            with Session(engine) as session:
                rating = crud.submit_rating(session=session, reader_id=reader_id, assignment_id=assignment_id,
                                            call="real", confidence=2)
                ids.append(rating.id)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(ids) == 8 and len(set(ids)) == 1
    with Session(engine) as session:
        assert _count(session, Rating) == 1
