"""Reading medical images: DICOM, NIfTI, label maps and whole-slide images.

``load_volume`` is the entry point for 3D images; see ``core.io.volume`` for the
``(z, y, x)`` axis order used everywhere.
"""

from core.io.load import load_volume
from core.io.volume import LabelMap, Volume

__all__ = ["LabelMap", "Volume", "load_volume"]
