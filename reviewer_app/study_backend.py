"""What the study pages and ``synthdx study`` share: the database, the media folder, rendering.

Where stimuli live: ``create_study`` writes one file per case, named only by its random
public id, into the study database's **media folder**. For a SQLite file that folder sits
beside it: ``runs/vtt.sqlite`` -> ``runs/vtt-media/`` (copy both together). A database URL
(PostgreSQL) has no "beside", so ``--media DIR`` must name it. All studies of one database
share the folder; ids are 128 random bits, so they cannot collide.

Rendering is one function for the reader's browser, the leakage audit and the benchmark
(:func:`render_stimulus`), so the audit measures exactly the pixels readers are served.
No gradio here: the command line imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import Engine
from sqlmodel import Session

from core.errors import InputError
from core.render import render_view
from reviewer_app.services import OpenCache
from studies import crud
from studies.db import init_db, make_engine
from studies.models import Study
from studies.stimuli import load_image, load_volume

ZOOMS = (1, 2, 4, 8)  # 2D magnifications offered to readers
UNIT_SPACING = (1.0, 1.0, 1.0)  # stimuli are on the study grid; aspect is already square


def default_media_dir(db: str | Path) -> Path:
    """The media folder of a SQLite study database: ``<folder>/<stem>-media``."""
    text = str(db)
    if "://" in text:
        raise InputError(f"{text} is a database URL; name the stimulus folder with --media DIR")
    path = Path(text).expanduser().resolve()
    return path.with_name(f"{path.stem}-media")


@dataclass(frozen=True)
class StudyServing:
    """How the app serves reader studies.

    Attributes:
        db: study database (SQLite path or SQLAlchemy URL).
        media: stimulus folder; :func:`default_media_dir` of ``db`` when None.
        study_only: serve only the reader and owner pages (no research tools): the mode for
            real studies with clinicians.
        study_files: folder that manifests uploaded on the owner page may reference; creating
            studies on the web is off without it.
        base_url: address put in readers' links; else the one the owner's browser uses.
    """

    db: str
    media: str | None = None
    study_only: bool = False
    study_files: Path | None = None
    base_url: str | None = None


@dataclass
class StudyBackend:
    """The study database and its media, shared read-only by every handler.

    Attributes:
        engine: from :func:`studies.db.make_engine`; handlers open one short session per event.
        media_dir: where the stimuli are (see the module docstring).
        stimuli: public id -> decoded stimulus (int16 volume or uint8 RGB image), LRU.
    """

    engine: Engine
    media_dir: Path
    stimuli: OpenCache = field(default_factory=lambda: OpenCache(capacity=48))

    def session(self) -> Session:
        return Session(self.engine)

    def stimulus(self, path: Path, kind: str) -> np.ndarray:
        """The decoded stimulus at ``path`` (already ownership-checked by the caller)."""
        return self.stimuli.get(str(path), lambda: load_volume(path) if kind == "volume" else load_image(path))


def open_backend(db: str | Path, media: str | Path | None = None, *, create: bool = False) -> StudyBackend:
    """Engine and media folder of a study database.

    Args:
        db: SQLite path or SQLAlchemy URL.
        media: stimulus folder; :func:`default_media_dir` of ``db`` when None.
        create: allow a SQLite file that does not exist yet (``study create``).
    """
    text = str(db)
    if "://" not in text and text != ":memory:" and not create and not Path(text).expanduser().is_file():
        raise FileNotFoundError(f"study database {text} not found; create it with `synthdx study create`")
    media_dir = Path(media).expanduser().resolve() if media else default_media_dir(db)
    engine = make_engine(db)
    init_db(engine)
    return StudyBackend(engine=engine, media_dir=media_dir)


# ----------------------------------------------------------------------------- studies by id or name
def list_studies(session: Session) -> list[Study]:
    """Every study of the database, by id.

    crud has no listing of its own; every study's ``create_study`` audit event names it,
    and the audit chain is append-only, so that log is the complete list.
    """
    ids = sorted({ev.study_id for ev in crud.audit_events(session=session)
                  if ev.action == "create_study" and ev.study_id is not None})
    return [crud.get_study(session=session, study_id=i) for i in ids]


def resolve_study(session: Session, ref: str | None) -> Study:
    """The study named by ``ref`` (an id or a name); the only one when ``ref`` is None."""
    studies = list_studies(session)
    names = ", ".join(f"{s.id}: {s.name}" for s in studies) or "none"
    if ref is None:
        if len(studies) == 1:
            return studies[0]
        raise InputError(f"the database holds {len(studies)} studies ({names}); choose one with --study ID|NAME")
    for s in studies:
        if s.name == ref or str(s.id) == str(ref).strip():
            return s
    raise InputError(f"no study {ref!r} in the database; studies: {names}")


# ----------------------------------------------------------------------------- rendering
def default_window(study: Study) -> tuple[str, float, float]:
    """The study's first window preset: ``(name, width, level)``; every volume opens with it."""
    name, w = next(iter(study.window_presets.items()))
    return name, float(w["width"]), float(w["level"])


def render_stimulus(array: np.ndarray, *, kind: str, index: int = 0, width: float = 400.0, level: float = 40.0,
                    zoom: int = 1, center: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """The pixels a reader is served for one view of a stimulus; identical for both classes.

    Args:
        array: volume: int16 HU ``(z, y, x)``; image2d: uint8 ``(H, W, 3)``.
        kind: "volume" or "image2d".
        index: volumes: axial slice.
        width: volumes: window width in HU (> 0).
        level: volumes: window level in HU.
        zoom: image2d: one of :data:`ZOOMS`; the crop is ``1/zoom`` of each side.
        center: image2d: crop centre as ``(x, y)`` fractions of the image (see :func:`crop_window`).

    Returns:
        volume: uint8 ``(y, x)``; image2d: uint8 ``(H, W, 3)`` (the crop scaled back up
        with nearest neighbour: magnified pixels, nothing invented).
    """
    if kind == "volume":
        if not width > 0:
            raise InputError(f"window width must be > 0 HU, got {width}")
        index = int(min(max(index, 0), array.shape[0] - 1))
        return render_view(array, plane="axial", index=index, low=level - width / 2, high=level + width / 2,
                           spacing=UNIT_SPACING)
    if zoom == 1:
        return array
    h, w = array.shape[:2]
    top, left, ch, cw = crop_window((h, w), zoom, center)
    crop = np.ascontiguousarray(array[top:top + ch, left:left + cw])
    return np.asarray(Image.fromarray(crop, "RGB").resize((w, h), Image.Resampling.NEAREST))


def crop_window(shape: tuple[int, int], zoom: int, center: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the 2D crop at ``zoom`` around ``center`` (``(x, y)``
    fractions), moved to stay inside the image."""
    if zoom not in ZOOMS:
        raise InputError(f"zoom must be one of {ZOOMS}, got {zoom}")
    h, w = shape
    ch, cw = max(1, h // zoom), max(1, w // zoom)
    top = int(min(max(round(center[1] * h - ch / 2), 0), h - ch))
    left = int(min(max(round(center[0] * w - cw / 2), 0), w - cw))
    return top, left, ch, cw


def audit_renderer(study: Study):
    """Renderer for :func:`studies.audit.audit_study`: every slice at the study's first preset,
    encoded by the app's own PNG encoder, i.e. the bytes a reader receives on opening a case."""
    from reviewer_app.components import encode_png

    _, width, level = default_window(study)

    def render(volume: np.ndarray) -> list[bytes]:
        return [encode_png(render_stimulus(volume, kind="volume", index=k, width=width, level=level))
                for k in range(volume.shape[0])]

    return render

