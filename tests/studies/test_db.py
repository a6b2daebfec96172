"""Engine factory, PRAGMAs, schema version, maintenance and crash durability on real SQLite files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from studies import crud
from studies.db import SchemaVersionError, backup, init_db, integrity_check, make_engine, pragmas
from studies.models import SCHEMA_VERSION, Assignment, Case, Rating
from tests.studies.study_factory import add_readers, new_study, rate_next

REPO = Path(__file__).resolve().parents[2]


def test_file_engine_sets_durability_pragmas(tmp_path):
    engine = make_engine(tmp_path / "sub" / "study.sqlite")
    init_db(engine)
    expected = {"busy_timeout": 5000, "journal_mode": "wal", "synchronous": 1, "foreign_keys": 1}
    assert pragmas(engine) == expected
    assert (tmp_path / "sub" / "study.sqlite").is_file()
    full = make_engine(f"sqlite:///{tmp_path / 'full.sqlite'}", synchronous="FULL")
    assert pragmas(full)["synchronous"] == 2  # URLs get the same PRAGMAs
    with pytest.raises(ValueError, match="OFF"):
        make_engine(tmp_path / "x.sqlite", synchronous="OFF")


def test_memory_engine_shares_one_database_across_sessions():
    engine = make_engine(":memory:")
    init_db(engine)
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == 0
    assert pragmas(engine)["foreign_keys"] == 1


def test_foreign_keys_are_enforced(tmp_path):
    engine = make_engine(tmp_path / "fk.sqlite")
    init_db(engine)
    with Session(engine) as session:
        session.add(Assignment(study_id=99, reader_id=99, case_id=99, position=0, block="main"))
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            session.commit()


def test_every_transaction_takes_the_write_lock_up_front(tmp_path):
    # A read through the engine must already hold the RESERVED lock (BEGIN IMMEDIATE),
    # so a second writer is refused instead of deadlocking later on a read-then-write.
    engine = make_engine(tmp_path / "lock.sqlite")
    init_db(engine)
    other = sqlite3.connect(tmp_path / "lock.sqlite", timeout=0, isolation_level=None)
    with Session(engine) as session:
        session.exec(select(Case)).all()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # released when the session closed
    other.execute("ROLLBACK")
    other.close()


def test_schema_version_mismatch_is_refused(tmp_path):
    path = tmp_path / "old.sqlite"
    engine = make_engine(path)
    assert init_db(engine) == SCHEMA_VERSION
    assert init_db(engine) == SCHEMA_VERSION  # idempotent on an existing database
    engine.dispose()
    with sqlite3.connect(path) as con:
        con.execute("UPDATE schema_info SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        init_db(make_engine(path))


def test_integrity_check_reports_foreign_key_damage(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8, design=None)
    assert integrity_check(engine) == ["ok"]
    engine.dispose()
    with sqlite3.connect(tmp_path / "study.sqlite") as con:  # foreign keys are off on a plain connection
        con.execute("INSERT INTO assignment (study_id, reader_id, case_id, position, block, is_duplicate, "
                    "slices_visited, windows_used) VALUES (?, 12345, 1, 0, 'main', 0, '[]', '[]')",
                    (study_id,))
    messages = integrity_check(make_engine(tmp_path / "study.sqlite"))
    assert any("assignment" in m and "reader" in m for m in messages)


def test_backup_is_a_consistent_copy(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=8)
    (reader_id, _), = add_readers(engine, study_id, 1)
    for _ in range(3):
        rate_next(engine, reader_id)
    dest = backup(engine, tmp_path / "backups" / "copy.sqlite")
    copy = make_engine(dest)
    assert init_db(copy) == SCHEMA_VERSION
    with Session(copy) as session:
        assert session.exec(select(func.count()).select_from(Rating)).one() == 3
        assert len(crud.list_cases(session=session, study_id=study_id)) == 8
    assert integrity_check(copy) == ["ok"]
    with pytest.raises(FileExistsError):
        backup(engine, dest)


CHILD = """
import sys, time
from sqlmodel import Session
from studies import crud
from studies.db import make_engine
engine = make_engine(sys.argv[1])
reader_id = int(sys.argv[2])
while True:
    with Session(engine) as session:
        view = crud.next_case_for_reader(session=session, reader_id=reader_id)
        if view is None:
            break
        rating = crud.submit_rating(session=session, reader_id=reader_id, assignment_id=view.assignment_id,
                                    call="synthetic", confidence=3, likert=2)
        print(rating.id, view.assignment_id, flush=True)
time.sleep(600)
"""


def test_acknowledged_ratings_survive_sigkill(tmp_path):
    engine, study_id, _ = new_study(tmp_path, n_main=300, design=None)
    (reader_id, _), = add_readers(engine, study_id, 1)
    engine.dispose()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "study.sqlite"), str(reader_id)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    acked = []
    try:
        while len(acked) < 20:
            line = proc.stdout.readline()
            assert line, f"child exited early: {proc.stderr.read()}"
            acked.append(tuple(map(int, line.split())))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # Lines already in the pipe were acknowledged before the kill, too.
    acked += [tuple(map(int, line.split())) for line in proc.stdout.read().splitlines() if line.strip()]
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) < 300, "the child finished before the kill; nothing was tested mid-way"

    reopened = make_engine(tmp_path / "study.sqlite")
    assert integrity_check(reopened) == ["ok"]
    with Session(reopened) as session:
        stored = {r.id: r.assignment_id for r in session.exec(select(Rating))}
    assert all(stored.get(rating_id) == assignment_id for rating_id, assignment_id in acked)
    assert len(stored) in (len(acked), len(acked) + 1)  # at most one committed but not yet printed


def test_study_engine_imports_no_app_core_or_heavy_frameworks():
    modules = ["studies.models", "studies.db", "studies.crud", "studies.design", "studies.stimuli",
               "studies.audit", "studies.simulate", "studies.export", "studies.validation",
               "studies.security"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
              "('core', 'reviewer_app', 'gradio', 'torch', 'diffusers'))\nprint(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "[]"
