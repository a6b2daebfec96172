"""NIfTI images (via nibabel) -> canonical ``Volume``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.orient import to_canonical
from core.io.volume import Modality, Volume

# 1st-percentile intensity below this means air is present in HU: a CT.
_CT_AIR_THRESHOLD = -500.0


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti_ijk(path: str | Path, *, what: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Data in file order (i, j, k) as float32 with scaling applied, and its RAS affine.

    Raises:
        InputError: unreadable file, 4D data with more than one volume, non-finite values.
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)  # applies scl_slope/scl_inter
    except Exception as exc:
        raise InputError(f"{path.name}: not a readable NIfTI file ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise InputError(
            f"{path.name}: {data.ndim}D {what} of shape {data.shape}; a 3D volume is needed "
            "(for a time series or multi-channel file, save the one volume you want as its own file)"
        )
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(
            f"{path.name}: {bad} of {data.size} voxels are NaN or infinite ({100 * bad / data.size:.1f}%); "
            "replace them (for CT, with -1024 HU for air) before loading"
        )
    return data, np.asarray(img.affine, dtype=float)


def guess_modality(data: np.ndarray) -> Modality:
    """CT when the intensities include air in HU, else MR (NIfTI has no modality field)."""
    sample = data[:: max(1, data.shape[0] // 32)]
    return "CT" if float(np.percentile(sample, 1)) < _CT_AIR_THRESHOLD else "MR"


def read_nifti(path: str | Path, *, modality: Modality | None = None) -> Volume:
    """Read a 3D NIfTI image.

    Args:
        path: ``.nii`` or ``.nii.gz``.
        modality: ``"CT"`` (values are HU), ``"MR"`` or ``"OT"``; guessed from the
            intensities when None (recorded in ``meta["modality_source"]``).
    """
    data, affine = read_nifti_ijk(path)
    meta = {"source": str(path), "format": "nifti", "warnings": []}
    if modality is None:
        modality = guess_modality(data)
        meta["modality_source"] = "guessed from intensities"
    else:
        meta["modality_source"] = "given"
    return to_canonical(data, affine, modality=modality, meta=meta)
