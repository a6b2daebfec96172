"""Reader page viewing events: CT slices and windows, 2D zoom. Telemetry is written as it happens.

Every event re-checks the token and the case (:func:`reviewer_app.study_reader.current`),
records new slices and windows inside its short session, and renders after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from core.errors import InputError
from reviewer_app.study_backend import ZOOMS, StudyBackend
from reviewer_app.study_reader import ReaderState, StudyInfo, current, log_view, reader_safe, with_pixels

MOVES = {"up": 1, "down": -1, "pageup": 10, "pagedown": -10}  # up = towards the head (z grows upwards)


def _update(backend: StudyBackend, state: ReaderState,
            change: Callable[[StudyInfo, ReaderState], ReaderState]) -> tuple[ReaderState, dict]:
    with backend.session() as session:
        reader_id, info, view = current(session, state)
        state = log_view(session, reader_id, info, view, change(info, state))
    return with_pixels(backend, state, {}, view)


@reader_safe
def move(backend: StudyBackend, state: ReaderState, how: str) -> tuple[ReaderState, dict]:
    """Keyboard or wheel: up, down, pageup, pagedown, home, end."""
    if state.kind != "volume" or state.public_id is None:
        return state, {}
    if how not in (*MOVES, "home", "end"):
        raise InputError(f"unknown move {how!r}")

    def change(info: StudyInfo, s: ReaderState) -> ReaderState:
        index = {"home": 0, "end": info.n_slices - 1}.get(how, s.slice + MOVES.get(how, 0))
        return replace(s, slice=index)

    return _update(backend, state, change)


@reader_safe
def set_slice(backend: StudyBackend, state: ReaderState, index) -> tuple[ReaderState, dict]:
    """The slice slider (0-based)."""
    if state.kind != "volume" or index is None:
        return state, {}
    return _update(backend, state, lambda info, s: replace(s, slice=round(float(index))))


@reader_safe
def set_preset(backend: StudyBackend, state: ReaderState, name: str | int) -> tuple[ReaderState, dict]:
    """A window preset by name, or by its 1-based number (keys 1-5)."""
    if state.kind != "volume":
        return state, {}
    chosen: dict = {}

    def change(info: StudyInfo, s: ReaderState) -> ReaderState:
        names = list(info.presets)
        key = names[name - 1] if isinstance(name, int) and 1 <= name <= len(names) else name
        if key not in info.presets:
            raise InputError(f"Unknown window preset {name!r}.")
        chosen.update(name=key, **info.presets[key])
        return replace(s, preset=key, width=float(info.presets[key]["width"]), level=float(info.presets[key]["level"]))

    state, out = _update(backend, state, change)
    return state, {**out, "preset": chosen["name"], "width": chosen["width"], "level": chosen["level"]}


@reader_safe
def set_window(backend: StudyBackend, state: ReaderState, width, level) -> tuple[ReaderState, dict]:
    """Free window width/level (HU) from the sliders."""
    if state.kind != "volume" or width is None or level is None:
        return state, {}
    if not float(width) > 0:
        raise InputError(f"Window width must be > 0 HU, got {width}.")
    state, out = _update(backend, state, lambda info, s: replace(s, preset=None, width=float(width),
                                                                 level=float(level)))
    return state, {**out, "preset": None}


def _zoom(backend: StudyBackend, state: ReaderState, zoom: int) -> tuple[ReaderState, dict]:
    if zoom not in ZOOMS:
        raise InputError(f"Zoom must be one of {ZOOMS}.")
    center = (0.5, 0.5) if zoom == 1 else state.center
    state, out = _update(backend, state, lambda info, s: replace(s, zoom=zoom, center=center))
    return state, {**out, "zoom": zoom}


@reader_safe
def set_zoom(backend: StudyBackend, state: ReaderState, zoom) -> tuple[ReaderState, dict]:
    """The zoom radio (2D)."""
    if state.kind != "image2d" or zoom is None:
        return state, {}
    return _zoom(backend, state, int(zoom))


@reader_safe
def zoom_step(backend: StudyBackend, state: ReaderState, step: int) -> tuple[ReaderState, dict]:
    """Keys + and -: one magnification step in or out around the current centre."""
    if state.kind != "image2d":
        return state, {}
    return _zoom(backend, state, ZOOMS[min(max(ZOOMS.index(state.zoom) + step, 0), len(ZOOMS) - 1)])


@reader_safe
def click(backend: StudyBackend, state: ReaderState, col: float, row: float) -> tuple[ReaderState, dict]:
    """A click on the 2D image at pixel ``(col, row)``: centre there and magnify one step (at most 8x)."""
    if state.kind != "image2d" or state.public_id is None:
        return state, {}
    h, w = state.size
    cx, cy = state.center
    # The shown image is the crop scaled to the full size: map the click back into the whole image.
    x = cx + (float(col) / w - 0.5) / state.zoom
    y = cy + (float(row) / h - 0.5) / state.zoom
    state = replace(state, center=(min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)))
    return _zoom(backend, state, ZOOMS[min(ZOOMS.index(state.zoom) + 1, len(ZOOMS) - 1)])
