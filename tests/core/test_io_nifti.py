"""NIfTI volumes, case layouts, label maps and bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import InputError
from core.io import load_volume


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def test_nifti_ct_is_reoriented_to_canonical(shared_data: Path) -> None:
    path = shared_data / "ct" / "totalseg" / "example_ct.nii.gz"
    raw = nib.load(str(path))
    assert nib.aff2axcodes(raw.affine) == ("R", "A", "S")
    vol = load_volume(path)
    assert vol.modality == "CT" and vol.meta["source_axcodes"] == "RAS"
    assert vol.shape == (112, 101, 122)  # (z, y, x) from (x=122, y=101, z=112)
    data = np.asarray(raw.dataobj)
    # RAS -> LPS flips x and y: our (z, y, x) = file (121 - x, 100 - y, z)
    assert vol.array[5, 10, 20] == data[121 - 20, 100 - 10, 5]
    assert nib.aff2axcodes(vol.affine) == ("L", "P", "S")
    # the same voxel is at the same world position before and after
    np.testing.assert_allclose(vol.world_mm(5, 10, 20), (raw.affine @ [101, 90, 5, 1])[:3])


def test_totalsegmentator_masks_line_up_with_the_ct(shared_data: Path) -> None:
    base = shared_data / "ct" / "totalseg"
    vol = load_volume(base / "example_ct.nii.gz", labels=base / "example_seg")
    present = set(vol.labels.present().values())
    # 62 masks are non-empty; "lung" is the union of the lobes, which are painted over it
    # (small structures last), so 61 names survive in one label map.
    assert len(present) == 61 and "lung" not in present
    for name in ("liver", "lung_vessels", "vertebrae_L3"):
        src = load_volume(base / "example_seg" / f"{name}.nii.gz").array > 0
        assert np.array_equal(vol.labels.mask(name), src) or name == "lung_vessels"
        assert np.all(src[vol.labels.mask(name)])  # every labelled voxel is in its own mask
    assert {"liver", "spleen", "kidney_left", "kidney_right", "aorta"} <= present
    hu = {n: float(np.median(vol.array[vol.labels.mask(n)])) for n in ("liver", "spleen", "aorta", "femur_left")}
    assert 30 < hu["liver"] < 120 and 30 < hu["spleen"] < 150
    assert hu["femur_left"] > 200  # bone
    left, right = vol.labels.mask("kidney_left"), vol.labels.mask("kidney_right")
    assert np.nonzero(right)[2].mean() < np.nonzero(left)[2].mean()  # right kidney at low x


def test_sts_tumour_mask_on_its_grid(shared_data: Path) -> None:
    case = sorted((shared_data / "ct" / "ibsi_sts").glob("STS_*"))[0]
    vol = load_volume(case / "CT_image.nii.gz", labels=case / "CT_mask.nii.gz")
    tumour = vol.labels.array > 0
    assert tumour.sum() > 100
    assert -100 < np.median(vol.array[tumour]) < 150  # soft-tissue sarcoma HU


def test_kits_case_folder(tmp_path: Path) -> None:
    ct = np.full((16, 16, 8), -1000, np.int16)
    ct[4:12, 4:12, 2:6] = 40
    seg = np.zeros((16, 16, 8), np.uint8)
    seg[6:10, 6:10, 3:5] = 2
    _save(tmp_path / "imaging.nii.gz", ct)
    _save(tmp_path / "segmentation.nii.gz", seg)
    vol = load_volume(tmp_path)
    assert vol.labels.present() == {2: "tumor"}
    assert np.all(vol.array[vol.labels.mask("tumor")] == 40)


def test_mask_on_other_grid_is_resampled_nearest(tmp_path: Path) -> None:
    ct = np.zeros((20, 20, 10), np.float32) - 1000
    coarse = np.zeros((10, 10, 5), np.uint8)
    coarse[2:4, 2:4, 1:3] = 7
    _save(tmp_path / "ct.nii", ct)
    _save(tmp_path / "seg.nii", coarse, np.diag([2.0, 2.0, 2.0, 1.0]))
    vol = load_volume(tmp_path / "ct.nii", labels=tmp_path / "seg.nii")
    assert set(np.unique(vol.labels.array)) == {0, 7}  # nearest neighbour: no new ids
    assert (vol.labels.array == 7).sum() == 2 * 2 * 2 * 8  # each coarse voxel -> 2x2x2


def test_mask_that_does_not_overlap_is_rejected(tmp_path: Path) -> None:
    _save(tmp_path / "ct.nii", np.zeros((20, 20, 10), np.float32) - 1000)
    far = np.diag([1.0, 1.0, 1.0, 1.0])
    far[:3, 3] = 500.0
    _save(tmp_path / "seg.nii", np.ones((5, 5, 5), np.uint8), far)
    with pytest.raises(InputError, match="does not overlap"):
        load_volume(tmp_path / "ct.nii", labels=tmp_path / "seg.nii")


def test_nan_and_4d_niftis_are_rejected(tmp_path: Path) -> None:
    _save(tmp_path / "nan.nii.gz", np.full((8, 8, 4), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        load_volume(tmp_path / "nan.nii.gz")
    _save(tmp_path / "4d.nii.gz", np.zeros((8, 8, 4, 3), np.float32))
    with pytest.raises(InputError, match="4D"):
        load_volume(tmp_path / "4d.nii.gz")


def test_corrupt_nifti_and_2d_image_messages(tmp_path: Path) -> None:
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="broken.nii.gz"):
        load_volume(tmp_path / "broken.nii.gz")
    (tmp_path / "tile.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match="2D image"):
        load_volume(tmp_path / "tile.png")


def test_zip_upload_of_a_dicom_folder(shared_data: Path, tmp_path: Path) -> None:
    series = shared_data / "ct" / "totalseg" / "example_ct_dicom"
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(series.iterdir())[:3]:
            zf.write(p, f"patient/series/{p.name}")
    vol = load_volume(archive)
    assert vol.shape == (3, 512, 512) and vol.modality == "CT"


def test_zip_with_path_traversal_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escape.nii", b"x")
    with pytest.raises(InputError, match="unsafe path"):
        load_volume(archive)
