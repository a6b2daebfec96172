"""The in-memory volume every part of the project shares.

Axis order (used everywhere in this project)
-------------------------------------------
``Volume.array`` has shape ``(z, y, x)``:

* ``z``: axial slice index, from **inferior to superior** (slice 0 is the lowest);
* ``y``: image row, from **anterior to posterior** (row 0 is the front of the body);
* ``x``: image column, from **patient right to patient left** (column 0 is the patient's right).

This is DICOM's LPS patient frame with the axes reversed for C order, so
``array[k]`` is an axial slice as a radiologist displays it (anterior up, patient
right on the viewer's left). ``spacing`` is in millimetres in the same ``(z, y, x)``
order. ``affine`` maps a voxel index ``(x, y, z, 1)`` (note: NIfTI order, the reverse
of the array's) to RAS+ world millimetres, like a NIfTI affine, so it can be written
back with nibabel as ``Nifti1Image(array.transpose(2, 1, 0), affine)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Modality = Literal["CT", "MR", "OT"]
AXIS_ORDER = ("z", "y", "x")


@dataclass
class LabelMap:
    """A segmentation on a volume's grid.

    Attributes:
        array: ``(z, y, x)`` uint16 label ids, 0 = background.
        names: label id -> name (TotalSegmentator / KiTS names where known).
    """

    array: np.ndarray
    names: dict[int, str] = field(default_factory=dict)

    def present(self) -> dict[int, str]:
        """Labels that occur in the array, with names (``label_<id>`` where unnamed)."""
        ids = [int(i) for i in np.unique(self.array) if i != 0]
        return {i: self.names.get(i, f"label_{i}") for i in ids}

    def mask(self, label: int | str) -> np.ndarray:
        """Boolean ``(z, y, x)`` mask of one label given by id or name."""
        if isinstance(label, str):
            ids = [i for i, n in self.names.items() if n == label]
            if not ids:
                from core.errors import InputError

                raise InputError(f"no label named {label!r}; known labels: {sorted(self.names.values())}")
            label = ids[0]
        return self.array == label


@dataclass
class Volume:
    """A 3D image in the project's canonical orientation.

    Attributes:
        array: ``(z, y, x)`` float32; Hounsfield units for CT, raw intensities otherwise.
        spacing: voxel size in mm, ``(z, y, x)``.
        affine: 4x4, voxel ``(x, y, z, 1)`` -> RAS+ mm (NIfTI convention).
        modality: ``"CT"`` (array is HU), ``"MR"`` or ``"OT"`` (other / unknown).
        labels: optional segmentation on the same grid.
        meta: source metadata kept aside (file paths, DICOM UIDs, series description ...).
            Never needed to interpret ``array``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    modality: Modality = "CT"
    labels: LabelMap | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (z, y, x), got shape {self.array.shape}")
        if self.labels is not None and self.labels.array.shape != self.array.shape:
            raise ValueError(
                f"labels shape {self.labels.array.shape} differs from the image shape {self.array.shape}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    def world_mm(self, z: float, y: float, x: float) -> np.ndarray:
        """RAS+ position in mm of voxel ``(z, y, x)``."""
        return (self.affine @ np.array([x, y, z, 1.0]))[:3]
