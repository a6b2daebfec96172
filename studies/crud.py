"""All database access of a reader study: keyword-only functions on an injected session.

Use one short session per request or UI event (``with Session(engine) as session:``):
on SQLite every transaction starts with ``BEGIN IMMEDIATE`` (see :mod:`studies.db`), so
an open session holds the write lock. Functions that change data commit before they
return and append an :class:`~studies.models.AuditEvent` in the same transaction.
Viewing telemetry (:func:`record_telemetry`) is not audited: it is observation, not a
change of the study; the rating's audit event carries the final telemetry.

Reader-facing functions take the reader id (resolved from the link token by
:func:`reader_by_token`) and raise :class:`NotAssignedError` for a case that is not in
that reader's sequence. They return :class:`~studies.models.CaseView`, never truth.
"""

from __future__ import annotations

import hmac
import math
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from studies import design as design_mod
from studies.export import ordinal_score, ratings_from_rows
from studies.models import (ROLES, Assignment, AuditEvent, Case, CaseView, Rating, Reader, ReaderProgress,
                            Study, utcnow)
from studies.ratings import Ratings
from studies.security import (GENESIS_HASH, event_hash, hash_password, hash_token, new_token,
                              verify_password)
from studies.stimuli import CaseInput, StimulusSpec, file_sha256, new_public_id, stimulus_path, write_stimulus
from studies.validation import (ChangeNotAllowedError, NotAssignedError, OutOfOrderError, StudyLockedError,
                                check_answer, check_study_options, merge_telemetry)

# The errors come from studies.validation; callers may catch them as crud.NotAssignedError etc.


# ----------------------------------------------------------------------------- internals
def _append_event(session: Session, *, actor: str, action: str, study_id: int | None, payload: dict) -> None:
    last = session.exec(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).first()
    prev = last or GENESIS_HASH
    ts = utcnow()
    digest = event_hash(prev_hash=prev, ts=ts, actor=actor, action=action, study_id=study_id, payload=payload)
    session.add(AuditEvent(ts=ts, actor=actor, action=action, study_id=study_id, payload=payload,
                           prev_hash=prev, hash=digest))


def get_study(*, session: Session, study_id: int) -> Study:
    """The study row (owner settings; no truth). Raises LookupError when missing."""
    study = session.get(Study, study_id)
    if study is None:
        raise LookupError(f"no study with id {study_id}")
    return study


def _own_assignment(session: Session, reader_id: int, assignment_id: int) -> Assignment:
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.reader_id != reader_id:
        raise NotAssignedError(f"assignment {assignment_id} is not assigned to reader {reader_id}")
    return assignment


def _view(session: Session, assignment: Assignment, *, answered: bool | None = None) -> CaseView:
    case = session.get(Case, assignment.case_id)
    total = session.exec(select(func.count()).select_from(Assignment)
                         .where(Assignment.reader_id == assignment.reader_id)).one()
    if answered is None:
        rating_id = session.exec(select(Rating.id).where(Rating.assignment_id == assignment.id)).first()
        answered = rating_id is not None
    return CaseView(assignment_id=assignment.id, public_id=case.public_id, kind=case.kind,
                    block=assignment.block, position=assignment.position, total=total, answered=answered)


def _next_assignment(session: Session, reader_id: int) -> Assignment | None:
    return session.exec(
        select(Assignment).outerjoin(Rating, Rating.assignment_id == Assignment.id)
        .where(Assignment.reader_id == reader_id, Rating.id.is_(None))
        .order_by(Assignment.position).limit(1)).first()


def _merge_telemetry(study: Study, assignment: Assignment, slices: Sequence[int], windows: Sequence) -> None:
    n_slices = study.design["stimulus"]["volume_shape"][0] if study.kind == "volume" else 0
    assignment.slices_visited, assignment.windows_used = merge_telemetry(
        slices_before=assignment.slices_visited, windows_before=assignment.windows_used, slices=slices,
        windows=windows, n_slices=n_slices, presets=study.window_presets)


# ----------------------------------------------------------------------------- owner side
def create_study(*, session: Session, name: str, cases: Sequence[CaseInput], design: design_mod.StudyDesign,
                 owner_password: str, media_dir: str | Path, spec: StimulusSpec | None = None,
                 tost_margin: float = 0.05, allow_changes: bool = False, instructions: str = "",
                 confidence_levels: int = 3, window_presets: Mapping[str, Mapping[str, float]] | None = None,
                 actor: str = "owner") -> Study:
    """Create a study: standardise and store the stimuli, then the study and case rows.

    Stimulus files are written first and removed again if the database write fails.
    Duplicate originals are chosen here (study-wide) and get their own copy.

    Args:
        session: database session.
        name: unique study name.
        cases: decoded cases, all of one kind.
        design: ordering options and seed.
        owner_password: the study owner's password (>= 8 characters), stored as scrypt.
        media_dir: the study's media directory; stimuli are named ``<public id>.png|.npy``.
        spec: stimulus grid; ``StimulusSpec()`` when None.
        tost_margin: pre-registered equivalence margin around 0.5, in (0, 0.5).
        allow_changes: whether a reader may change a submitted answer.
        instructions: text shown to readers.
        confidence_levels: confidence is asked on 1..confidence_levels (2-7).
        window_presets: name -> ``{"width", "level"}`` HU; OHIF's when None
            (:data:`studies.validation.DEFAULT_WINDOW_PRESETS`).
        actor: who creates the study, for the audit log.
    """
    spec = spec or StimulusSpec()
    # 1. Check inputs.
    presets = check_study_options(name=name, tost_margin=tost_margin, confidence_levels=confidence_levels,
                                  window_presets=window_presets)
    password_hash = hash_password(owner_password)
    if session.exec(select(Study.id).where(Study.name == name)).first() is not None:
        raise ValueError(f"a study named {name!r} exists already")
    kinds = {c.kind for c in cases}
    if len(kinds) != 1:
        raise ValueError(f"all cases of a study must have one kind, got {sorted(kinds) or 'no cases'}")
    main = [c for c in cases if not (c.training or c.catch)]
    n_syn = sum(c.truth == "synthetic" for c in main)
    design_mod.check_pool(design, n_real=len(main) - n_syn, n_synthetic=n_syn,
                          n_catch=sum(c.catch for c in cases))

    # 2. Write stimuli under fresh opaque ids.
    written: list[Path] = []
    try:
        public_ids = [new_public_id() for _ in cases]
        for case, pid in zip(cases, public_ids):
            written.append(write_stimulus(case, spec=spec, media_dir=media_dir, public_id=pid))

        # 3. Study and case rows.
        study = Study(name=name, kind=kinds.pop(), seed=design.seed, tost_margin=tost_margin,
                      design={"design": design.to_json(), "stimulus": spec.to_json()},
                      owner_password_hash=password_hash, allow_changes=allow_changes,
                      instructions=instructions, confidence_levels=confidence_levels, window_presets=presets)
        session.add(study)
        session.flush()
        rows = []
        for case, pid, path in zip(cases, public_ids, written):
            provenance = {**case.provenance, "_stimulus": {"input_shape": list(case.array.shape),
                                                           "input_dtype": str(case.array.dtype)}}
            rows.append(Case(study_id=study.id, public_id=pid, truth=case.truth, kind=case.kind,
                             strata=dict(case.strata), provenance=provenance, file_sha256=file_sha256(path),
                             is_training=case.training, is_catch=case.catch))
        session.add_all(rows)
        session.flush()

        # 4. Hidden duplicate copies: own id, own file, same content.
        main_rows = [r for r in rows if not (r.is_training or r.is_catch)]
        for original in design_mod.choose_duplicates([r.id for r in main_rows], n=design.n_duplicates,
                                                     seed=design.seed):
            src = session.get(Case, original)
            pid = new_public_id()
            dest = stimulus_path(media_dir, pid, src.kind)
            shutil.copyfile(stimulus_path(media_dir, src.public_id, src.kind), dest)
            written.append(dest)
            session.add(Case(study_id=study.id, public_id=pid, truth=src.truth, kind=src.kind,
                             strata=src.strata, provenance=src.provenance, file_sha256=src.file_sha256,
                             duplicate_of=src.id))
        _append_event(session, actor=actor, action="create_study", study_id=study.id, payload={
            "name": name, "design": study.design, "n_cases": len(cases), "n_main_synthetic": n_syn,
            "n_main_real": len(main) - n_syn, "allow_changes": allow_changes, "tost_margin": tost_margin})
        session.commit()
    except BaseException:
        session.rollback()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    session.refresh(study)
    return study


def verify_owner_password(*, session: Session, study_id: int, password: str) -> bool:
    """Whether ``password`` is the owner password of the study (scrypt, constant-time compare)."""
    return verify_password(password, get_study(session=session, study_id=study_id).owner_password_hash)


def add_reader(*, session: Session, study_id: int, display_name: str, role: str, years_experience: float,
               actor: str = "owner") -> tuple[Reader, str]:
    """Add a reader and freeze their reading order.

    Args:
        session: database session.
        study_id: the study.
        display_name: unique within the study.
        role: "radiologist", "pathologist" or "other".
        years_experience: >= 0.
        actor: who adds the reader, for the audit log.

    Returns:
        The reader and the plain link token. The token is not stored and cannot be shown again.
    """
    study = get_study(session=session, study_id=study_id)
    if study.locked:
        raise StudyLockedError(f"study {study.name!r} is locked; no readers can be added")
    display_name = display_name.strip()
    if not display_name:
        raise ValueError("reader display name must not be empty")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not (math.isfinite(years_experience) and years_experience >= 0):
        raise ValueError(f"years_experience must be >= 0, got {years_experience}")
    if session.exec(select(Reader.id).where(Reader.study_id == study_id,
                                            Reader.display_name == display_name)).first() is not None:
        raise ValueError(f"study {study.name!r} has a reader named {display_name!r} already")
    index = session.exec(select(func.count()).select_from(Reader).where(Reader.study_id == study_id)).one()
    token = new_token()
    reader = Reader(study_id=study_id, reader_index=index, display_name=display_name, role=role,
                    years_experience=float(years_experience), token_hash=hash_token(token))
    session.add(reader)
    session.flush()

    cases = session.exec(select(Case).where(Case.study_id == study_id).order_by(Case.id)).all()
    main = [c for c in cases if not (c.is_training or c.is_catch or c.duplicate_of)]
    try:
        slots = design_mod.reader_sequence(
            design_mod.StudyDesign.from_json(study.design["design"]), reader_index=index,
            training_ids=[c.id for c in cases if c.is_training], main_ids=[c.id for c in main],
            synthetic=[c.truth == "synthetic" for c in main], catch_ids=[c.id for c in cases if c.is_catch],
            duplicates={c.id: c.duplicate_of for c in cases if c.duplicate_of})
    except ValueError:
        session.rollback()  # no half-added reader left pending in the caller's session
        raise
    copies = {c.id for c in cases if c.duplicate_of}
    session.add_all([Assignment(study_id=study_id, reader_id=reader.id, case_id=s.case_id, position=i,
                                block=s.block, is_duplicate=s.case_id in copies)
                     for i, s in enumerate(slots)])
    _append_event(session, actor=actor, action="add_reader", study_id=study_id, payload={
        "reader_id": reader.id, "display_name": display_name, "role": role,
        "years_experience": float(years_experience), "reader_index": index, "n_assignments": len(slots)})
    session.commit()
    session.refresh(reader)
    return reader, token


def lock_study(*, session: Session, study_id: int, actor: str = "owner") -> Study:
    """Lock a study: ratings and new readers are refused from now on."""
    study = get_study(session=session, study_id=study_id)
    if not study.locked:
        study.locked, study.locked_at = True, utcnow()
        _append_event(session, actor=actor, action="lock_study", study_id=study_id, payload={})
        session.commit()
        session.refresh(study)
    return study


def reader_progress(*, session: Session, study_id: int) -> list[ReaderProgress]:
    """Answered and total assignments of every reader, in the order readers were added."""
    out = []
    readers = session.exec(select(Reader).where(Reader.study_id == study_id)
                           .order_by(Reader.reader_index)).all()
    for reader in readers:
        total = session.exec(select(func.count()).select_from(Assignment)
                             .where(Assignment.reader_id == reader.id)).one()
        answered = session.exec(select(func.count()).select_from(Rating)
                                .where(Rating.reader_id == reader.id)).one()
        out.append(ReaderProgress(reader_id=reader.id, display_name=reader.display_name, answered=answered,
                                  total=total))
    return out


def list_cases(*, session: Session, study_id: int) -> list[Case]:
    """Every case of a study with truth and provenance (owner side only), by id."""
    return list(session.exec(select(Case).where(Case.study_id == study_id).order_by(Case.id)).all())


def list_ratings(*, session: Session, study_id: int) -> list[Rating]:
    """Every rating of a study, by reader then position."""
    return list(session.exec(
        select(Rating).join(Assignment, Assignment.id == Rating.assignment_id)
        .join(Reader, Reader.id == Rating.reader_id)
        .where(Rating.study_id == study_id).order_by(Reader.reader_index, Assignment.position)).all())


def export_rows(*, session: Session, study_id: int) -> list[dict]:
    """One flat dict per rating, owner side (truth included), by reader then position.

    Keys are :data:`studies.export.ROW_COLUMNS`; ``case`` and ``duplicate_of`` are public
    ids, ``score`` the 1..2K ordinal of :func:`studies.export.ordinal_score`, ``seconds``
    the time from first showing to submission (None if never marked shown).
    """
    study = get_study(session=session, study_id=study_id)
    public = {c.id: c.public_id for c in list_cases(session=session, study_id=study_id)}
    query = (select(Rating, Assignment, Case, Reader).join(Assignment, Assignment.id == Rating.assignment_id)
             .join(Case, Case.id == Rating.case_id).join(Reader, Reader.id == Rating.reader_id)
             .where(Rating.study_id == study_id).order_by(Reader.reader_index, Assignment.position))
    rows = []
    for rating, assignment, case, reader in session.exec(query):
        seconds = None if rating.shown_at is None else (rating.submitted_at - rating.shown_at).total_seconds()
        rows.append({
            "reader": reader.display_name, "role": reader.role, "years_experience": reader.years_experience,
            "case": case.public_id, "truth": case.truth, "block": assignment.block,
            "position": assignment.position, "is_training": case.is_training, "is_catch": case.is_catch,
            "is_duplicate": assignment.is_duplicate, "duplicate_of": public.get(case.duplicate_of),
            "call": rating.call, "confidence": rating.confidence,
            "score": ordinal_score(rating.call, rating.confidence, study.confidence_levels),
            "likert": rating.likert, "comment": rating.comment,
            "shown_at": None if rating.shown_at is None else rating.shown_at.isoformat(),
            "submitted_at": rating.submitted_at.isoformat(), "seconds": seconds, "revision": rating.revision,
            "n_slices_visited": len(rating.slices_visited), "windows_used": rating.windows_used,
            "strata": dict(case.strata)})
    return rows


def build_ratings(*, session: Session, study_id: int, modality: str | None = None) -> Ratings:
    """The study's ratings as a :class:`studies.ratings.Ratings` long table for the analysis.

    Every rating is included; training, catch and duplicate presentations are flagged
    (``Ratings.main_analysis()`` drops them). Readers are display names, cases public ids,
    ``trial`` the position in the reader's sequence.

    Args:
        session: database session.
        study_id: the study.
        modality: modality id of every row; the study name when None.
    """
    study = get_study(session=session, study_id=study_id)
    return ratings_from_rows(export_rows(session=session, study_id=study_id), modality=modality or study.name)


def audit_events(*, session: Session, study_id: int | None = None) -> list[AuditEvent]:
    """Audit events in order, of one study or (None) of the whole database."""
    query = select(AuditEvent).order_by(AuditEvent.id)
    if study_id is not None:
        query = query.where(AuditEvent.study_id == study_id)
    return list(session.exec(query).all())


def verify_audit_chain(*, session: Session) -> list[str]:
    """Recompute the audit hash chain; returns one message per broken link (empty = intact)."""
    problems, prev = [], GENESIS_HASH
    for ev in audit_events(session=session):
        if ev.prev_hash != prev:
            problems.append(f"event {ev.id}: prev_hash does not match the hash of the event before")
        expected = event_hash(prev_hash=ev.prev_hash, ts=ev.ts, actor=ev.actor, action=ev.action,
                              study_id=ev.study_id, payload=ev.payload)
        if ev.hash != expected:
            problems.append(f"event {ev.id}: content does not match its hash (edited)")
        prev = ev.hash
    return problems


# ----------------------------------------------------------------------------- reader side
def reader_by_token(*, session: Session, token: str) -> Reader | None:
    """The reader whose link token this is, or None.

    The lookup is by SHA-256 of the token; timing can at most reveal a prefix of that
    hash, which does not help forge a token. The final compare is constant-time.
    """
    digest = hash_token(token)
    reader = session.exec(select(Reader).where(Reader.token_hash == digest)).first()
    if reader is None or not hmac.compare_digest(reader.token_hash, digest):
        return None
    return reader


def next_case_for_reader(*, session: Session, reader_id: int) -> CaseView | None:
    """The first unanswered case in the reader's frozen order (the resume point); None when done."""
    assignment = _next_assignment(session, reader_id)
    return None if assignment is None else _view(session, assignment, answered=False)


def case_for_reader(*, session: Session, reader_id: int, public_id: str) -> CaseView:
    """Look up a case by public id, only if it is in this reader's sequence.

    Raises:
        NotAssignedError: the case does not exist or belongs to another reader's sequence.
    """
    assignment = session.exec(select(Assignment).join(Case, Case.id == Assignment.case_id)
                              .where(Assignment.reader_id == reader_id, Case.public_id == public_id)).first()
    if assignment is None:
        raise NotAssignedError(f"case {public_id!r} is not assigned to reader {reader_id}")
    return _view(session, assignment)


def stimulus_for_reader(*, session: Session, reader_id: int, public_id: str, media_dir: str | Path) -> Path:
    """Path of a stimulus file, after the same ownership check as :func:`case_for_reader`."""
    view = case_for_reader(session=session, reader_id=reader_id, public_id=public_id)
    return stimulus_path(media_dir, view.public_id, view.kind)


def mark_shown(*, session: Session, reader_id: int, assignment_id: int) -> datetime:
    """Record when the server first handed the case to the reader; returns that time.

    Only the first showing counts: a page refresh shows the case again but keeps the time.
    """
    assignment = _own_assignment(session, reader_id, assignment_id)
    if assignment.shown_at is None:
        shown_at = assignment.shown_at = utcnow()
        _append_event(session, actor=f"reader:{reader_id}", action="show", study_id=assignment.study_id,
                      payload={"assignment_id": assignment_id})
        session.commit()
        return shown_at
    return assignment.shown_at


def record_telemetry(*, session: Session, reader_id: int, assignment_id: int, slices: Sequence[int] = (),
                     windows: Sequence[str | Mapping[str, float]] = ()) -> None:
    """Accumulate viewing telemetry on an assignment (slices visited, windows used).

    Args:
        session: database session.
        reader_id: the reader.
        assignment_id: one of the reader's assignments.
        slices: slice indices shown (volumes only).
        windows: preset names or ``{"width", "level"}`` HU windows used.
    """
    assignment = _own_assignment(session, reader_id, assignment_id)
    _merge_telemetry(get_study(session=session, study_id=assignment.study_id), assignment, slices, windows)
    session.commit()


def submit_rating(*, session: Session, reader_id: int, assignment_id: int, call: str, confidence: int,
                  likert: int | None = None, comment: str = "", slices: Sequence[int] = (),
                  windows: Sequence[str | Mapping[str, float]] = ()) -> Rating:
    """Store a reader's answer; idempotent, committed before it returns.

    Resubmitting the same answer returns the stored row unchanged (double clicks are
    harmless). A different answer updates the row (``revision`` + 1) only when the study
    allows changes. A new answer is accepted only for the reader's next unanswered case.

    Args:
        session: database session.
        reader_id: the reader (from :func:`reader_by_token`).
        assignment_id: the assignment being answered.
        call: "real" or "synthetic".
        confidence: 1..study.confidence_levels.
        likert: realism 1 (clearly artificial) .. 5 (fully realistic), or None if not asked.
        comment: free text.
        slices: slice indices visited, merged with the recorded telemetry.
        windows: windows used, merged with the recorded telemetry.

    Raises:
        NotAssignedError, StudyLockedError, ChangeNotAllowedError, OutOfOrderError, ValueError.
    """
    args = (session, reader_id, assignment_id, call, confidence, likert, comment, slices, windows)
    try:
        return _store_rating(*args)
    except IntegrityError:
        # Another connection stored this assignment first (possible on PostgreSQL; SQLite's
        # BEGIN IMMEDIATE serialises writers): answer once more, now against the row that won.
        session.rollback()
        return _store_rating(*args)


def _store_rating(session: Session, reader_id: int, assignment_id: int, call: str, confidence: int,
                  likert: int | None, comment: str, slices: Sequence[int], windows: Sequence) -> Rating:
    assignment = _own_assignment(session, reader_id, assignment_id)
    study = get_study(session=session, study_id=assignment.study_id)
    if study.locked:
        raise StudyLockedError(f"study {study.name!r} is locked; ratings are closed")
    answer = check_answer(call=call, confidence=confidence, likert=likert, comment=comment,
                          confidence_levels=study.confidence_levels)
    actor = f"reader:{reader_id}"

    rating = session.exec(select(Rating).where(Rating.assignment_id == assignment_id)).first()
    if rating is not None:
        before = {k: getattr(rating, k) for k in answer}
        if before == answer:
            return rating
        if not study.allow_changes:
            raise ChangeNotAllowedError(f"study {study.name!r} does not allow changing a submitted answer")
        _merge_telemetry(study, assignment, slices, windows)
        for k, v in answer.items():
            setattr(rating, k, v)
        rating.revision += 1
        rating.updated_at = utcnow()
        rating.slices_visited, rating.windows_used = assignment.slices_visited, assignment.windows_used
        _append_event(session, actor=actor, action="change_rating", study_id=study.id,
                      payload={"assignment_id": assignment_id, "before": before, "after": answer})
    else:
        nxt = _next_assignment(session, reader_id)
        if nxt is None or nxt.id != assignment_id:
            raise OutOfOrderError(f"assignment {assignment_id} (position {assignment.position}) is not the "
                                  f"next unanswered one (position {None if nxt is None else nxt.position})")
        _merge_telemetry(study, assignment, slices, windows)
        telemetry = {"slices_visited": assignment.slices_visited, "windows_used": assignment.windows_used}
        rating = Rating(assignment_id=assignment_id, study_id=study.id, reader_id=reader_id,
                        case_id=assignment.case_id, shown_at=assignment.shown_at, **telemetry, **answer)
        session.add(rating)
        _append_event(session, actor=actor, action="submit_rating", study_id=study.id,
                      payload={"assignment_id": assignment_id, **answer, **telemetry})
    session.commit()
    session.refresh(rating)
    return rating


def training_feedback(*, session: Session, reader_id: int, assignment_id: int) -> str:
    """Truth of a rated training case, for the feedback the training block shows.

    Raises:
        NotAssignedError: not this reader's assignment, not a training case, or not yet rated.
    """
    assignment = _own_assignment(session, reader_id, assignment_id)
    rated = session.exec(select(Rating.id).where(Rating.assignment_id == assignment_id)).first() is not None
    if assignment.block != "training" or not rated:
        raise NotAssignedError(f"feedback only follows a submitted training answer; assignment "
                               f"{assignment_id} is {'rated' if rated else 'unrated'} "
                               f"and in block {assignment.block!r}")
    return session.get(Case, assignment.case_id).truth
