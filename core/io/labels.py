"""Segmentations: label maps and per-organ binary masks on a volume's grid.

Layouts understood:

* a label-map NIfTI (integer ids; names from a ``labels.json`` beside it, TotalSegmentator
  style ``{"total": {"1": "spleen", ...}}`` or a flat ``{"1": "spleen"}``, or the KiTS names);
* a folder of per-organ binary masks ``<organ>.nii.gz`` (TotalSegmentator ``segmentations/``);
  ids follow ``labels.json`` when it names every organ, else sorted names get 1..N.

A segmentation on a different grid than its image is resampled with nearest neighbour
through the two affines; one that does not overlap the image is rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.nifti import is_nifti, read_nifti_ijk
from core.io.orient import reorient
from core.io.volume import LabelMap, Volume

KITS_NAMES = {1: "kidney", 2: "tumor", 3: "cyst"}


def find_names(near: Path) -> dict[str, dict[int, str]]:
    """Label tables from a ``labels.json`` in ``near`` or its parent (table name -> id -> name)."""
    for folder in (near, near.parent):
        candidate = folder / "labels.json"
        if candidate.is_file():
            raw = json.loads(candidate.read_text())
            if all(isinstance(v, dict) for v in raw.values()):
                return {k: {int(i): n for i, n in v.items()} for k, v in raw.items()}
            return {"labels": {int(i): n for i, n in raw.items()}}
    return {}


def read_label_map(path: str | Path, *, reference: Volume, names: dict[int, str] | None = None) -> LabelMap:
    """Read a label-map NIfTI onto ``reference``'s grid.

    Args:
        path: integer label NIfTI.
        reference: the image the labels belong to.
        names: id -> name; looked up in ``labels.json`` (table ``total`` first) when None.
    """
    path = Path(path)
    data, affine = read_nifti_ijk(path, what="label map")
    if not np.array_equal(data, np.round(data)) or data.min() < 0:
        raise InputError(f"{path.name}: a label map must hold non-negative integer ids")
    array = _on_reference_grid(data, affine, reference, path.name)
    if names is None:
        tables = find_names(path.parent)
        names = tables.get("total") or tables.get("labels") or {}
        if not names and path.name.startswith("segmentation"):
            names = dict(KITS_NAMES)
        if not names and set(np.unique(array)) <= {0, 1}:  # a binary mask: name it after its file
            names = {1: path.name.split(".nii")[0]}
    return LabelMap(array, dict(names))


def read_mask_folder(folder: str | Path, *, reference: Volume) -> LabelMap:
    """Combine per-organ binary masks (``<organ>.nii.gz``) into one label map."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if is_nifti(p))
    if not files:
        raise InputError(f"{folder}: no NIfTI masks found")
    organ_names = [p.name.split(".nii")[0] for p in files]
    ids = _ids_for(organ_names, find_names(folder))
    masks = []
    for path, name in zip(files, organ_names):
        data, affine = read_nifti_ijk(path, what="mask")
        masks.append((name, _on_reference_grid(data, affine, reference, path.name) > 0))
    # Masks from different TotalSegmentator tasks overlap (lung vessels inside lung lobes):
    # paint large structures first so small ones stay visible in the label map.
    masks.sort(key=lambda item: -int(item[1].sum()))
    out = np.zeros(reference.shape, np.uint16)
    for name, mask in masks:
        out[mask] = ids[name]
    return LabelMap(out, {ids[name]: name for name in organ_names})


def _ids_for(organ_names: list[str], tables: dict[str, dict[int, str]]) -> dict[str, int]:
    for table in tables.values():
        by_name = {n: i for i, n in table.items()}
        if all(n in by_name for n in organ_names):
            return {n: by_name[n] for n in organ_names}
    return {n: i + 1 for i, n in enumerate(sorted(organ_names))}


def _on_reference_grid(data_ijk: np.ndarray, affine: np.ndarray, reference: Volume, name: str) -> np.ndarray:
    """Canonical (z, y, x) uint16 labels on the reference grid (nearest neighbour if needed)."""
    labels, lab_affine = reorient(data_ijk, affine)
    if labels.shape == reference.shape and np.allclose(lab_affine, reference.affine, atol=1e-2):
        return np.ascontiguousarray(labels, dtype=np.uint16)
    from scipy.ndimage import affine_transform

    # reference voxel (x, y, z) -> label voxel (x, y, z); scipy wants (z, y, x) order.
    m_xyz = np.linalg.inv(lab_affine) @ reference.affine
    perm = np.eye(4)[[2, 1, 0, 3]]
    m_zyx = perm @ m_xyz @ perm
    out = affine_transform(
        labels.astype(np.uint16),
        m_zyx[:3, :3],
        offset=m_zyx[:3, 3],
        output_shape=reference.shape,
        order=0,
        mode="constant",
        cval=0,
    )
    if labels.any() and not out.any():
        raise InputError(
            f"{name}: the segmentation (shape {labels.shape}) does not overlap the image "
            f"(shape {reference.shape}) in patient coordinates; is it from another scan?"
        )
    return out
