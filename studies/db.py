"""Engine factory and database maintenance for the study database.

Usage::

    engine = make_engine("runs/study.sqlite")   # or "postgresql+psycopg://..."
    init_db(engine)                            # create tables, check schema_version
    with Session(engine) as session:           # one session per request/event
        ...

SQLite durability (READER_STUDIES.md §6). Every connection runs, in this order:

* ``busy_timeout=5000``: first, so that the next PRAGMAs already wait for a lock
  instead of failing with "database is locked";
* ``journal_mode=WAL``: readers never block the writer and vice versa;
* ``synchronous=NORMAL`` (default, see below) or ``FULL``;
* ``foreign_keys=ON``: SQLite leaves them off unless asked, per connection.

Transactions start with ``BEGIN IMMEDIATE`` (the pysqlite recipe from the SQLAlchemy
docs: ``isolation_level=None`` on connect, our own BEGIN on "begin"). A deferred
transaction that reads and then writes gets SQLITE_BUSY at once when another writer
got there first, ignoring busy_timeout; IMMEDIATE takes the write lock up front and
waits up to busy_timeout for it.

Why NORMAL and not FULL: in WAL mode a commit appends to the WAL file with ``write()``
before returning; NORMAL only skips the ``fsync`` of that file. Data handed to the OS
survives the death of the process (SIGKILL, an OOM kill, a crash of the app), which is
what "every acknowledged rating survives" needs on a reading-room server. Only an OS
crash or power loss can roll back the last commits before a checkpoint. Pass
``synchronous="FULL"`` when that must be covered too (one fsync per rating).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, select

from studies.models import SCHEMA_VERSION, TABLES, SchemaInfo

BUSY_TIMEOUT_MS = 5000


class SchemaVersionError(RuntimeError):
    """The database was written by another schema version of this code."""


def _url(url_or_path: str | Path) -> str:
    text = str(url_or_path)
    if "://" in text:
        return text
    if text == ":memory:":
        return "sqlite://"
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def make_engine(url_or_path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
                echo: bool = False) -> Engine:
    """Create an engine for a study database.

    Args:
        url_or_path: a SQLite file path (created on first use), ``":memory:"``, or any
            SQLAlchemy URL (``postgresql+psycopg://user@host/db`` for a multi-site study).
        synchronous: SQLite ``PRAGMA synchronous``; "NORMAL" survives process crashes,
            "FULL" also OS crashes and power loss (see the module docstring).
        echo: log SQL statements.

    Returns:
        An engine; nothing is connected until first use.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
    url = _url(url_or_path)
    if not url.startswith("sqlite"):
        return create_engine(url, echo=echo, pool_pre_ping=True)

    kwargs: dict = {"connect_args": {"check_same_thread": False}, "echo": echo}
    if url in ("sqlite://", "sqlite:///:memory:"):
        # One shared connection, or every session would see its own empty database.
        kwargs["poolclass"] = StaticPool
    else:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Disable pysqlite's own transaction handling so that _on_begin decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def init_db(engine: Engine) -> int:
    """Create missing tables and check the schema version.

    Args:
        engine: from :func:`make_engine`.

    Returns:
        The schema version (:data:`studies.models.SCHEMA_VERSION`).

    Raises:
        SchemaVersionError: the database was created with another schema version.
    """
    SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in TABLES])
    with Session(engine) as session:
        info = session.exec(select(SchemaInfo)).first()
        if info is None:
            session.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
            session.commit()
            return SCHEMA_VERSION
        if info.version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"study database {engine.url} has schema version {info.version}, this code expects "
                f"{SCHEMA_VERSION}; open it with the synthdx version that created it, or migrate it")
    return SCHEMA_VERSION


def pragmas(engine: Engine) -> dict[str, object]:
    """Current values of the durability PRAGMAs on a fresh connection (SQLite only)."""
    _require_sqlite(engine, "pragmas")
    raw = engine.raw_connection()
    try:
        return {name: raw.driver_connection.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("busy_timeout", "journal_mode", "synchronous", "foreign_keys")}
    finally:
        raw.close()


def integrity_check(engine: Engine) -> list[str]:
    """Run ``PRAGMA integrity_check`` (and the foreign key check); ``["ok"]`` when healthy.

    Args:
        engine: a SQLite engine.

    Returns:
        The messages SQLite reports; anything other than ``["ok"]`` is damage.
    """
    _require_sqlite(engine, "integrity_check")
    raw = engine.raw_connection()
    try:
        messages = [row[0] for row in raw.driver_connection.execute("PRAGMA integrity_check")]
        for table, rowid, parent, _ in raw.driver_connection.execute("PRAGMA foreign_key_check"):
            messages.append(f"foreign key violation: {table} row {rowid} -> {parent}")
        return messages if messages != ["ok"] else ["ok"]
    finally:
        raw.close()


def backup(engine: Engine, path: str | Path) -> Path:
    """Write a consistent copy of the live database with ``VACUUM INTO``.

    Safe while readers rate: VACUUM INTO reads one snapshot. It runs outside any
    transaction (VACUUM cannot run inside one), on the raw connection.

    Args:
        engine: a SQLite engine.
        path: destination file; must not exist yet.

    Returns:
        The destination path.
    """
    _require_sqlite(engine, "backup")
    dest = Path(path).expanduser().resolve()
    if dest.exists():
        raise FileExistsError(f"backup destination {dest} exists; choose a new file name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("VACUUM INTO ?", (str(dest),))
    finally:
        raw.close()
    return dest


def _require_sqlite(engine: Engine, what: str) -> None:
    if engine.dialect.name != "sqlite":
        raise ValueError(f"{what} works on SQLite only, got a {engine.dialect.name} engine; "
                         "use the server's own tools (pg_dump, amcheck) for PostgreSQL")
