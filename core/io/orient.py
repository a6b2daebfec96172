"""Reorientation of (i, j, k) arrays with a RAS affine to the project's canonical order.

Canonical: voxel axes pointing to patient Left, Posterior, Superior (nibabel axcodes
``("L", "P", "S")``), stored as ``(z, y, x)``. See ``core.io.volume`` for why.
"""

from __future__ import annotations

import numpy as np

from core.io.volume import LabelMap, Modality, Volume

CANONICAL_AXCODES = ("L", "P", "S")


def reorient(data_ijk: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute ``data_ijk`` (i, j, k order, RAS ``affine``) to L, P, S axes.

    Returns:
        ``(array (z, y, x), new_affine)``; the array is a view where possible.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), axcodes2ornt(CANONICAL_AXCODES))
    data = apply_orientation(data_ijk, transform)
    new_affine = affine @ inv_ornt_aff(transform, data_ijk.shape)
    return data.transpose(2, 1, 0), new_affine


def spacing_zyx(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm, ``(z, y, x)``, from the column norms of an affine."""
    sx, sy, sz = np.linalg.norm(affine[:3, :3], axis=0)
    return float(sz), float(sy), float(sx)


def to_canonical(
    data_ijk: np.ndarray,
    affine: np.ndarray,
    *,
    modality: Modality,
    meta: dict,
    labels_ijk: np.ndarray | None = None,
    label_names: dict[int, str] | None = None,
) -> Volume:
    """Build a canonical ``Volume`` from an (i, j, k) array and its RAS affine."""
    from nibabel.orientations import aff2axcodes

    array, new_affine = reorient(data_ijk, affine)
    labels = None
    if labels_ijk is not None:
        lab, _ = reorient(labels_ijk, affine)
        labels = LabelMap(np.ascontiguousarray(lab, dtype=np.uint16), dict(label_names or {}))
    meta = {**meta, "source_axcodes": "".join(aff2axcodes(affine))}
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        spacing=spacing_zyx(new_affine),
        affine=new_affine,
        modality=modality,
        labels=labels,
        meta=meta,
    )
