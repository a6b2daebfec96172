"""DICOM series: HU, slice order, geometry, compressed syntaxes, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from core.errors import InputError
from core.io import load_volume
from core.io.dicom import read_dicom, scan_series


@pytest.fixture(scope="module")
def series_dir(shared_data: Path) -> Path:
    return shared_data / "ct" / "totalseg" / "example_ct_dicom"


def _raw_hu_by_position(folder: Path) -> np.ndarray:
    """Independent reference: pydicom pixels * slope + intercept, ordered by z position."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])


def test_series_loads_to_hu_in_position_order(series_dir: Path) -> None:
    vol = load_volume(series_dir)
    assert vol.shape == (20, 512, 512)
    assert vol.modality == "CT"
    np.testing.assert_array_equal(vol.array, _raw_hu_by_position(series_dir).astype(np.float32))
    assert vol.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert vol.array.min() == -1024.0  # air after the -1024 intercept, not raw 0
    # slice 0 is the most inferior: its world z is the smallest
    assert vol.world_mm(0, 0, 0)[2] < vol.world_mm(19, 0, 0)[2]
    assert vol.world_mm(0, 0, 0)[2] == pytest.approx(-804.5)


def test_series_on_the_grid_of_its_segmentation(series_dir: Path, shared_data: Path) -> None:
    import nibabel as nib

    seg_path = shared_data / "ct" / "totalseg" / "example_seg_dicom.nii.gz"
    vol = load_volume(series_dir, labels=seg_path)
    seg = nib.load(str(seg_path))
    # same physical grid: every voxel centre maps to the same world point
    corners = [(0, 0, 0), (19, 511, 0), (19, 0, 511), (7, 300, 200)]
    for z, y, x in corners:
        # label file voxel (i, j, k) holding our voxel (z, y, x), via its own affine
        ijk = np.linalg.inv(seg.affine) @ np.append(vol.world_mm(z, y, x), 1.0)
        i, j, k = np.rint(ijk[:3]).astype(int)
        assert vol.labels.array[z, y, x] == np.asarray(seg.dataobj)[i, j, k]
    names = vol.labels.present()
    assert {"liver", "spleen", "aorta"} <= set(names.values())
    liver, spleen = vol.labels.mask("liver"), vol.labels.mask("spleen")
    assert 40 < np.median(vol.array[liver]) < 150  # enhanced liver parenchyma, HU
    # radiological orientation: liver on the patient's right = low column index
    assert np.nonzero(liver)[2].mean() < np.nonzero(spleen)[2].mean()
    aorta = vol.labels.mask("aorta")
    assert np.median(vol.array[aorta]) > 100  # contrast-filled


def test_order_ignores_file_names_and_instance_numbers(series_dir: Path, tmp_path: Path) -> None:
    files = sorted(series_dir.iterdir())
    rng = np.random.default_rng(0)
    for n, src in enumerate(rng.permutation(files)):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = int(rng.integers(1, 1000))
        ds.save_as(tmp_path / f"{n:03d}.dcm")
    np.testing.assert_array_equal(load_volume(tmp_path).array, load_volume(series_dir).array)


def test_duplicate_and_missing_slices_are_reported(series_dir: Path, tmp_path: Path) -> None:
    files = sorted(series_dir.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for p in files[:5] + files[6:]:  # slice 5 missing
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(files[10], tmp_path / "copy_of_10.dcm")  # duplicate position
    vol = read_dicom(tmp_path)
    assert vol.shape[0] == 19
    warnings = " ".join(vol.meta["warnings"])
    assert "duplicate slice" in warnings
    assert "missing" in warnings and "4.00 mm" in warnings


def test_folder_with_two_series_lists_them_and_allows_choosing(series_dir: Path, tmp_path: Path) -> None:
    for n, p in enumerate(sorted(series_dir.iterdir())[:4]):
        for uid, desc in (("1.2.3.1", "arterial"), ("1.2.3.2", "venous")):
            ds = pydicom.dcmread(p)
            ds.SeriesInstanceUID, ds.SeriesDescription = uid, desc
            ds.save_as(tmp_path / f"{desc}_{n}.dcm")
    with pytest.raises(InputError, match="2 series") as err:
        load_volume(tmp_path)
    assert "arterial" in str(err.value) and "venous" in str(err.value)
    assert {s.uid for s in scan_series(tmp_path)} == {"1.2.3.1", "1.2.3.2"}
    vol = load_volume(tmp_path, series_uid="1.2.3.2")
    assert vol.shape[0] == 4 and vol.meta["series_description"] == "venous"


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [("693_J2KR.dcm", "693_UNCR.dcm"), ("MR2_J2KR.dcm", "MR2_UNCR.dcm"), ("RG1_J2KR.dcm", "RG1_UNCR.dcm")],
)
def test_lossless_compressed_files_decode_like_uncompressed(compressed: str, reference: str) -> None:
    from pydicom.data import get_testdata_file

    a = load_volume(get_testdata_file(compressed))
    b = load_volume(get_testdata_file(reference))
    assert 1 in a.shape  # one slice; not always axial (MR2 is not), so not always z
    np.testing.assert_array_equal(a.array, b.array)


def test_jpeg_lossless_ct_slice_is_in_hu() -> None:
    from pydicom.data import get_testdata_file

    vol = load_volume(get_testdata_file("bad_sequence.dcm"))  # JPEG lossless process 14, real CT
    assert vol.modality == "CT" and vol.shape == (1, 512, 512)
    assert vol.array.min() <= -1000 and 500 < vol.array.max() < 4000


def test_corrupt_dicom_is_an_input_error(series_dir: Path, tmp_path: Path) -> None:
    src = sorted(series_dir.iterdir())[0]
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(src.read_bytes()[:3000])  # header survives, pixel data cut
    with pytest.raises(InputError, match="truncated.dcm"):
        load_volume(bad)


def test_dicom_without_pixel_data_is_an_input_error(series_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(sorted(series_dir.iterdir())[0])
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(InputError, match="without pixel data"):
        load_volume(tmp_path / "nopixels.dcm")


def test_non_image_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="not a supported volume"):
        load_volume(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no DICOM files"):
        load_volume(empty)
