"""Square crops around a mask, scaled to and from the model's resolution (numpy only).

Shared by training (``core.training.data``) and sampling (``core.pipelines.ct_inpaint``) so
the model sees crops built by exactly the same rule in both.

The rule: a crop is a square of ``size = max(resolution, ceil(extent / fill))`` slice pixels,
where ``extent`` is the longer side of the mask's bounding box and ``fill`` the fraction of
the crop the mask may span (0.5 leaves a quarter of the crop as context on each side).
Small masks (lesions) therefore get native-resolution crops (``size == resolution``, no
resampling at all); larger ones (organs) get a larger crop that is downsampled
(anti-aliased) into the model and its result upsampled (bicubic) back. The crop is moved,
not shrunk, to stay inside the slice; a slice smaller than the crop is edge-padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Pixels of the model-resolution mask counted as unknown when a resampled mask covers
# more than this fraction of them: conservative, so "known" input pixels really are known.
_MASK_COVERAGE = 0.02


@dataclass(frozen=True)
class CropBox:
    """A square region of a slice in slice pixels; may extend past the slice (padded).

    Attributes:
        row0: top row (may be negative when the slice is smaller than the crop).
        col0: left column.
        size: side in slice pixels.
    """

    row0: int
    col0: int
    size: int

    def as_dict(self) -> dict[str, int]:
        return {"row0": self.row0, "col0": self.col0, "size": self.size}


def crop_box(
    mask_bbox: tuple[int, int, int, int],
    image_shape: tuple[int, int],
    *,
    resolution: int,
    fill: float = 0.5,
    offset: tuple[float, float] = (0.0, 0.0),
) -> CropBox:
    """The crop for a mask with bounding box ``(row0, row1, col0, col1)`` (end-exclusive).

    Args:
        mask_bbox: the mask's bounding box in slice pixels.
        image_shape: ``(rows, cols)`` of the slice.
        resolution: the model's input side in pixels (the smallest crop).
        fill: largest fraction of the crop side the mask's extent may take, in (0, 1].
        offset: shift of the crop centre from the mask centre, in crop sides (training jitter).
    """
    if not 0 < fill <= 1:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    r0, r1, c0, c1 = mask_bbox
    size = max(int(resolution), math.ceil(max(r1 - r0, c1 - c0) / fill))
    starts = []
    for lo, hi, n, off in ((r0, r1, image_shape[0], offset[0]), (c0, c1, image_shape[1], offset[1])):
        start = round((lo + hi) / 2 + off * size - size / 2)
        # Keep the crop inside the slice when it fits (more real context than padding),
        # but never so far that the mask leaves it.
        start = (n - size) // 2 if n <= size else min(max(start, 0), n - size)
        start = min(max(start, hi - size), lo)
        starts.append(int(start))
    return CropBox(starts[0], starts[1], int(size))


def extract(image: np.ndarray, box: CropBox, *, fill_value: float | None = None) -> np.ndarray:
    """``(size, size)`` crop of a 2D array; outside the slice: edge values, or ``fill_value``."""
    rows, cols = image.shape
    pad = (
        max(0, -box.row0),
        max(0, box.row0 + box.size - rows),
        max(0, -box.col0),
        max(0, box.col0 + box.size - cols),
    )
    src = image[max(0, box.row0) : box.row0 + box.size, max(0, box.col0) : box.col0 + box.size]
    if any(pad):
        widths = ((pad[0], pad[1]), (pad[2], pad[3]))
        src = (
            np.pad(src, widths, mode="edge")
            if fill_value is None
            else np.pad(src, widths, constant_values=fill_value)
        )
    return np.ascontiguousarray(src)


def paste_region(
    box: CropBox, image_shape: tuple[int, int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """``(slice_index, crop_index)``: where the in-slice part of a crop goes, and which part of the crop it is."""
    r_lo, c_lo = max(0, box.row0), max(0, box.col0)
    r_hi, c_hi = min(image_shape[0], box.row0 + box.size), min(image_shape[1], box.col0 + box.size)
    dst = (slice(r_lo, r_hi), slice(c_lo, c_hi))
    src = (slice(r_lo - box.row0, r_hi - box.row0), slice(c_lo - box.col0, c_hi - box.col0))
    return dst, src


def image_to_model(crop: np.ndarray, resolution: int) -> np.ndarray:
    """Crop ``(size, size)`` -> ``(resolution, resolution)`` float32; anti-aliased, identity at native size."""
    if crop.shape[0] == resolution:
        return crop.astype(np.float32, copy=True)
    from skimage.transform import resize

    return resize(
        crop.astype(np.float32), (resolution, resolution), order=1, anti_aliasing=True, preserve_range=True
    ).astype(np.float32)


def mask_to_model(mask_crop: np.ndarray, resolution: int) -> np.ndarray:
    """Bool crop mask -> model grid; a model pixel is masked when any of its area is (see ``_MASK_COVERAGE``)."""
    if mask_crop.shape[0] == resolution:
        return mask_crop.astype(bool, copy=True)
    from skimage.transform import resize

    soft = resize(
        mask_crop.astype(np.float32),
        (resolution, resolution),
        order=1,
        anti_aliasing=True,
        preserve_range=True,
    )
    return soft > _MASK_COVERAGE


def model_to_image(x: np.ndarray, size: int) -> np.ndarray:
    """Model output ``(..., resolution, resolution)`` -> ``(..., size, size)``; bicubic, identity at native size."""
    if x.shape[-1] == size:
        return x.astype(np.float32, copy=True)
    from skimage.transform import resize

    lead = x.shape[:-2]
    return resize(
        x.astype(np.float32), (*lead, size, size), order=3, anti_aliasing=False, preserve_range=True
    ).astype(np.float32)
