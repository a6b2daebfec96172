"""What every reader-page event shares: the page state, authorisation, telemetry, pixels.

Authorisation is re-derived from the database on every event: the link token held in
:class:`ReaderState` (server-side ``gr.State``) is resolved with ``crud.reader_by_token`` and
the case on screen is looked up with ``crud.case_for_reader``, which refuses a case outside
that reader's sequence. Nothing returned carries truth, provenance or a file name.

Each event keeps its database session short: reads, the rating and the telemetry happen
inside it; decoding, windowing and PNG encoding happen after it is closed (on SQLite every
transaction holds the write lock, see ``studies.db``). Errors reach the reader as fixed,
neutral sentences (:func:`reader_safe`): engine messages name studies and ids, and an
unexpected exception's text could carry SQL.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace

import numpy as np
from sqlmodel import Session

from core.errors import InputError
from reviewer_app.study_backend import StudyBackend, crop_window, default_window, render_stimulus
from studies import crud
from studies.models import CaseView
from studies.stimuli import stimulus_path
from studies.validation import ChangeNotAllowedError, NotAssignedError, OutOfOrderError, StudyLockedError

log = logging.getLogger(__name__)


class InvalidLink(PermissionError):
    """The token resolves to no reader."""


@dataclass(frozen=True)
class Shown:
    """Pixels for the reader's image component, with a per-case salt for its URL.

    The salt (the case's public id) keeps a hidden duplicate's URL different from its
    original's even when the pixels are identical (see ``reviewer_app.study_image``).
    """

    pixels: np.ndarray
    salt: str


@dataclass
class ReaderState:
    """One reader's page session (server side). Never trusted alone: see the module docstring.

    Attributes:
        token: the link token, from the URL fragment.
        public_id: the case on screen (None before Start / when done).
        kind: "volume" or "image2d".
        position: 0-based position of that case in the reader's sequence.
        feedback: training feedback is on screen (the case is answered).
        slice: axial slice shown (volumes).
        preset: window preset in use, None for a custom window.
        width: window width, HU. level: window level, HU.
        zoom: 2D magnification. center: 2D crop centre shown, as (x, y) fractions.
        size: 2D stimulus (height, width) in pixels, which is also the shown size.
        logged: telemetry already written for this case (slice ints and window keys).
        history: public ids answered in this page session, for "previous case" when the
            study allows changes (a reload starts it afresh).
    """

    token: str = ""
    public_id: str | None = None
    kind: str = "image2d"
    position: int = -1
    feedback: bool = False
    slice: int = 0
    preset: str | None = None
    width: float = 400.0
    level: float = 40.0
    zoom: int = 1
    center: tuple[float, float] = (0.5, 0.5)
    size: tuple[int, int] = (1, 1)
    logged: tuple = ()
    history: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class StudyInfo:
    """The study settings a reader event needs, copied out of the ORM row inside the session."""

    id: int
    locked: bool
    allow_changes: bool
    presets: dict
    default_window: tuple[str, float, float]
    n_slices: int
    confidence_levels: int
    instructions: str


def reader_safe(fn):
    """Map every failure to a neutral message (an ``InputError``, which the wiring shows)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError:
            raise
        except InvalidLink:
            raise InputError("This link is not valid. Open the personal link you were sent.") from None
        except NotAssignedError:
            raise InputError("This case is not on your reading list. Reload your link to continue.") from None
        except StudyLockedError:
            raise InputError("This study is closed; answers are no longer accepted.") from None
        except ChangeNotAllowedError:
            raise InputError("Submitted answers cannot be changed in this study.") from None
        except OutOfOrderError:
            raise InputError("This case was already answered (another window?). Reload your link.") from None
        except Exception:  # logged in full here; the reader gets a neutral sentence
            log.exception("reader event %s failed", fn.__name__)
            raise InputError("The server could not do this. Your submitted answers are safe; "
                             "reload your link to continue.") from None

    return wrapper


def authorise(session: Session, token: str) -> tuple[int, StudyInfo]:
    """``(reader id, study settings)`` of a link token; :class:`InvalidLink` when it is none."""
    reader = crud.reader_by_token(session=session, token=token) if token else None
    if reader is None:
        raise InvalidLink("unknown token")
    study = crud.get_study(session=session, study_id=reader.study_id)
    return reader.id, StudyInfo(
        id=study.id, locked=study.locked, allow_changes=study.allow_changes, presets=dict(study.window_presets),
        default_window=default_window(study), n_slices=study.design["stimulus"]["volume_shape"][0],
        confidence_levels=study.confidence_levels, instructions=study.instructions)


def current(session: Session, state: ReaderState) -> tuple[int, StudyInfo, CaseView]:
    """The reader, their study and the case on screen, checked to be in their sequence."""
    reader_id, info = authorise(session, state.token)
    if state.public_id is None:
        raise InputError("Press Start first.")
    return reader_id, info, crud.case_for_reader(session=session, reader_id=reader_id, public_id=state.public_id)


def log_view(session: Session, reader_id: int, info: StudyInfo, view: CaseView, state: ReaderState) -> ReaderState:
    """Clamp the slice and record slices and windows the first time this case shows them."""
    if view.kind != "volume":
        return state
    state = replace(state, slice=int(min(max(state.slice, 0), info.n_slices - 1)))
    window = state.preset if state.preset else {"width": state.width, "level": state.level}
    new_slices = [] if state.slice in state.logged else [state.slice]
    new_windows = [] if window in state.logged else [window]
    if new_slices or new_windows:
        crud.record_telemetry(session=session, reader_id=reader_id, assignment_id=view.assignment_id,
                              slices=new_slices, windows=new_windows)
        state = replace(state, logged=state.logged + tuple(new_slices) + tuple(new_windows))
    return state


def with_pixels(backend: StudyBackend, state: ReaderState, out: dict, view: CaseView | None
                ) -> tuple[ReaderState, dict]:
    """Add the rendered case to an event's outputs; call after the session is closed.

    ``view`` comes from crud's reader-checked lookups, so its file is this reader's.
    """
    if view is None:
        return state, out
    array = backend.stimulus(stimulus_path(backend.media_dir, view.public_id, view.kind), view.kind)
    out = dict(out)
    if view.kind == "volume":
        pixels = render_stimulus(array, kind="volume", index=state.slice, width=state.width, level=state.level)
        out["slice"] = {"value": state.slice, "maximum": array.shape[0] - 1}
        out["slice_text"] = f"Slice {state.slice + 1} of {array.shape[0]}"
    else:
        pixels = render_stimulus(array, kind="image2d", zoom=state.zoom, center=state.center)
        h, w = array.shape[:2]
        top, left, ch, cw = crop_window((h, w), state.zoom, state.center)
        # Keep the centre actually shown, so the next click maps onto the right spot.
        state = replace(state, center=((left + cw / 2) / w, (top + ch / 2) / h), size=(h, w))
    out["image"] = Shown(pixels, view.public_id)
    return state, out
