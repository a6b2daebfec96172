"""A library of lesion outlines that users place on a slice by clicking.

Outlines come from two places: procedural shapes that are always there (round and
oval lesions, lobulated masses; drawn at 1 mm pixels), and tumour cross-sections cut
from KiTS-style label maps (``segmentation.nii.gz``, tumour label 2) found in the
user's data. Each outline is a ``core.masks.TumorShape``; ``stamp`` scales it to a
diameter in mm on the target slice's pixel grid, rotates it and centres it at a point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InputError
from core.masks import TumorShape, blob_mask, ellipse_mask, extract_tumor_shapes, warp_shape

PROCEDURAL_MM = 1.0  # pixel size of the procedural outlines


def procedural_shapes() -> dict[str, TumorShape]:
    """Built-in outlines, 40 px (= 40 mm at 1 mm) across before scaling."""
    side, c = 44, 21.5
    shapes = {
        "Round lesion": ellipse_mask((side, side), (c, c), (20, 20)),
        "Oval lesion (3:2)": ellipse_mask((side, side), (c, c), (20, 13.3)),
    }
    for seed in (1, 2, 3):
        shapes[f"Lobulated mass {seed}"] = blob_mask((side, side), (c, c), 16.0, np.random.default_rng(seed),
                                                    irregularity=0.35)
    return {name: TumorShape(m, (PROCEDURAL_MM, PROCEDURAL_MM), f"procedural:{name}") for name, m in shapes.items()}


def shapes_from_label_maps(paths: list[Path], *, label: int = 2, per_case: int = 2) -> dict[str, TumorShape]:
    """Tumour cross-sections from KiTS-style label maps (largest slices of each component)."""
    from core.io.nifti import read_nifti_ijk
    from core.io.orient import reorient, spacing_zyx

    out: dict[str, TumorShape] = {}
    for path in paths:
        data, affine = read_nifti_ijk(path, what="label map")
        labels, canon = reorient(data, affine)
        shapes = extract_tumor_shapes(np.asarray(labels), spacing_zyx(canon), label=label, source=str(path),
                                      per_component=1)
        for i, shape in enumerate(shapes[:per_case]):
            out[f"{path.parent.name} tumour {i + 1}"] = shape
    return out


def stamp(
    shape: TumorShape,
    *,
    image_shape: tuple[int, int],
    spacing: tuple[float, float],
    center: tuple[float, float],
    diameter_mm: float,
    angle_deg: float = 0.0,
) -> np.ndarray:
    """The outline scaled to ``diameter_mm`` (its longest side), rotated and centred at ``center``.

    Args:
        image_shape: (rows, cols) of the target slice.
        spacing: (row, col) pixel size of the target slice in mm.
        center: (row, col) in target pixels.
        diameter_mm: longest extent of the placed outline.
        angle_deg: counter-clockwise rotation.

    Returns:
        (rows, cols) bool; parts falling outside the slice are cut off.
    """
    if diameter_mm <= 0:
        raise InputError(f"the lesion diameter must be > 0 mm, got {diameter_mm}")
    extent_mm = max(shape.mask.shape) * shape.spacing[0]
    scale = diameter_mm / extent_mm * shape.spacing[0] / spacing[0]
    warped = warp_shape(shape.mask, scale=scale, angle=np.deg2rad(angle_deg))
    h, w = warped.shape
    r0, c0 = int(round(center[0] - h / 2)), int(round(center[1] - w / 2))
    out = np.zeros(image_shape, bool)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + h, image_shape[0]), min(c0 + w, image_shape[1])
    if rs >= re or cs >= ce:
        raise InputError("the lesion would fall outside the slice; click inside the image")
    out[rs:re, cs:ce] = warped[rs - r0 : re - r0, cs - c0 : ce - c0]
    return out
