"""core.io.write: edited volumes back to NIfTI / DICOM in the source's geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from core.errors import InputError
from core.io.labels import read_label_map
from core.io.load import load_volume
from core.io.write import SYNTHETIC_TAG, canonical_to_source, write_mask_nifti, write_volume_like


def make_dicom_series(folder: Path, *, n: int = 4, rows: int = 48, cols: int = 40, seed: int = 0) -> Path:
    """A small CT series (int16 stored values, intercept -1024, files named out of order)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[:rows, :cols]
    body = ((yy - rows / 2) / (rows * 0.45)) ** 2 + ((xx - cols / 2) / (cols * 0.45)) ** 2 < 1
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "ABD", 3, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100.0, -120.0, 50.0 + 2.5 * k]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], 2.5
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        hu = np.where(body, 40 + rng.normal(0, 10, (rows, cols)), -1000)
        ds.set_pixel_data(np.rint(hu + 1024).astype(np.int16), "MONOCHROME2", 16, generate_instance_uid=False)
        ds.save_as(folder / f"slice_{(7 * k) % n:02d}.dcm", enforce_file_format=True)
    return folder


def _edit(volume, k: int):
    edited = volume.array.copy()
    m = np.zeros(volume.shape, bool)
    m[k, 10:20, 12:22] = True
    edited[m] = 1234.0  # outside the random test data range, so every edited voxel changes
    return edited, m


@pytest.mark.parametrize("affine_diag", [(-0.7, 0.8, 2.5), (0.7, -0.8, -2.5)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_nifti_keeps_header_orientation_and_unchanged_voxels(tmp_path: Path, affine_diag, dtype) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, (40, 48, 5)).astype(dtype)  # file order (i, j, k)
    affine = np.diag([*affine_diag, 1.0])
    affine[:3, 3] = (10, -20, 30)
    src = tmp_path / "ct.nii.gz"
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = b"scanner export"
    nib.save(img, str(src))
    vol = load_volume(src, modality="CT")
    edited, m = _edit(vol, 2)
    out = write_volume_like(vol, edited, tmp_path / "out")
    back = nib.load(str(out))
    assert back.shape == data.shape and np.array_equal(back.affine, nib.load(str(src)).affine)
    assert back.get_data_dtype() == np.dtype(dtype) and back.header["descrip"] == b"scanner export"
    raw = np.asarray(back.dataobj)
    changed = raw != data
    assert changed.sum() == m.sum()  # exactly the edited voxels differ, in the file's own order
    assert np.array_equal(canonical_to_source(m, "".join(nib.aff2axcodes(affine))), changed)
    reread = load_volume(out, modality="CT")
    assert np.array_equal(reread.array, edited) and np.allclose(reread.affine, vol.affine)


def test_dicom_series_is_written_as_a_derived_synthetic_series(tmp_path: Path) -> None:
    src = make_dicom_series(tmp_path / "src")
    vol = load_volume(src)
    edited, m = _edit(vol, 1)
    out = write_volume_like(vol, edited, tmp_path / "out")
    back = load_volume(out)
    assert back.shape == vol.shape and np.allclose(back.affine, vol.affine) and back.spacing == vol.spacing
    assert np.array_equal(back.array, edited)
    assert back.meta["series_uid"] != vol.meta["series_uid"]
    originals = {pydicom.dcmread(p).SOPInstanceUID for p in src.iterdir()}
    for path in out.iterdir():
        ds = pydicom.dcmread(path)
        orig = pydicom.dcmread(src / path.name)
        assert (
            ds.SOPInstanceUID not in originals
            and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        )
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and SYNTHETIC_TAG in ds.ImageType
        assert (
            ds.SeriesDescription.startswith(SYNTHETIC_TAG) and "synthetic" in ds.DerivationDescription.lower()
        )
        assert ds.ContentQualification == "RESEARCH"
        assert ds.StudyInstanceUID == orig.StudyInstanceUID
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == orig.SOPInstanceUID
        differs = ds.pixel_array != orig.pixel_array
        assert differs.sum() in (0, m.sum())  # stored values only change where the image was edited


def test_real_dicom_series_round_trip(shared_data: Path, tmp_path: Path) -> None:
    vol = load_volume(shared_data / "ct" / "totalseg" / "example_ct_dicom")
    edited, _ = _edit(vol, 7)
    out = write_volume_like(vol, edited, tmp_path)
    back = load_volume(out)
    assert np.array_equal(back.array, edited) and np.allclose(back.affine, vol.affine)


def test_mask_nifti_lines_up_with_the_volume(tmp_path: Path) -> None:
    data = np.zeros((30, 20, 6), np.int16)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])  # RAS file: canonical flips x and y
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "ct.nii.gz"))
    vol = load_volume(tmp_path / "ct.nii.gz", modality="CT")
    _, m = _edit(vol, 3)
    path = write_mask_nifti(m, vol, tmp_path / "mask.nii.gz")
    assert nib.load(str(path)).get_data_dtype() == np.uint8
    assert np.array_equal(read_label_map(path, reference=vol).array > 0, m)
    dicom = load_volume(make_dicom_series(tmp_path / "dcm"))
    _, m2 = _edit(dicom, 2)
    assert np.array_equal(
        read_label_map(write_mask_nifti(m2, dicom, tmp_path / "m2.nii.gz"), reference=dicom).array > 0, m2
    )


def test_shape_mismatch_is_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.int16), np.eye(4)), str(tmp_path / "ct.nii.gz"))
    vol = load_volume(tmp_path / "ct.nii.gz", modality="CT")
    with pytest.raises(InputError, match="differs from the volume"):
        write_volume_like(vol, np.zeros((3, 8, 9), np.float32), tmp_path / "out")
