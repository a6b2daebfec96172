"""Tissue masks and tissue-class layouts of H&E images, derived by our own code.

A *tissue layout* is a small ``(rows, cols)`` uint8 map: one class per square cell of
``cell`` x ``cell`` image pixels (32 by default, 16 µm at 0.5 µm/px). It is what the tiled H&E
model is conditioned on and what a user draws in the app. The classes (``TISSUE_CLASSES``):

0. ``background``: glass, no tissue;
1. ``eosinophilic``: tissue with little hematoxylin: collagenous stroma, keratin, and in the
   frozen TCGA section the pale keratinising tumour nests;
2. ``cellular``: a moderate hematoxylin density (epithelium, mixed areas);
3. ``nuclei-dense``: hematoxylin-rich tissue (basal epidermis, crowded nuclei, lymphoid
   infiltrates of the tumour stroma).

The classes measure stain, not diagnosis: they are what our code can derive from any H&E
image without annotations, and what the tiled model needs to place glass, pink and purple
tissue where the user wants them.

How they are derived (all in ``classify_pixels``, thresholds in ``TissueThresholds``):

* **Glass vs tissue.** Optical density ``OD = -ln(rgb / 255)`` summed over R, G, B and
  smoothed (Gaussian, sigma 2 px); glass is below ``glass_od``. Holes and specks smaller than
  ``min_object_px`` are filled / removed (morphology), so single dust grains and lumina
  smaller than a few nuclei do not change the class.
* **Hematoxylin.** Colour deconvolution with scikit-image's H&E-DAB stain matrix
  (``skimage.color.hed_from_rgb``, Ruifrok & Johnston; the same arithmetic as ``rgb2hed`` in
  float32). The hematoxylin density is divided by a per-image reference, its
  ``reference_quantile`` over tissue pixels, because stain strength differs between slides by
  an order of magnitude (the FFPE skin section has a 99th percentile near 0.29, the frozen
  TCGA section near 0.04), and clipped to [0, 1.5].
* **Classes per cell.** The mean normalised hematoxylin over a cell's tissue decides
  eosinophilic / cellular / nuclei-dense (``cellular_h``, ``dense_h``); a cell is background
  when more than half of it is glass.

Large images are processed in bands of rows (with a halo for the filters), so memory
follows the image width, not its area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import InputError

TISSUE_CLASSES: tuple[str, ...] = ("background", "eosinophilic", "cellular", "nuclei-dense")
# Colours used to draw and show layouts (RGB); the app's brush palette uses the same.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (236, 120, 160),
    (150, 80, 200),
    (40, 30, 120),
)
DEFAULT_CELL = 32  # image pixels per layout cell
_HALO = 16  # extra rows read above/below a band for the smoothing filters


@dataclass(frozen=True)
class TissueThresholds:
    """Thresholds of the tissue classes (defaults checked on the CMU-1 and TCGA regions)."""

    glass_od: float = 0.45  # summed RGB optical density below which (smoothed) a pixel is glass
    min_object_px: int = 256  # tissue specks / glass holes smaller than this are removed / filled
    reference_quantile: float = 99.0  # percentile of hematoxylin over tissue that is scaled to 1
    cellular_h: float = 0.15  # mean normalised hematoxylin of a cell's tissue from which it is "cellular"
    dense_h: float = 0.25  # ... and from which it is "nuclei-dense"


def _check_rgb(rgb: np.ndarray, name: str = "image") -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"{name} must be an (h, w, 3) uint8 RGB array, got {got}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(f"{name} is empty ({rgb.shape})")


def _log_rgb(rgb: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(rgb, 1).astype(np.float32) * np.float32(1 / 255))  # (h, w, 3) <= 0


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Summed optical density ``-ln(max(v, 1) / 255)`` over R, G, B: ``(h, w)`` float32 (0 = white)."""
    return -_log_rgb(rgb).sum(axis=-1)


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin density, as ``skimage.color.rgb2hed(rgb)[..., 0]``: ``(h, w)`` float32 >= 0.

    Same stain matrix and log base as scikit-image (``log(v) / log(1e-6)``) and equal to it
    wherever no channel is 0; a 0 channel (JPEG-clipped dark nuclei, about 1 % of tissue
    pixels) is taken as 1/255 instead of 1e-6, so it stays within the range of its neighbours.
    """
    from skimage.color import hed_from_rgb

    column = hed_from_rgb[:, 0].astype(np.float32) / np.float32(np.log(1e-6))
    return np.maximum(_log_rgb(rgb) @ column, 0.0)


def glass_mask(rgb: np.ndarray, thresholds: TissueThresholds = TissueThresholds()) -> np.ndarray:
    """``(h, w)`` bool, True on glass (see the module docstring)."""
    from scipy import ndimage as ndi
    from skimage import morphology

    _check_rgb(rgb)
    glass = ndi.gaussian_filter(optical_density(rgb), 2.0) < thresholds.glass_od
    n = thresholds.min_object_px
    glass = morphology.remove_small_objects(glass, max_size=n)  # small lumina count as tissue
    return ~morphology.remove_small_objects(~glass, max_size=n)  # specks of dust count as glass


def hematoxylin_reference(
    rgb: np.ndarray,
    thresholds: TissueThresholds = TissueThresholds(),
    *,
    max_pixels: int = 4_000_000,
    seed: int = 0,
) -> float:
    """The hematoxylin density that the classes scale to 1 for this image.

    Computed on at most ``max_pixels`` pixels drawn at random (``seed``), so that a whole
    slide costs the same as a region. Raises ``InputError`` when the image shows no tissue.
    """
    _check_rgb(rgb)
    flat = rgb.reshape(-1, 3)
    if len(flat) > max_pixels:
        flat = flat[np.random.default_rng(seed).choice(len(flat), max_pixels, replace=False)]
    sample = flat[None]  # (1, n, 3)
    tissue = optical_density(sample)[0] >= thresholds.glass_od
    if tissue.sum() < 64:
        raise InputError("the image shows no tissue (all glass); draw or choose a region with tissue")
    h = hematoxylin(sample)[0][tissue]
    return float(max(np.percentile(h, thresholds.reference_quantile), 1e-3))


def classify_pixels(
    rgb: np.ndarray, *, reference: float | None = None, thresholds: TissueThresholds = TissueThresholds()
) -> tuple[np.ndarray, np.ndarray]:
    """Glass mask and normalised hematoxylin of an H&E image.

    Args:
        rgb: ``(h, w, 3)`` uint8 RGB.
        reference: hematoxylin density scaled to 1 (``hematoxylin_reference`` of the whole
            slide); None computes it from ``rgb`` itself.
        thresholds: see ``TissueThresholds``.

    Returns:
        ``(glass, h)``: ``(h, w)`` bool (True on glass) and ``(h, w)`` float32 hematoxylin
        divided by ``reference``, clipped to [0, 1.5], 0 on glass.
    """
    _check_rgb(rgb)
    if reference is None:
        reference = hematoxylin_reference(rgb, thresholds)
    glass = glass_mask(rgb, thresholds)
    h = np.clip(hematoxylin(rgb) / np.float32(reference), 0.0, 1.5)
    h[glass] = 0.0
    return glass, h


def _cell_means(values: np.ndarray, cell: int) -> np.ndarray:
    """Mean of ``values`` over ``cell`` x ``cell`` blocks (partial blocks at the edges averaged too)."""
    h, w = values.shape
    rows, cols = -(-h // cell), -(-w // cell)
    padded = np.zeros((rows * cell, cols * cell), np.float32)
    weight = np.zeros_like(padded)
    padded[:h, :w], weight[:h, :w] = values, 1.0
    total = padded.reshape(rows, cell, cols, cell).sum(axis=(1, 3))
    count = weight.reshape(rows, cell, cols, cell).sum(axis=(1, 3))
    return total / count


def tissue_fractions(
    rgb: np.ndarray,
    *,
    cell: int = DEFAULT_CELL,
    reference: float | None = None,
    thresholds: TissueThresholds = TissueThresholds(),
    band_cells: int = 16,
) -> np.ndarray:
    """Per-cell glass fraction and mean normalised hematoxylin of the tissue.

    Args:
        rgb: ``(h, w, 3)`` uint8 RGB (any size; processed in bands of ``band_cells`` cell rows).
        cell: cell side in pixels.
        reference: see ``classify_pixels``; computed once for the whole image when None.

    Returns:
        ``(ceil(h / cell), ceil(w / cell), 2)`` float32: ``[..., 0]`` glass fraction,
        ``[..., 1]`` mean normalised hematoxylin over the cell's tissue (0 without tissue).
    """
    _check_rgb(rgb)
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 1:
        raise InputError(f"cell must be a positive number of pixels, got {cell!r}")
    if reference is None:
        reference = hematoxylin_reference(rgb, thresholds)
    h = rgb.shape[0]
    band = band_cells * cell
    out = []
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        a, b = max(0, y0 - _HALO), min(h, y1 + _HALO)
        glass, hema = classify_pixels(rgb[a:b], reference=reference, thresholds=thresholds)
        g = _cell_means(glass[y0 - a : y1 - a], cell)
        mean_h = _cell_means(hema[y0 - a : y1 - a], cell) / np.maximum(1.0 - g, 1e-6)
        out.append(np.stack([g, np.where(g < 1.0, mean_h, 0.0)], axis=-1))
    return np.concatenate(out).astype(np.float32)


def layout_from_fractions(
    fractions: np.ndarray, thresholds: TissueThresholds = TissueThresholds()
) -> np.ndarray:
    """``(rows, cols, 2)`` fractions (``tissue_fractions``) -> ``(rows, cols)`` uint8 class layout."""
    glass, mean_h = fractions[..., 0], fractions[..., 1]
    layout = np.full(glass.shape, 1, np.uint8)
    layout[mean_h >= thresholds.cellular_h] = 2
    layout[mean_h >= thresholds.dense_h] = 3
    layout[glass > 0.5] = 0
    return layout


def tissue_layout(
    rgb: np.ndarray,
    *,
    cell: int = DEFAULT_CELL,
    reference: float | None = None,
    thresholds: TissueThresholds = TissueThresholds(),
) -> np.ndarray:
    """The tissue-class layout of an H&E image: ``(ceil(h / cell), ceil(w / cell))`` uint8 in 0..3."""
    return layout_from_fractions(
        tissue_fractions(rgb, cell=cell, reference=reference, thresholds=thresholds), thresholds
    )


def layout_from_slide(
    slide,
    *,
    cell: int = DEFAULT_CELL,
    level: int = 0,
    region: tuple[int, int, int, int] | None = None,
    thresholds: TissueThresholds = TissueThresholds(),
    band_px: int = 1024,
) -> np.ndarray:
    """Tissue layout of (a region of) an open slide, read band by band.

    Args:
        slide: a ``core.io.slide.Slide``.
        cell: cell side in pixels of ``level``.
        level: pyramid level to classify (pick one whose pixel size matches the model's).
        region: ``(x, y, width, height)`` in that level's pixels; None = the whole level.
        band_px: rows read at once (rounded down to whole cells).

    Returns:
        ``(ceil(height / cell), ceil(width / cell))`` uint8 layout.
    """
    lvl = slide.levels[slide._level_index(level)]
    x, y, w, h = region if region is not None else (0, 0, lvl.width, lvl.height)
    if w < 1 or h < 1:
        raise InputError(f"region must be at least 1x1 pixels, got {w}x{h}")
    # The stain reference comes from an overview of the whole region, so every band uses the same.
    scale = min(1.0, 2048 / max(w, h))
    step = max(1, round(1 / scale))
    overview = slide.read_region(level=level, x=x, y=y, width=w, height=h) if step == 1 else None
    if overview is None:
        overview = _strided_overview(slide, level, (x, y, w, h), step)
    reference = hematoxylin_reference(overview, thresholds)
    band = max(cell, band_px // cell * cell)
    rows = []
    for y0 in range(0, h, band):
        bh = min(band, h - y0)
        rows.append(
            tissue_layout(
                slide.read_region(level=level, x=x, y=y + y0, width=w, height=bh),
                cell=cell,
                reference=reference,
                thresholds=thresholds,
            )
        )
    return np.concatenate(rows)


def _strided_overview(slide, level: int, region: tuple[int, int, int, int], step: int) -> np.ndarray:
    """Every ``step``-th pixel of a region (pixel values kept, so stain statistics are unbiased)."""
    x, y, w, h = region
    band = max(step, 512 // step * step)
    parts = [
        slide.read_region(level=level, x=x, y=y + y0, width=w, height=min(band, h - y0))[::step, ::step]
        for y0 in range(0, h, band)
    ]
    return np.concatenate(parts)


def class_fractions(layout: np.ndarray) -> dict[str, float]:
    """Fraction of the cells of each class, by class name."""
    layout = check_layout(layout)
    counts = np.bincount(layout.ravel(), minlength=len(TISSUE_CLASSES))
    return {name: float(c) / layout.size for name, c in zip(TISSUE_CLASSES, counts)}


def check_layout(layout: np.ndarray, *, name: str = "layout") -> np.ndarray:
    """Validate a class layout: a 2D integer array with values in 0..3. Returns it as uint8."""
    if not isinstance(layout, np.ndarray) or layout.ndim != 2 or layout.size == 0:
        got = getattr(layout, "shape", type(layout).__name__)
        raise InputError(f"{name} must be a non-empty 2D array of class indices, got {got}")
    if not np.issubdtype(layout.dtype, np.integer):
        raise InputError(
            f"{name} must hold integer class indices 0..{len(TISSUE_CLASSES) - 1}, got dtype {layout.dtype}"
        )
    if layout.min() < 0 or layout.max() >= len(TISSUE_CLASSES):
        raise InputError(
            f"{name} values must be in 0..{len(TISSUE_CLASSES) - 1} ({', '.join(TISSUE_CLASSES)}), "
            f"got {int(layout.min())}..{int(layout.max())}"
        )
    return layout.astype(np.uint8, copy=False)


def layout_to_rgb(layout: np.ndarray, *, scale: int = 1) -> np.ndarray:
    """Colour picture of a layout (``CLASS_COLOURS``), each cell ``scale`` x ``scale`` pixels."""
    layout = check_layout(layout)
    rgb = np.asarray(CLASS_COLOURS, np.uint8)[layout]
    return rgb.repeat(scale, 0).repeat(scale, 1) if scale > 1 else rgb


def layout_from_rgb(
    rgb: np.ndarray, shape: tuple[int, int] | None = None, *, max_distance: float = 60.0
) -> np.ndarray:
    """Read a drawn or uploaded layout picture back into classes.

    Every pixel takes the class of the nearest ``CLASS_COLOURS`` entry; then the picture is
    resampled to ``shape`` (rows, cols) by taking the most common class in each cell's
    footprint. Transparent pixels (alpha 0) are background.

    Raises:
        InputError: when more than 5 % of the pixels are far (> ``max_distance`` in RGB)
            from every class colour: the picture was not drawn with the layout colours.
    """
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.ndim != 3
        or rgb.shape[-1] not in (3, 4)
        or rgb.dtype != np.uint8
    ):
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"a layout picture must be an (h, w, 3|4) uint8 image, got {got}")
    colours = np.asarray(CLASS_COLOURS, np.float32)
    pix = rgb[..., :3].astype(np.float32)
    dist = np.linalg.norm(pix[..., None, :] - colours, axis=-1)  # (h, w, K)
    classes = dist.argmin(-1).astype(np.uint8)
    far = dist.min(-1) > max_distance
    if rgb.shape[-1] == 4:
        transparent = rgb[..., 3] == 0
        classes[transparent], far = 0, far & ~transparent
    if far.mean() > 0.05:
        names = ", ".join(
            f"{n} {'#{:02x}{:02x}{:02x}'.format(*c)}" for n, c in zip(TISSUE_CLASSES, CLASS_COLOURS)
        )
        raise InputError(
            f"{100 * far.mean():.0f}% of the layout picture is not in a layout colour; "
            f"draw with these colours: {names}"
        )
    return classes if shape is None else resize_layout(classes, shape)


def resize_layout(layout: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a layout to ``shape`` (rows, cols): the most common class under each new cell."""
    layout = check_layout(layout)
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise InputError(f"layout shape must be at least 1x1 cells, got {shape}")
    if layout.shape == (rows, cols):
        return layout
    h, w = layout.shape
    # Each new cell covers [r*h/rows, (r+1)*h/rows); sample a 4x4 grid inside it and vote.
    sub = 4
    ys = ((np.arange(rows * sub) + 0.5) * h / (rows * sub)).astype(int).clip(0, h - 1)
    xs = ((np.arange(cols * sub) + 0.5) * w / (cols * sub)).astype(int).clip(0, w - 1)
    votes = (
        layout[ys][:, xs].reshape(rows, sub, cols, sub).transpose(0, 2, 1, 3).reshape(rows, cols, sub * sub)
    )
    counts = np.stack([(votes == k).sum(-1) for k in range(len(TISSUE_CLASSES))], axis=-1)
    return counts.argmax(-1).astype(np.uint8)


def read_layout(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A layout from a file: ``.npy`` of class ids 0..3, or a picture drawn in ``CLASS_COLOURS``.

    Args:
        path: the file.
        shape: resample to (rows, cols) cells (``resize_layout``); None keeps the file's size.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"layout file not found: {path}; give a .npy of class ids or a PNG drawn in the layout colours"
        )
    if path.suffix.lower() == ".npy":
        try:
            layout = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path.name}: not a readable .npy array ({exc})") from exc
        layout = check_layout(layout, name=path.name)
        return layout if shape is None else resize_layout(layout, shape)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGBA"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(
            f"{path.name}: not a readable image ({exc}); give a PNG drawn in the layout colours or a .npy"
        ) from exc
    return layout_from_rgb(rgb, shape)


def example_layout(shape: tuple[int, int] = (128, 128), *, seed: int = 0) -> np.ndarray:
    """A made-up but plausible layout (for the demo and benchmarks): a tissue piece on glass.

    Tissue is where a smooth random field (Gaussian-filtered noise, ``seed``) is high, about 70 %
    of the area; inside it a second smooth field picks eosinophilic / cellular / nuclei-dense
    areas in proportions close to the training slides (about 45 / 35 / 20 %).
    """
    from scipy import ndimage as ndi

    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise InputError(f"layout shape must be at least 1x1 cells, got {shape}")
    rng = np.random.default_rng(seed)
    sigma = max(rows, cols) / 10
    rr, cc = np.mgrid[0:rows, 0:cols]
    centre = (
        1 - (((rr - rows / 2) / (rows / 2)) ** 2 + ((cc - cols / 2) / (cols / 2)) ** 2) / 2
    )  # favour the middle
    piece = ndi.gaussian_filter(rng.standard_normal((rows, cols)), sigma, mode="reflect")
    piece = piece / (piece.std() + 1e-9) + 2.5 * centre
    kind = ndi.gaussian_filter(rng.standard_normal((rows, cols)), sigma / 3, mode="reflect")
    tissue = piece > np.quantile(piece, 0.3)
    q1, q2 = np.quantile(kind[tissue], (0.45, 0.8)) if tissue.any() else (0.0, 0.0)
    layout = np.where(kind >= q2, 3, np.where(kind >= q1, 2, 1)).astype(np.uint8)
    layout[~tissue] = 0
    return layout
