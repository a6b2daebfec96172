"""2D inpainting masks: from label maps, boxes, random shapes, transplanted tumours; validation.

Every mask here is a boolean ``(rows, cols)`` array on an axial slice's grid
(``Volume.array[k]``), ``True`` = the region to repaint. Random masks take a
``numpy.random.Generator`` so a seed reproduces them. Pure functions do the work; the
small callable classes hold a configuration and are called with ``(shape, rng, ...)``
(used by the training data, the CLI and the app alike).

Example::

    rng = np.random.default_rng(0)
    region = organ_mask(volume.labels, "liver", slice_index=40)
    mask = RandomBlob(radius_px=(8, 20))(region.shape, rng, region=region)
    mask = validate_mask(mask, image_shape=region.shape, min_context_px=16)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from core.errors import InputError
from core.io.volume import LabelMap

# Label names treated as lesions (substring match, case-insensitive).
LESION_WORDS = ("tumor", "tumour", "lesion", "gtv", "mass", "nodule", "metasta")


# ----------------------------------------------------------------------------- label maps
def organ_mask(
    labels: LabelMap, names: str | int | tuple[str | int, ...], *, slice_index: int | None = None
) -> np.ndarray:
    """Union of the given labels (ids or names) as a bool mask.

    Args:
        labels: label map ``(z, y, x)``.
        names: one label or several, by id or name.
        slice_index: axial slice to return; ``None`` returns the whole ``(z, y, x)`` mask.
    """
    names = names if isinstance(names, tuple) else (names,)
    out = np.zeros(labels.array.shape, bool)
    for name in names:
        out |= labels.mask(name)
    return out if slice_index is None else out[slice_index]


def lesion_label_ids(labels: LabelMap, lesion_labels: tuple[str, ...] = ()) -> list[int]:
    """Ids of the lesion labels: those named in ``lesion_labels``, else names containing a lesion word."""
    present = labels.present()
    if lesion_labels:
        return [i for i, n in present.items() if n in lesion_labels or str(i) in lesion_labels]
    return [i for i, n in present.items() if any(w in n.lower() for w in LESION_WORDS)]


def tumor_mask(
    labels: LabelMap, *, lesion_labels: tuple[str, ...] = (), slice_index: int | None = None
) -> np.ndarray:
    """Union of the lesion labels (see ``lesion_label_ids``); all False when there are none."""
    ids = lesion_label_ids(labels, lesion_labels)
    arr = labels.array if slice_index is None else labels.array[slice_index]
    return np.isin(arr, ids) if ids else np.zeros(arr.shape, bool)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` of the True pixels, end-exclusive. Raises on an empty mask."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if rows.size == 0:
        raise InputError("the mask is empty: paint at least one pixel")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def bbox_mask(mask: np.ndarray, margin_px: int = 0) -> np.ndarray:
    """The bounding box of ``mask`` grown by ``margin_px`` on every side (clipped to the image)."""
    r0, r1, c0, c1 = bbox(mask)
    out = np.zeros(mask.shape, bool)
    out[max(0, r0 - margin_px) : r1 + margin_px, max(0, c0 - margin_px) : c1 + margin_px] = True
    return out


def body_mask(image_hu: np.ndarray, *, threshold_hu: float = -400.0) -> np.ndarray:
    """Pixels inside the body outline: above ``threshold_hu``, largest component, holes filled."""
    from scipy import ndimage

    fg = image_hu > threshold_hu
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum(fg, lab, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


# ----------------------------------------------------------------------------- random shapes
def ellipse_mask(
    shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float], angle: float = 0.0
) -> np.ndarray:
    """Filled ellipse; ``center``/``radii`` in pixels (row, col), ``angle`` in radians."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = rr - center[0], cc - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dy + sin * dx, -sin * dy + cos * dx
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0


def blob_mask(
    shape: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    rng: np.random.Generator,
    *,
    irregularity: float = 0.25,
) -> np.ndarray:
    """A star-shaped blob: radius(theta) = radius * (1 + sum of a few random Fourier modes).

    Args:
        irregularity: relative amplitude of the boundary's wobble (0 = circle).
    """
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = rr - center[0], cc - center[1]
    theta, dist = np.arctan2(dy, dx), np.hypot(dy, dx)
    wobble = np.zeros_like(theta)
    for k in range(2, 6):
        wobble += rng.normal(0, irregularity / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return dist <= radius * np.clip(1.0 + wobble, 0.4, 1.8)


def stroke_mask(shape: tuple[int, int], points: np.ndarray, width_px: float) -> np.ndarray:
    """A brush stroke: every pixel within ``width_px / 2`` of the polyline through ``points`` (n, 2) (row, col)."""
    from scipy import ndimage
    from skimage.draw import line

    path = np.zeros(shape, bool)
    pts = np.round(np.asarray(points, float)).astype(int)
    pts[:, 0] = np.clip(pts[:, 0], 0, shape[0] - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, shape[1] - 1)
    if len(pts) == 1:
        path[pts[0, 0], pts[0, 1]] = True
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:]):
        path[line(r0, c0, r1, c1)] = True
    return ndimage.distance_transform_edt(~path) <= width_px / 2.0


def place_in_region(
    shape_mask: np.ndarray, region: np.ndarray, rng: np.random.Generator, *, min_overlap: float = 1.0
) -> np.ndarray | None:
    """Put ``shape_mask`` (a small bool stamp) at a random position where it lies inside ``region``.

    Args:
        shape_mask: ``(h, w)`` stamp.
        region: ``(rows, cols)`` where the stamp may go.
        min_overlap: fraction of the stamp that must fall inside ``region`` (1 = entirely).

    Returns:
        A ``region``-shaped bool mask, or None when the stamp fits nowhere.
    """
    from scipy.signal import fftconvolve

    h, w = shape_mask.shape
    if h > region.shape[0] or w > region.shape[1] or not shape_mask.any():
        return None
    # Correlation: how many stamp pixels land in the region for each top-left corner.
    counts = fftconvolve(region.astype(np.float32), shape_mask[::-1, ::-1].astype(np.float32), mode="valid")
    ok = np.argwhere(counts >= min_overlap * shape_mask.sum() - 0.5)
    if ok.size == 0:
        return None
    r, c = ok[rng.integers(len(ok))]
    out = np.zeros(region.shape, bool)
    out[r : r + h, c : c + w] = shape_mask
    return out


def warp_shape(shape_mask: np.ndarray, *, scale: float, angle: float, flip: bool = False) -> np.ndarray:
    """Scale (isotropic), rotate (radians) and optionally mirror a bool stamp; cropped to its bbox."""
    from scipy import ndimage

    src = shape_mask[:, ::-1] if flip else shape_mask
    h, w = src.shape
    side = int(np.ceil(np.hypot(h, w) * scale)) + 2
    cos, sin = np.cos(angle), np.sin(angle)
    # output (row, col) -> input (row, col): rotate about the centres, then shrink by scale.
    matrix = np.array([[cos, -sin], [sin, cos]]) / scale
    out_c, in_c = np.array([side / 2, side / 2]), np.array([h / 2, w / 2])
    warped = (
        ndimage.affine_transform(
            src.astype(np.float32), matrix, offset=in_c - matrix @ out_c, output_shape=(side, side), order=1
        )
        > 0.5
    )
    if not warped.any():
        warped[side // 2, side // 2] = True
    r0, r1, c0, c1 = bbox(warped)
    return warped[r0:r1, c0:c1]


# ----------------------------------------------------------------------------- tumour shapes
@dataclass(frozen=True)
class TumorShape:
    """A 2D tumour outline cut from a label map: bool ``mask`` (h, w) with pixel size ``spacing`` (row, col) mm."""

    mask: np.ndarray
    spacing: tuple[float, float]
    source: str


def extract_tumor_shapes(
    label_array: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    *,
    label: int = 2,
    source: str = "",
    min_pixels: int = 20,
    per_component: int = 3,
) -> list[TumorShape]:
    """Axial cross-sections of each connected tumour component (KiTS: ``label=2``).

    Args:
        label_array: ``(z, y, x)`` integer labels.
        spacing_zyx: voxel size in mm.
        label: the tumour label id.
        min_pixels: smaller cross-sections are skipped.
        per_component: how many slices per component (evenly spaced through it, largest included).
    """
    from scipy import ndimage

    hit = label_array == label
    if not hit.any():
        return []
    # Label only the bounding box of the tumour voxels (a KiTS map is 512 x 512 x 600).
    extent = [np.nonzero(hit.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
    box = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in extent)
    comps, n = ndimage.label(hit[box])
    shapes = []
    for i, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is None:
            continue
        comp = comps[sl] == i
        areas = comp.sum((1, 2))
        order = [int(np.argmax(areas))] + [
            int(k) for k in np.linspace(0, len(areas) - 1, per_component + 1)[1:-1]
        ]
        for k in dict.fromkeys(order):
            if areas[k] >= min_pixels:
                r0, r1, c0, c1 = bbox(comp[k])
                shapes.append(
                    TumorShape(
                        comp[k][r0:r1, c0:c1].copy(), (spacing_zyx[1], spacing_zyx[2]), f"{source}#{i}@{k}"
                    )
                )
    return shapes


def transplant_shape(
    shape: TumorShape,
    region: np.ndarray,
    spacing: tuple[float, float],
    rng: np.random.Generator,
    *,
    scale_range: tuple[float, float] = (0.6, 1.4),
    tries: int = 4,
) -> np.ndarray | None:
    """Place a tumour outline, randomly scaled (in mm), rotated and mirrored, entirely inside ``region``.

    Args:
        shape: outline with its own pixel size.
        region: ``(rows, cols)`` plausible area on the target slice (an organ, the body).
        spacing: target pixel size (row, col) mm.
        scale_range: physical size factor range; halved on each failed try.

    Returns:
        The placed mask, or None when no scaled copy fits.
    """
    physical = shape.spacing[0] / spacing[0]  # source px -> target px
    factor = rng.uniform(*scale_range)
    for _ in range(tries):
        stamp = warp_shape(
            shape.mask, scale=physical * factor, angle=rng.uniform(0, 2 * np.pi), flip=bool(rng.integers(2))
        )
        placed = place_in_region(stamp, region, rng)
        if placed is not None:
            return placed
        factor /= 2
    return None


# ----------------------------------------------------------------------------- callable classes
@dataclass(frozen=True)
class RandomEllipse:
    """Random ellipse with semi-axes drawn from ``radius_px``, placed inside ``region`` when given."""

    radius_px: tuple[float, float] = (4.0, 20.0)

    def __call__(
        self, shape: tuple[int, int], rng: np.random.Generator, region: np.ndarray | None = None
    ) -> np.ndarray | None:
        a, b = rng.uniform(*self.radius_px, size=2)
        side = int(2 * max(a, b) + 3)
        stamp = ellipse_mask((side, side), (side / 2, side / 2), (a, b), rng.uniform(0, np.pi))
        return place_in_region(stamp, np.ones(shape, bool) if region is None else region, rng)


@dataclass(frozen=True)
class RandomBlob:
    """Random irregular blob (Fourier-perturbed circle), placed inside ``region`` when given."""

    radius_px: tuple[float, float] = (4.0, 20.0)
    irregularity: float = 0.3

    def __call__(
        self, shape: tuple[int, int], rng: np.random.Generator, region: np.ndarray | None = None
    ) -> np.ndarray | None:
        radius = rng.uniform(*self.radius_px)
        side = int(2 * radius * 1.8 + 3)
        stamp = blob_mask((side, side), (side / 2, side / 2), radius, rng, irregularity=self.irregularity)
        return place_in_region(stamp, np.ones(shape, bool) if region is None else region, rng)


@dataclass(frozen=True)
class RandomBrush:
    """Free-hand-like strokes: a smooth random walk of ``n_vertices`` drawn ``width_px`` wide.

    The walk is drawn in a stamp of at most ``extent_px`` and placed inside ``region``.
    """

    width_px: tuple[float, float] = (3.0, 9.0)
    n_vertices: tuple[int, int] = (3, 8)
    step_px: tuple[float, float] = (3.0, 10.0)
    extent_px: int = 48

    def __call__(
        self, shape: tuple[int, int], rng: np.random.Generator, region: np.ndarray | None = None
    ) -> np.ndarray | None:
        n = int(rng.integers(self.n_vertices[0], self.n_vertices[1] + 1))
        heading = rng.uniform(0, 2 * np.pi)
        pts = [np.zeros(2)]
        for _ in range(n - 1):
            heading += rng.normal(0, 0.8)  # smooth turns, like a hand
            pts.append(pts[-1] + rng.uniform(*self.step_px) * np.array([np.sin(heading), np.cos(heading)]))
        pts = np.array(pts)
        width = rng.uniform(*self.width_px)
        pts -= pts.min(0) - width
        side = int(min(self.extent_px, np.ceil(pts.max() + width)) + 1)
        stamp = stroke_mask((side, side), np.clip(pts, 0, side - 1), width)
        return place_in_region(stamp, np.ones(shape, bool) if region is None else region, rng)


@dataclass(frozen=True)
class TransplantTumor:
    """Transplant a random outline from ``shapes`` into ``region`` (see ``transplant_shape``)."""

    shapes: tuple[TumorShape, ...]
    scale_range: tuple[float, float] = (0.6, 1.4)

    def __call__(
        self,
        shape: tuple[int, int],
        rng: np.random.Generator,
        region: np.ndarray | None = None,
        spacing: tuple[float, float] = (1.0, 1.0),
    ) -> np.ndarray | None:
        if not self.shapes:
            raise InputError(
                "no tumour shapes to transplant: give a shape library (e.g. KiTS label maps) or lesion masks"
            )
        pick = self.shapes[int(rng.integers(len(self.shapes)))]
        return transplant_shape(
            pick,
            np.ones(shape, bool) if region is None else region,
            spacing,
            rng,
            scale_range=self.scale_range,
        )


# ----------------------------------------------------------------------------- validation
def as_mask(array: np.ndarray) -> np.ndarray:
    """A user-supplied mask image as bool: RGBA -> alpha channel, RGB -> any channel, else ``> 0``."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., 3] if arr.shape[-1] == 4 else arr.max(-1)
    if arr.dtype == bool:
        return arr
    if not np.all(np.isfinite(arr)):
        raise InputError("the mask holds NaN or infinite values; use 0 for keep and 1 for repaint")
    return arr > 0


def validate_mask(mask: np.ndarray, *, image_shape: tuple[int, int], min_context_px: int = 0) -> np.ndarray:
    """Check a repaint mask against the slice it belongs to; returns it as bool.

    Args:
        mask: ``(rows, cols)`` mask (bool or numbers; RGBA uses alpha).
        image_shape: the slice's ``(rows, cols)``.
        min_context_px: pixels of unmasked image the model needs between the mask and the
            image border on every side (0 = the mask may touch the border).

    Raises:
        InputError: not 2D, wrong size, empty, or closer than ``min_context_px`` to the border.
    """
    m = as_mask(mask)
    if m.ndim != 2:
        raise InputError(f"the mask must be one 2D slice, got an array of shape {m.shape}")
    if m.shape != tuple(image_shape):
        raise InputError(
            f"the mask is {m.shape[0]}x{m.shape[1]} pixels but the slice is {image_shape[0]}x{image_shape[1]}; "
            "draw or export the mask on the same slice grid"
        )
    if not m.any():
        raise InputError("the mask is empty: paint the region to repaint (non-zero pixels)")
    if m.all():
        raise InputError("the mask covers the whole slice: leave some image around it for context")
    r0, r1, c0, c1 = bbox(m)
    gap = min(r0, c0, image_shape[0] - r1, image_shape[1] - c1)
    if gap < min_context_px:
        raise InputError(
            f"the mask comes within {gap} px of the image border (rows {r0}-{r1 - 1}, columns {c0}-{c1 - 1} "
            f"of {image_shape[0]}x{image_shape[1]}); the model needs {min_context_px} px of image around it: "
            "move or shrink the mask away from the edge"
        )
    return m


def mask_hash(mask: np.ndarray) -> str:
    """sha256 of a bool mask's shape and packed bits (stable across dtypes of the same mask)."""
    m = np.ascontiguousarray(np.asarray(mask, bool))
    return hashlib.sha256(str(m.shape).encode() + np.packbits(m).tobytes()).hexdigest()
