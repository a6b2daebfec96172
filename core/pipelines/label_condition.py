"""Label maps as model conditions: named labels -> model classes -> a square canvas -> one-hot.

Shared by training (``core.training.label_data``), the ControlNet pipeline, ``synthdx
generate`` and the app, so a condition is built by the same rule everywhere.

* **Classes.** A model has an ordered list of classes; a class map holds 0 = *free*
  (unspecified) and ``i`` = ``classes[i - 1]``. Source labels are mapped by name with
  ``fnmatch`` patterns (``class_rules``); for CT the derived classes ``air`` (outside the
  body outline, from HU) and ``body`` (inside it, with no other class) fill what the
  segmentation leaves out, and unmatched labels fall into ``body``.
* **Canvas.** A slice is resampled to the model's pixel size (``pixel_mm``; HU bilinear
  with anti-aliasing, classes nearest) and a square of ``resolution`` pixels is cut around
  a centre (the body's bounding-box centre); pixels beyond the slice are *invalid*
  (HU -1000, class free) and training ignores them.
* **Encodings.** One-hot ``(C, H, W)`` float32 (free = all zero) for the ControlNet; a
  colour image (``palette``: black = free, classes in ``core.render.label_colour``) for
  people and for colour-coded PNG conditions.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from core.errors import InputError

# The CT classes of our demo models, grouping TotalSegmentator (v1 and v2), phantom, KiTS and
# IBSI names. Order = class id - 1. "air" and "body" are derived from HU (see module docstring).
CT_CLASS_RULES: dict[str, tuple[str, ...]] = {
    "air": (),
    "body": ("body", "*fat*", "skin", "spinal_cord", "adrenal*", "intervertebral*"),
    "liver": ("liver",),
    "spleen": ("spleen",),
    "kidney": ("kidney", "kidney_left", "kidney_right", "kidney_cyst*", "cyst"),
    "bowel": ("stomach", "duodenum", "small_bowel", "colon", "esophagus", "bowel*"),
    "pancreas": ("pancreas",),
    "vessel": ("aorta", "inferior_vena_cava", "portal_vein*", "iliac_artery*", "iliac_vena*", "pulmonary_*", "heart*", "*vein*", "*artery*"),
    "bone": ("vertebrae*", "rib*", "sacrum", "hip_*", "femur*", "humerus*", "scapula*", "clavicula*", "costal_cartilages", "sternum", "skull"),
    "muscle": ("autochthon*", "iliopsoas*", "gluteus*"),
    "lung": ("lung*", "trachea", "*bronch*"),
    "bladder": ("urinary_bladder", "gallbladder"),  # fluid-filled hollow organs
    "lesion": ("*tumor*", "*tumour*", "*lesion*", "*mass*", "ct_mask", "gtv*"),
}  # fmt: skip
DERIVED = ("air", "body")
BODY_THRESHOLD_HU = -400.0


def class_lookup(
    names: dict[int, str],
    classes: tuple[str, ...],
    rules: dict[str, tuple[str, ...]],
    *,
    default: str | None = "body",
) -> np.ndarray:
    """Label id -> class id table (``uint8``, index = label id) for the labels ``names``.

    A label takes the first class (in ``classes`` order) with a matching pattern
    (case-insensitive); unmatched labels take ``default`` when it is a class, else 0 (free).
    """
    size = max([0, *names]) + 1
    lut = np.zeros(size, np.uint8)
    fallback = classes.index(default) + 1 if default in classes else 0
    for label, name in names.items():
        if label == 0:
            continue
        lut[label] = fallback
        for k, cls in enumerate(classes):
            if any(fnmatch.fnmatch(name.lower(), pat) for pat in rules.get(cls, ())):
                lut[label] = k + 1
                break
    return lut


def class_map(
    labels: np.ndarray,
    names: dict[int, str],
    classes: tuple[str, ...],
    rules: dict[str, tuple[str, ...]],
    *,
    hu: np.ndarray | None = None,
) -> np.ndarray:
    """``(H, W)`` uint8 class map of a label slice; unlabelled pixels become ``air``/``body`` from ``hu``.

    Args:
        labels: ``(H, W)`` integer label ids (0 = unlabelled).
        names: label id -> name (ids without a name are treated as unmatched).
        classes, rules: the model's classes and their name patterns.
        hu: the slice in HU; without it unlabelled pixels stay free.
    """
    from core.masks import body_mask

    labels = np.asarray(labels)
    known = {int(i): names.get(int(i), f"label_{int(i)}") for i in np.unique(labels) if i}
    lut = class_lookup(known, classes, rules)
    out = lut[np.clip(labels, 0, len(lut) - 1).astype(np.int64)]
    if hu is not None and "air" in classes and "body" in classes:
        inside = body_mask(np.asarray(hu, np.float32), threshold_hu=BODY_THRESHOLD_HU)
        free = out == 0
        out[free & inside] = classes.index("body") + 1
        out[free & ~inside] = classes.index("air") + 1
    return out.astype(np.uint8)


def resample(array: np.ndarray, spacing: tuple[float, float], pixel_mm: float, *, order: int) -> np.ndarray:
    """``array`` at ``spacing`` (row, col mm) -> the grid of ``pixel_mm`` (order 0: labels, 1: HU)."""
    from skimage.transform import resize

    shape = tuple(max(1, round(n * s / pixel_mm)) for n, s in zip(array.shape, spacing))
    if shape == array.shape:
        return array.copy()
    if order == 0:
        rows = np.minimum(
            ((np.arange(shape[0]) + 0.5) * array.shape[0] / shape[0]).astype(int), array.shape[0] - 1
        )
        cols = np.minimum(
            ((np.arange(shape[1]) + 0.5) * array.shape[1] / shape[1]).astype(int), array.shape[1] - 1
        )
        return array[rows[:, None], cols[None, :]]
    return resize(array.astype(np.float32), shape, order=1, anti_aliasing=True, preserve_range=True).astype(
        np.float32
    )


def canvas_center(classes: np.ndarray, class_names: tuple[str, ...]) -> tuple[float, float]:
    """Centre (row, col) of the non-air, non-free pixels' bounding box (the array's centre if none)."""
    air = class_names.index("air") + 1 if "air" in class_names else -1
    rows, cols = np.nonzero((classes > 0) & (classes != air))
    if rows.size == 0:
        return (classes.shape[0] - 1) / 2, (classes.shape[1] - 1) / 2
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2


def cut(array: np.ndarray, center: tuple[float, float], size: int, fill) -> tuple[np.ndarray, np.ndarray]:
    """``(size, size)`` square of ``array`` centred on ``center`` and its valid-pixel mask."""
    r0 = round(center[0] - (size - 1) / 2)
    c0 = round(center[1] - (size - 1) / 2)
    out = np.full((size, size), fill, dtype=array.dtype)
    valid = np.zeros((size, size), bool)
    rs, re = max(r0, 0), min(r0 + size, array.shape[0])
    cs, ce = max(c0, 0), min(c0 + size, array.shape[1])
    if rs < re and cs < ce:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = array[rs:re, cs:ce]
        valid[rs - r0 : re - r0, cs - c0 : ce - c0] = True
    return out, valid


def one_hot(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """``(..., H, W)`` class ids -> ``(..., C, H, W)`` float32; 0 (free) is all-zero."""
    classes = np.asarray(classes)
    if classes.size and int(classes.max()) > n_classes:
        raise InputError(
            f"class id {int(classes.max())} in the condition, but the model has {n_classes} classes"
        )
    eye = np.concatenate([np.zeros((1, n_classes), np.float32), np.eye(n_classes, dtype=np.float32)])
    return np.moveaxis(eye[classes.astype(np.int64)], -1, -3)


def palette(class_names: tuple[str, ...]) -> np.ndarray:
    """``(C + 1, 3)`` uint8 display colours; row 0 (free) is black."""
    from core.render import label_colour

    colours = [(0, 0, 0)] + [
        (40, 40, 40) if n == "air" else (120, 120, 120) if n == "body" else label_colour(n)
        for n in class_names
    ]
    if len(set(colours)) != len(colours):
        raise ValueError(f"class colours collide for {class_names}")
    return np.array(colours, np.uint8)


def render_classes(classes: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """``(H, W)`` class map -> ``(H, W, 3)`` uint8 colour image."""
    return palette(class_names)[np.asarray(classes).astype(np.int64)]


def classes_from_colours(rgb: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """A colour-coded condition (``palette`` colours, black = free) -> class map; other colours are an error."""
    pal = palette(class_names).astype(np.int32)
    rgb = np.asarray(rgb)[..., :3].astype(np.int32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(pal)}
    unknown = sorted(set(np.unique(codes).tolist()) - set(table))
    if unknown:
        shown = ", ".join(f"#{c:06x}" for c in unknown[:4])
        raise InputError(
            f"the condition image holds colours that are no class ({shown}); use the palette of `synthdx generate --list-classes` or class ids in a grey PNG"
        )
    out = np.zeros(codes.shape, np.uint8)
    for code, i in table.items():
        out[codes == code] = i
    return out


def load_condition(
    path: str | Path,
    *,
    class_names: tuple[str, ...],
    rules: dict[str, tuple[str, ...]],
    resolution: int,
    pixel_mm: float | None,
    slice_index: int | None = None,
) -> tuple[np.ndarray, dict]:
    """A condition file -> ``(resolution, resolution)`` uint8 class map and a description.

    Accepted: a NIfTI label map (3D with ``slice_index``, or one slice) whose names come
    from a ``labels.json`` beside it (mapped with ``rules``) or, without one, whose values
    are the model's class ids; a 2D ``.npy`` of class ids; a grey PNG of class ids; an RGB
    PNG coloured with ``palette``. NIfTI maps are resampled to ``pixel_mm`` and cut around
    their labels; 2D arrays and images must be square and are scaled (nearest) to the
    model's resolution.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"condition {path} does not exist; give a label map (.nii.gz, .npy or .png)")
    name = path.name.lower()
    n = len(class_names)
    info: dict = {"file": str(path)}
    if name.endswith((".nii", ".nii.gz")):
        from core.io.labels import find_names
        from core.io.nifti import read_nifti_ijk
        from core.io.orient import reorient, spacing_zyx

        data, affine = read_nifti_ijk(path, what="label map")
        data, affine = reorient(np.asarray(data), affine)
        spacing = spacing_zyx(affine)
        if data.ndim == 3 and data.shape[0] > 1:
            if slice_index is None:
                raise InputError(
                    f"{path.name} is a 3D label map ({data.shape[0]} axial slices): give --slice K"
                )
            if not 0 <= slice_index < data.shape[0]:
                raise InputError(f"--slice {slice_index} is outside 0..{data.shape[0] - 1}")
            labels = data[slice_index]
        else:
            labels = data.reshape(data.shape[-2:])
        labels = np.rint(labels).astype(np.int64)
        tables = find_names(path.parent)
        names = tables.get("total") or tables.get("labels")
        if names:
            classes = class_map(labels, names, class_names, rules)
            info["mapping"] = "label names (labels.json) mapped to the model's classes"
        else:
            if labels.min() < 0 or labels.max() > n:
                raise InputError(
                    f"{path.name}: no labels.json beside it, so values must be the model's class ids 0..{n}; found {labels.min()}..{labels.max()}"
                )
            classes = labels.astype(np.uint8)
            info["mapping"] = "values are the model's class ids"
        if pixel_mm:
            classes = resample(classes, spacing[1:], pixel_mm, order=0)
        out, _ = cut(classes, canvas_center(classes, class_names), resolution, 0)
        return out, {**info, "slice": slice_index, "pixel_mm": pixel_mm}
    if name.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        if (
            arr.ndim != 2
            or not np.issubdtype(arr.dtype, np.integer)
            and not np.array_equal(arr, np.round(arr))
        ):
            raise InputError(
                f"{path.name}: a 2D array of integer class ids is needed, got shape {arr.shape} dtype {arr.dtype}"
            )
        if arr.min() < 0 or arr.max() > n:
            raise InputError(
                f"{path.name}: class ids must be 0..{n} (0 = free), found {arr.min()}..{arr.max()}"
            )
        classes, info["mapping"] = arr.astype(np.uint8), "values are the model's class ids"
    elif name.endswith(".png"):
        from PIL import Image

        img = np.asarray(Image.open(path))
        if img.ndim == 2:
            if img.max() > n:
                raise InputError(
                    f"{path.name}: grey values are class ids and must be 0..{n}, found up to {img.max()}"
                )
            classes, info["mapping"] = img.astype(np.uint8), "grey values are the model's class ids"
        else:
            classes, info["mapping"] = (
                classes_from_colours(img, class_names),
                "colours of the model's palette",
            )
    else:
        raise InputError(f"{path.name}: unsupported condition format; use .nii/.nii.gz, .npy or .png")
    if classes.shape[0] != classes.shape[1]:
        raise InputError(
            f"{path.name}: a 2D condition must be square (it is scaled to {resolution} x {resolution}), got {classes.shape}"
        )
    if classes.shape[0] != resolution:
        idx = np.minimum(
            ((np.arange(resolution) + 0.5) * classes.shape[0] / resolution).astype(int), classes.shape[0] - 1
        )
        classes = classes[idx[:, None], idx[None, :]]
        info["scaled_from"] = list(classes.shape)
    return classes, info
