"""Procedural abdominal CT phantom for the demo mode (no data needed)."""

from core.phantom._layout import HU, LABEL_NAMES
from core.phantom.abdomen import DEFAULT_SHAPE, PHANTOM_NAME, PHANTOM_VERSION, make_abdominal_phantom

__all__ = ["DEFAULT_SHAPE", "HU", "LABEL_NAMES", "PHANTOM_NAME", "PHANTOM_VERSION", "make_abdominal_phantom"]
