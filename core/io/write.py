"""Write an edited volume back in its source's format and geometry.

* NIfTI source: the original header, affine and voxel orientation (our canonical
  ``(z, y, x)`` LPS array is turned back into the file's axis order), the original data
  type (integer HU are rounded).
* DICOM series: every source file is copied with its pixels replaced where they changed,
  a new SeriesInstanceUID and new SOPInstanceUIDs, ImageType ``DERIVED\\SECONDARY``, a
  SeriesDescription/DerivationDescription saying it is synthetic, ContentQualification
  ``RESEARCH`` and a SourceImageSequence pointing at the original slice.
* Masks: ``write_mask_nifti`` writes a uint8 NIfTI on the volume's grid (in the source
  file's orientation for NIfTI sources).

Voxels that were not edited are written back bit-identical to what was read (DICOM:
the stored integers of unchanged pixels are copied, not recomputed).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.volume import Volume

SYNTHETIC_TAG = "SYNTHETIC"
DEFAULT_DERIVATION = "Synthetic: region repainted by a diffusion model (synthdx); not for diagnosis"


def canonical_to_source(array_zyx: np.ndarray, source_axcodes: str) -> np.ndarray:
    """Invert ``core.io.orient.reorient``: canonical ``(z, y, x)`` -> the source's ``(i, j, k)`` order."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    from core.io.orient import CANONICAL_AXCODES

    back = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), axcodes2ornt(tuple(source_axcodes)))
    return apply_orientation(array_zyx.transpose(2, 1, 0), back)


@contextlib.contextmanager
def _source_path(volume: Volume):
    """The volume's source on disk (a zip upload is extracted to a temporary folder)."""
    from core.io.load import extract_zip

    source = Path(volume.meta.get("source", ""))
    if not source.exists():
        raise InputError(f"the source of this volume ({source}) is gone; write it as NIfTI instead")
    if source.suffix.lower() != ".zip":
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="synthdx-write-") as tmp:
        root = extract_zip(source, Path(tmp))
        if volume.meta.get("format") == "nifti":
            from core.io.nifti import is_nifti

            yield next(p for p in root.rglob("*") if is_nifti(p))
        else:
            yield root


def write_volume_like(
    volume: Volume,
    array: np.ndarray,
    out_dir: str | Path,
    *,
    stem: str = "inpainted",
    description: str = DEFAULT_DERIVATION,
) -> Path:
    """Write ``array`` (``(z, y, x)`` HU on ``volume``'s grid) in the format ``volume`` was read from.

    Args:
        volume: the volume as loaded (its ``meta`` names the source file/series and format).
        array: the edited image, same shape as ``volume.array``.
        out_dir: created if needed.
        stem: file name (NIfTI: ``<stem>.nii.gz``; DICOM: folder ``<stem>_dicom/``).
        description: why the image differs from the source (DICOM DerivationDescription).

    Returns:
        The NIfTI file or the DICOM folder written.
    """
    if array.shape != volume.shape:
        raise InputError(f"edited array {array.shape} differs from the volume's shape {volume.shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = volume.meta.get("format")
    with _source_path(volume) as source:
        if fmt == "nifti":
            return write_nifti_like(array, source, out_dir / f"{stem}.nii.gz")
        if fmt == "dicom":
            return write_dicom_like(volume, array, source, out_dir / f"{stem}_dicom", description=description)
    raise InputError(f"cannot write back a volume of format {fmt!r}; expected one read from NIfTI or DICOM")


def write_nifti_like(array_zyx: np.ndarray, reference: str | Path, out: str | Path) -> Path:
    """Save ``array_zyx`` with ``reference``'s header, affine, axis order and data type."""
    import nibabel as nib

    ref = nib.load(str(reference))
    data = canonical_to_source(array_zyx, "".join(nib.aff2axcodes(ref.affine)))
    target_shape = ref.shape[:3]
    if data.shape != target_shape:
        raise InputError(
            f"array of shape {data.shape} (file order) does not fit {Path(reference).name} of shape {ref.shape}"
        )
    data = data.reshape(ref.shape)  # keeps a trailing singleton 4th dimension
    header = ref.header.copy()
    dtype = header.get_data_dtype()
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        slope, inter = ref.dataobj.slope, ref.dataobj.inter
        data = np.clip(np.rint((data - inter) / slope), info.min, info.max).astype(dtype)
        img = nib.Nifti1Image(data, ref.affine, header)
        img.header.set_slope_inter(slope, inter)
    else:
        img = nib.Nifti1Image(data.astype(dtype), ref.affine, header)
    img.set_qform(ref.get_qform(), code=int(ref.header["qform_code"]))
    img.set_sform(ref.get_sform(), code=int(ref.header["sform_code"]))
    out = Path(out)
    nib.save(img, str(out))
    return out


def write_mask_nifti(mask_zyx: np.ndarray, volume: Volume, out: str | Path) -> Path:
    """A uint8 mask on ``volume``'s grid: in the source file's axis order and affine for NIfTI sources, else canonical."""
    import nibabel as nib

    out = Path(out)
    data = mask_zyx.astype(np.uint8)
    if volume.meta.get("format") == "nifti" and Path(volume.meta.get("source", "")).suffix.lower() != ".zip":
        ref = nib.load(volume.meta["source"])
        img = nib.Nifti1Image(
            canonical_to_source(data, "".join(nib.aff2axcodes(ref.affine))).astype(np.uint8), ref.affine
        )
    else:
        img = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), volume.affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(out))
    return out


def write_dicom_like(
    volume: Volume,
    array_zyx: np.ndarray,
    source: Path,
    out_dir: Path,
    *,
    description: str = DEFAULT_DERIVATION,
) -> Path:
    """Write a derived copy of the DICOM series ``volume`` was read from, with ``array_zyx`` as pixels.

    Raises:
        InputError: multi-frame files, or files that no longer match the volume.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from core.io.dicom import scan_series

    files = _series_files(source, volume.meta.get("series_uid", ""), scan_series)
    # Canonical -> the reader's (col, row, slice-by-position) order; slice k is file k by position.
    ijk = canonical_to_source(array_zyx, volume.meta.get("source_axcodes", "LPS"))
    orig_ijk = canonical_to_source(volume.array, volume.meta.get("source_axcodes", "LPS"))
    datasets = [pydicom.dcmread(f) for f in files]
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise InputError(
            "writing back multi-frame (enhanced) DICOM is not supported; write NIfTI instead (--format nifti)"
        )
    normal = np.cross(
        *(
            np.asarray(v, float)
            for v in (datasets[0].ImageOrientationPatient[:3], datasets[0].ImageOrientationPatient[3:])
        )
    )
    heights = np.array(
        [np.asarray(ds.get("ImagePositionPatient", [0, 0, 0]), float) @ normal for ds in datasets]
    )
    levels = np.unique(np.round(heights, 3))
    if len(levels) != ijk.shape[2]:
        raise InputError(
            f"the series has {len(levels)} slice positions but the volume {ijk.shape[2]} slices; was it edited on disk?"
        )
    series_uid = generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, ds, h in zip(files, datasets, heights):
        k = int(np.searchsorted(levels, round(float(h), 3)))
        edited, original = ijk[:, :, k].T, orig_ijk[:, :, k].T  # (rows, cols) HU
        stored = ds.pixel_array
        slope, inter = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        changed = edited != original
        if changed.any():
            info = np.iinfo(stored.dtype)
            stored = stored.copy()
            stored[changed] = np.clip(np.rint((edited[changed] - inter) / slope), info.min, info.max).astype(
                stored.dtype
            )
        source_ref = Dataset()
        source_ref.ReferencedSOPClassUID, source_ref.ReferencedSOPInstanceUID = (
            ds.SOPClassUID,
            ds.SOPInstanceUID,
        )
        ds.set_pixel_data(
            stored,
            ds.get("PhotometricInterpretation", "MONOCHROME2"),
            int(ds.get("BitsStored", 16)),
            generate_instance_uid=False,
        )
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = int(ds.get("SeriesNumber", 0) or 0) + 1000
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL", SYNTHETIC_TAG]
        ds.SeriesDescription = f"{SYNTHETIC_TAG} {ds.get('SeriesDescription', '')}".strip()[:64]
        ds.DerivationDescription = description[:1024]
        ds.ContentQualification = "RESEARCH"
        ds.BurnedInAnnotation = "NO"
        ds.SourceImageSequence = Sequence([source_ref])
        ds.save_as(out_dir / path.name, enforce_file_format=True)
    return out_dir


def _series_files(source: Path, series_uid: str, scan_series) -> list[Path]:
    if source.is_file():
        return [source]
    found = scan_series(source)
    match = [s for s in found if s.uid == series_uid] or (found if len(found) == 1 else [])
    if not match:
        raise InputError(f"series {series_uid} is no longer in {source}")
    return match[0].files
