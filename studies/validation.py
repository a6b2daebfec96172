"""Checks on what owners and readers send, and the errors the study engine raises.

Pure functions, used by :mod:`studies.crud` before anything touches the database.
Every check raises ``ValueError`` naming the bad value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from studies.models import LIKERT_LEVELS, TRUTHS

DEFAULT_WINDOW_PRESETS = {  # OHIF windowLevelPresets.js, HU
    "Soft tissue": {"width": 400.0, "level": 40.0},
    "Lung": {"width": 1500.0, "level": -600.0},
    "Liver": {"width": 150.0, "level": 90.0},
    "Bone": {"width": 2500.0, "level": 480.0},
    "Brain": {"width": 80.0, "level": 40.0},
}
MAX_COMMENT_CHARS = 4000


class NotAssignedError(PermissionError):
    """A reader asked for, or rated, a case outside their own sequence."""


class StudyLockedError(PermissionError):
    """The study is locked: no new readers, no ratings."""


class ChangeNotAllowedError(PermissionError):
    """A different answer for an already rated case, in a study that forbids changes."""


class OutOfOrderError(ValueError):
    """A new rating for a case that is not the reader's next unanswered one."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_study_options(*, name: str, tost_margin: float, confidence_levels: int,
                        window_presets: Mapping[str, Mapping[str, float]] | None
                        ) -> dict[str, dict[str, float]]:
    """Validate owner settings of a new study.

    Args:
        name: study name, not blank.
        tost_margin: equivalence margin around 0.5, in (0, 0.5).
        confidence_levels: 2..7.
        window_presets: name -> ``{"width", "level"}`` HU, or None for OHIF's presets.

    Returns:
        The presets as plain floats.
    """
    if not name.strip():
        raise ValueError("study name must not be empty")
    if not 0.0 < tost_margin < 0.5:
        raise ValueError(f"tost_margin must be in (0, 0.5), got {tost_margin}")
    if not _is_int(confidence_levels) or not 2 <= confidence_levels <= 7:
        raise ValueError(f"confidence_levels must be an int between 2 and 7, got {confidence_levels!r}")
    presets = {}
    for key, value in (window_presets or DEFAULT_WINDOW_PRESETS).items():
        window = check_window(value)
        if not isinstance(window, dict):
            raise ValueError(f"window preset {key!r} must be {{'width', 'level'}}, got {value!r}")
        presets[str(key)] = window
    return presets


def check_window(window: object, presets: Mapping[str, object] | None = None) -> str | dict[str, float]:
    """A preset name (when ``presets`` is given) or ``{"width" > 0, "level"}`` in HU."""
    if isinstance(window, str) and presets is not None:
        if window not in presets:
            raise ValueError(f"unknown window preset {window!r}; presets: {sorted(presets)}")
        return window
    if isinstance(window, Mapping):
        width, level = window.get("width"), window.get("level")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                      for v in (width, level))
        if numbers and width > 0:
            return {"width": float(width), "level": float(level)}
    raise ValueError(f"window must be a preset name or {{'width' > 0, 'level'}} in HU, got {window!r}")


def check_answer(*, call: str, confidence: int, likert: int | None, comment: str,
                 confidence_levels: int) -> dict:
    """Validate a reader's answer; returns it as the dict stored in the rating."""
    if call not in TRUTHS:
        raise ValueError(f"call must be one of {TRUTHS}, got {call!r}")
    if not _is_int(confidence) or not 1 <= confidence <= confidence_levels:
        raise ValueError(f"confidence must be an int in 1..{confidence_levels}, got {confidence!r}")
    if likert is not None and (not _is_int(likert) or likert not in LIKERT_LEVELS):
        raise ValueError(f"likert must be one of {LIKERT_LEVELS} or None, got {likert!r}")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        length = len(comment) if isinstance(comment, str) else "?"
        raise ValueError(f"comment must be a str of at most {MAX_COMMENT_CHARS} characters, got "
                         f"{type(comment).__name__} of length {length}")
    return {"call": call, "confidence": confidence, "likert": likert, "comment": comment}


def merge_telemetry(*, slices_before: Sequence[int], windows_before: Sequence, slices: Sequence[int],
                    windows: Sequence, n_slices: int, presets: Mapping[str, object]) -> tuple[list, list]:
    """Union of recorded and new telemetry, after validating the new part.

    Args:
        slices_before: slice indices already recorded.
        windows_before: windows already recorded.
        slices: new slice indices, each in ``[0, n_slices)``.
        windows: new preset names or ``{"width", "level"}`` windows.
        n_slices: slices of the study's volumes (0 for 2D studies: no slice is valid).
        presets: the study's window presets.

    Returns:
        ``(sorted unique slices, windows in first-use order without repeats)``.
    """
    for s in slices:
        if not _is_int(s) or not 0 <= s < n_slices:
            raise ValueError(f"slice index must be an int in [0, {n_slices}), got {s!r}")
    merged = list(windows_before)
    for window in windows:
        clean = check_window(window, presets)
        if clean not in merged:
            merged.append(clean)
    return sorted(set(slices_before) | set(slices)), merged
