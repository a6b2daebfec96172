"""Seam visibility of tiled images: gradients across tile boundaries vs inside tiles.

``seam_ratio`` is the mean absolute difference between the two pixels on either side of
every tile boundary (vertical and horizontal boundary lines) divided by the mean absolute
difference between neighbouring pixels everywhere else (``margin`` pixels away from any
boundary). An image with no seams scores about 1.0; visible seams score above 1 (a hard
edge at every boundary) and over-smoothed boundaries below 1. Grey levels are the mean of
R, G and B, in 0..255.

A decoder that upsamples latents (4x for our H&E autoencoder) leaves a faint texture with
that period: differences between the last pixel of one latent cell and the first of the next
are a little larger than inside a cell, and window edges always fall on cell edges. With
``period`` set to the upsampling factor, the interior reference uses only pairs at the same
phase (cell edges), so a seam-free latent image scores 1.0 rather than the decoder's own
cell-edge excess.

Where the boundaries are depends on how the image was tiled: ``tile_boundaries`` lists
the window edges of ``core.tiling.Splitter`` (with ``overlap = 0``: the tile grid of naive
tiling). Measure before lossy compression: JPEG blocks (8 px) line up with tile edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import InputError


@dataclass(frozen=True)
class SeamScore:
    """Result of ``seam_ratio``.

    Attributes:
        ratio: boundary mean / interior mean (1.0 = no seams).
        boundary: mean absolute grey difference across boundary lines.
        interior: mean absolute grey difference between neighbours away from boundaries.
        n_boundary: number of pixel pairs across boundaries. n_interior: pairs inside tiles.
    """

    ratio: float
    boundary: float
    interior: float
    n_boundary: int
    n_interior: int


def tile_boundaries(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Positions ``b`` (0 < b < length) where a window of ``Splitter(tile, overlap)`` starts or ends.

    A boundary ``b`` lies between pixels ``b - 1`` and ``b``.
    """
    from core.tiling import window_starts

    starts = window_starts(length, tile, overlap)
    edges = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < length}
    return sorted(edges)


def _grey(image: np.ndarray) -> np.ndarray:
    if (
        not isinstance(image, np.ndarray)
        or image.ndim not in (2, 3)
        or (image.ndim == 3 and image.shape[-1] != 3)
    ):
        raise InputError(
            f"image must be (h, w) or (h, w, 3), got {getattr(image, 'shape', type(image).__name__)}"
        )
    grey = image.astype(np.float32)
    return grey.mean(axis=-1) if grey.ndim == 3 else grey


def seam_ratio(
    image: np.ndarray, rows: list[int], cols: list[int], *, margin: int = 2, period: int = 1
) -> SeamScore:
    """Seam visibility of ``image`` for horizontal boundary lines ``rows`` and vertical ``cols``.

    Args:
        image: ``(h, w, 3)`` or ``(h, w)`` image (uint8 or float on a 0..255 scale).
        rows: boundaries between pixel rows ``b - 1`` and ``b`` (``tile_boundaries``).
        cols: boundaries between pixel columns ``b - 1`` and ``b``.
        margin: neighbour pairs within this many pixels of a boundary count as neither.
        period: interior pairs only at positions ``b`` with ``b % period == 0`` (the phase of
            the boundaries, which must all be multiples of it); 1 = every pair.

    Raises:
        InputError: no boundaries, a boundary outside the image, boundaries off the period,
            or no interior pairs.
    """
    g = _grey(image)
    h, w = g.shape
    if not rows and not cols:
        raise InputError("no tile boundaries given: the image is a single tile")
    if any(not 0 < b < h for b in rows) or any(not 0 < b < w for b in cols):
        raise InputError(f"boundaries must lie inside the {h}x{w} image, got rows {rows}, cols {cols}")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise InputError(f"period must be a positive number of pixels, got {period!r}")
    if any(b % period for b in [*rows, *cols]):
        raise InputError(
            f"with period {period} every boundary must be a multiple of it, got rows {rows}, cols {cols}"
        )
    dx = np.abs(np.diff(g, axis=1))  # (h, w - 1): pair between column j and j + 1
    dy = np.abs(np.diff(g, axis=0))  # (h - 1, w)

    def split(length: int, bounds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pair = np.arange(length - 1)  # pair j sits between pixels j and j + 1, i.e. at boundary j + 1
        at = np.isin(pair + 1, bounds)
        dist = np.min(np.abs((pair + 1)[:, None] - np.asarray(bounds or [-(10**9)])[None, :]), axis=1)
        return at, (dist > margin) & ((pair + 1) % period == 0)

    at_c, far_c = split(w, cols)
    at_r, far_r = split(h, rows)
    boundary = np.concatenate([dx[:, at_c].ravel(), dy[at_r, :].ravel()])
    interior = np.concatenate([dx[:, far_c].ravel(), dy[far_r, :].ravel()])
    if interior.size == 0 or boundary.size == 0:
        raise InputError("the tiles are too small to compare boundaries with their insides")
    b, i = float(boundary.mean()), float(interior.mean())
    return SeamScore(
        ratio=b / max(i, 1e-12),
        boundary=b,
        interior=i,
        n_boundary=int(boundary.size),
        n_interior=int(interior.size),
    )
