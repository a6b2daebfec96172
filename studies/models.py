"""Database tables of a reader study, and the plain views handed to callers.

Truth and provenance live only in :class:`Case`. Everything a reader's browser may see
goes through :class:`CaseView`, which has neither. Timestamps are timezone-aware UTC
(sqlmodel refuses naive ones and hands back UTC even from SQLite); :func:`utcnow` makes them.

Bump :data:`SCHEMA_VERSION` whenever a table changes: :func:`studies.db.init_db` refuses a
database written with another version instead of running a half-compatible study.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 1

Truth = Literal["real", "synthetic"]
CaseKind = Literal["image2d", "volume"]
Role = Literal["radiologist", "pathologist", "other"]
Block = Literal["training", "main"]
TRUTHS: tuple[str, ...] = ("real", "synthetic")
KINDS: tuple[str, ...] = ("image2d", "volume")
ROLES: tuple[str, ...] = ("radiologist", "pathologist", "other")
LIKERT_LEVELS = (1, 2, 3, 4, 5)


def utcnow() -> datetime:
    """Current time, timezone-aware UTC (server clock: readers' clocks are never trusted)."""
    return datetime.now(UTC)


class SchemaInfo(SQLModel, table=True):
    """One row: the schema version the database was created with."""

    __tablename__ = "schema_info"
    id: int = Field(default=1, primary_key=True)
    version: int
    created_at: datetime = Field(default_factory=utcnow)


class Study(SQLModel, table=True):
    """A blinded reader study: its frozen design and owner settings.

    ``design`` holds :class:`studies.design.StudyDesign` and
    :class:`studies.stimuli.StimulusSpec` as JSON (seed included), so the whole
    reading order can be recomputed and checked from the database alone.
    """

    __tablename__ = "study"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    kind: str  # CaseKind; one kind per study so the kind cannot correlate with truth
    created_at: datetime = Field(default_factory=utcnow)
    seed: int
    design: dict = Field(default_factory=dict, sa_type=JSON)
    tost_margin: float
    owner_password_hash: str  # "scrypt$n$r$p$salt$hash", see studies.security
    allow_changes: bool = False
    locked: bool = False
    locked_at: datetime | None = None
    instructions: str = ""
    confidence_levels: int = 3  # confidence asked on 1..confidence_levels
    window_presets: dict = Field(default_factory=dict, sa_type=JSON)  # name -> {"width", "level"} HU


class Reader(SQLModel, table=True):
    """A reader of one study. Only a hash of the personal link token is stored."""

    __tablename__ = "reader"
    __table_args__ = (
        UniqueConstraint("study_id", "display_name"),
        UniqueConstraint("study_id", "reader_index"),
    )
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    reader_index: int  # 0, 1, 2 ... in order of addition; picks the Williams-square row
    display_name: str
    role: str  # Role
    years_experience: float
    token_hash: str = Field(unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class Case(SQLModel, table=True):
    """One stimulus. The only table holding truth and provenance.

    A hidden duplicate is its own row (own public id, own copy of the file) with
    ``duplicate_of`` pointing at the original, so nothing served reveals the repeat.
    """

    __tablename__ = "study_case"  # "case" is an SQL keyword
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    public_id: str = Field(unique=True, index=True)  # random hex; also the file stem
    truth: str  # Truth
    kind: str  # CaseKind
    strata: dict = Field(default_factory=dict, sa_type=JSON)
    provenance: dict = Field(default_factory=dict, sa_type=JSON)
    file_sha256: str
    is_training: bool = False
    is_catch: bool = False
    duplicate_of: int | None = Field(default=None, foreign_key="study_case.id")


class Assignment(SQLModel, table=True):
    """One presentation in a reader's frozen sequence; the sequence is the resume point.

    Viewing telemetry accumulates here while the case is on screen, so a page refresh
    does not lose it; :func:`studies.crud.submit_rating` copies it into the rating.
    """

    __tablename__ = "assignment"
    __table_args__ = (
        UniqueConstraint("reader_id", "position"),
        UniqueConstraint("reader_id", "case_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    reader_id: int = Field(foreign_key="reader.id", index=True)
    case_id: int = Field(foreign_key="study_case.id")
    position: int  # 0-based, training block first
    block: str  # Block
    is_duplicate: bool = False
    shown_at: datetime | None = None  # first time the server handed the case out
    slices_visited: list = Field(default_factory=list, sa_type=JSON)
    windows_used: list = Field(default_factory=list, sa_type=JSON)


class Rating(SQLModel, table=True):
    """A reader's answer to one assignment; at most one per (study, reader, case)."""

    __tablename__ = "rating"
    __table_args__ = (UniqueConstraint("study_id", "reader_id", "case_id"),)
    id: int | None = Field(default=None, primary_key=True)
    assignment_id: int = Field(foreign_key="assignment.id", unique=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    reader_id: int = Field(foreign_key="reader.id", index=True)
    case_id: int = Field(foreign_key="study_case.id")
    call: str  # Truth: what the reader thinks the image is
    confidence: int  # 1..Study.confidence_levels
    likert: int | None = None  # realism 1 (clearly artificial) .. 5 (fully realistic)
    comment: str = ""
    shown_at: datetime | None = None
    submitted_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime | None = None
    slices_visited: list = Field(default_factory=list, sa_type=JSON)
    windows_used: list = Field(default_factory=list, sa_type=JSON)
    revision: int = 0  # times the answer was changed after the first submission


class AuditEvent(SQLModel, table=True):
    """Append-only log. Each row hashes its content and its predecessor's hash.

    ``prev_hash`` is UNIQUE, so two writers racing to extend the chain cannot fork it
    silently: the loser gets an IntegrityError. See :func:`studies.security.event_hash`.
    """

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(default_factory=utcnow)
    actor: str
    action: str
    study_id: int | None = Field(default=None, foreign_key="study.id", index=True)
    payload: dict = Field(default_factory=dict, sa_type=JSON)
    prev_hash: str = Field(unique=True)
    hash: str


TABLES = (SchemaInfo, Study, Reader, Case, Assignment, Rating, AuditEvent)


@dataclass(frozen=True)
class CaseView:
    """What the reader-facing app may know about the case on screen: no truth, no provenance.

    Attributes:
        assignment_id: id to pass back to ``submit_rating``/``record_telemetry``.
        public_id: opaque id, the stem of the stimulus file.
        kind: "image2d" or "volume".
        block: "training" or "main".
        position: 0-based position in this reader's sequence.
        total: length of this reader's sequence.
        answered: whether this assignment already has a rating.
    """

    assignment_id: int
    public_id: str
    kind: str
    block: str
    position: int
    total: int
    answered: bool


@dataclass(frozen=True)
class ReaderProgress:
    """Owner view of one reader's progress.

    Attributes:
        reader_id: database id.
        display_name: the name the owner gave.
        answered: assignments with a rating.
        total: assignments in the sequence.
    """

    reader_id: int
    display_name: str
    answered: int
    total: int

    @property
    def finished(self) -> bool:
        """Whether every assignment has a rating."""
        return self.answered == self.total
