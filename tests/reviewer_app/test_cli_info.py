"""``synthdx info`` through the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def _synthdx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reviewer_app.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_info_json_for_dicom_series(shared_data: Path) -> None:
    res = _synthdx("info", "--json", str(shared_data / "ct" / "totalseg" / "example_ct_dicom"))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["kind"] == "volume" and info["modality"] == "CT"
    assert info["shape"] == [20, 512, 512]
    assert info["spacing_mm"] == [2.0, 0.9766, 0.9766]
    assert info["intensity"]["unit"] == "HU" and info["intensity"]["min"] == -1024.0
    assert info["series"][0]["n_files"] == 20
    assert info["orientation"]["canonical"] == "LPS"


def test_info_help_documents_json_keys() -> None:
    res = _synthdx("info", "--help")
    assert res.returncode == 0
    for key in ("spacing_mm", "orientation", "intensity", "series", "levels", "warnings"):
        assert key in res.stdout


def test_bad_inputs_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "scan.dcm"
    garbage.write_bytes(b"\x00" * 200)
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), str(nan))
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (garbage, nan, empty, tmp_path / "missing.nii"):
        res = _synthdx("info", str(target))
        assert res.returncode == 2
        assert "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("synthdx: error:")


def test_info_json_for_a_whole_slide_image(shared_data: Path) -> None:
    res = _synthdx("info", "--json", str(shared_data / "histo" / "cmu-1-small-region.svs"))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["kind"] == "slide" and info["modality"] == "histology"
    assert info["shape"] == [2967, 2220]
    assert info["levels"][0] == {"width": 2220, "height": 2967, "downsample": 1.0}
    assert abs(info["mpp"] - 0.499) < 1e-3
    assert info["intensity"]["unit"] == "RGB" and info["spacing_mm"] is None
