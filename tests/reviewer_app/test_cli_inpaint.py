"""``synthdx inpaint`` and ``synthdx train inpaint`` end to end (tiny random model, 2 steps)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from core.io.load import load_volume
from reviewer_app.cli import main
from tests.core.test_ct_inpaint import make_tiny_model
from tests.core.test_train_inpaint import TINY_MODEL, make_case
from tests.core.test_write import make_dicom_series


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def nifti_case(tmp_path_factory) -> Path:
    return make_case(tmp_path_factory.mktemp("case") / "case_0", layout="pair")


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_nifti_input_writes_every_file_in_the_input_geometry(
    model_dir: Path, nifti_case: Path, tmp_path: Path, capsys
) -> None:
    image, mask = nifti_case / "CT_image.nii.gz", nifti_case / "CT_mask.nii.gz"
    code, out, err = _run(
        capsys,
        "inpaint",
        "--model",
        model_dir,
        "--volume",
        image,
        "--slice",
        3,
        "--mask",
        mask,
        "--seed",
        7,
        "--steps",
        2,
        "--samples",
        2,
        "--sampler",
        "ddim",
        "--out",
        tmp_path,
    )
    assert code == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    expected = {"inpainted.nii.gz", "mask.nii.gz", "provenance.json", "samples_hu.npy", "std_hu.npy"}
    assert expected | {f"preview_{v}.png" for v in ("before", "after", "outline", "std", "zoom")} <= names
    src, res = nib.load(str(image)), nib.load(str(tmp_path / "inpainted.nii.gz"))
    assert (
        res.shape == src.shape
        and np.array_equal(res.affine, src.affine)
        and res.get_data_dtype() == src.get_data_dtype()
    )
    changed = np.asarray(res.dataobj) != np.asarray(src.dataobj)
    painted = np.asarray(nib.load(str(mask)).dataobj) > 0
    assert changed.any() and not (changed & ~painted).any() and not changed[:, :, [0, 1, 2, 4, 5, 6, 7]].any()
    written_mask = nib.load(str(tmp_path / "mask.nii.gz"))
    assert np.array_equal(written_mask.affine, src.affine) and np.array_equal(
        np.asarray(written_mask.dataobj)[:, :, 3] > 0, painted[:, :, 3]
    )
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["seeds"] == [7, 8] and prov["num_inference_steps"] == 2 and prov["sampler"] == "ddim"
    assert (
        prov["input"]["slice"] == 3 and prov["input"]["format"] == "nifti" and len(prov["input_sha256"]) == 64
    )
    assert (
        prov["models"][0]["sha256"] and prov["mask_sha256"] and prov["files"]["volume"] == "inpainted.nii.gz"
    )
    assert np.load(tmp_path / "samples_hu.npy").shape == (2, 64, 64)


def test_dicom_input_writes_a_derived_series_and_a_png_mask_works(
    model_dir: Path, tmp_path: Path, capsys
) -> None:
    from PIL import Image

    series = make_dicom_series(tmp_path / "dcm", n=4, rows=48, cols=40)
    vol = load_volume(series)
    m = np.zeros((48, 40), np.uint8)
    m[20:26, 15:22] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    code, _, err = _run(
        capsys,
        "inpaint",
        "--model",
        model_dir,
        "--volume",
        series,
        "--slice",
        2,
        "--mask",
        tmp_path / "mask.png",
        "--steps",
        2,
        "--out",
        tmp_path / "out",
    )
    assert code == 0, err
    back = load_volume(tmp_path / "out" / "inpainted_dicom")
    assert (
        back.shape == vol.shape
        and np.allclose(back.affine, vol.affine)
        and back.meta["series_uid"] != vol.meta["series_uid"]
    )
    diff = back.array != vol.array
    assert diff[2].any() and not diff[[0, 1, 3]].any() and not (diff[2] & (m == 0)).any()
    ds = pydicom.dcmread(next((tmp_path / "out" / "inpainted_dicom").iterdir()))
    assert "DERIVED" in ds.ImageType and "SYNTHETIC" in ds.SeriesDescription
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["input"]["format"] == "dicom"


def _error(capsys, *args) -> str:
    code, _, err = _run(capsys, *args)
    assert code == 2 and err.startswith("synthdx: error: ") and err.count("\n") == 1, err
    return err


def test_bad_inputs_fail_with_one_line(model_dir: Path, nifti_case: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    image = nifti_case / "CT_image.nii.gz"
    common = ["--model", model_dir, "--volume", image, "--out", tmp_path / "o"]
    np.save(tmp_path / "empty.npy", np.zeros((64, 64)))
    assert "mask is empty" in _error(
        capsys, "inpaint", *common, "--slice", 3, "--mask", tmp_path / "empty.npy"
    )
    edge = np.zeros((64, 64))
    edge[0:6, 20:30] = 1
    np.save(tmp_path / "edge.npy", edge)
    assert "border" in _error(capsys, "inpaint", *common, "--slice", 3, "--mask", tmp_path / "edge.npy")
    np.save(tmp_path / "small.npy", np.ones((10, 10)))
    assert "10x10 pixels but the slice is 64x64" in _error(
        capsys, "inpaint", *common, "--slice", 3, "--mask", tmp_path / "small.npy"
    )
    assert "empty on slice 0" in _error(
        capsys, "inpaint", *common, "--slice", 0, "--mask", nifti_case / "CT_mask.nii.gz"
    )
    assert "outside 0..7" in _error(capsys, "inpaint", *common, "--slice", 8, "--mask", tmp_path / "edge.npy")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "slice.png")
    assert "2D image" in _error(
        capsys,
        "inpaint",
        "--model",
        model_dir,
        "--volume",
        tmp_path / "slice.png",
        "--slice",
        0,
        "--mask",
        tmp_path / "edge.npy",
        "--out",
        tmp_path / "o",
    )
    assert "does not exist" in _error(
        capsys,
        "inpaint",
        "--model",
        tmp_path / "nope",
        "--volume",
        image,
        "--slice",
        3,
        "--mask",
        tmp_path / "edge.npy",
        "--out",
        tmp_path / "o",
    )
    (tmp_path / "notamodel").mkdir()
    assert "missing unet/config.json" in _error(
        capsys,
        "inpaint",
        "--model",
        tmp_path / "notamodel",
        "--volume",
        image,
        "--slice",
        3,
        "--mask",
        tmp_path / "edge.npy",
        "--out",
        tmp_path / "o",
    )


def test_train_inpaint_cli_trains_and_exports(nifti_case: Path, tmp_path: Path, capsys) -> None:
    from core.training.config import TrainConfig, save_config

    save_config(
        TrainConfig(
            model=TINY_MODEL,
            steps=2,
            batch_size=2,
            warmup_steps=1,
            sample_every=2,
            checkpoint_every=2,
            sample_steps=2,
        ),
        tmp_path / "tiny.json",
    )
    args = [
        "train",
        "inpaint",
        "--config",
        tmp_path / "tiny.json",
        "--data",
        nifti_case,
        "--licence",
        "CC0",
        "--out",
        tmp_path / "run",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert "no organ masks; set its weight to 0" in _error(capsys, *args)  # a tumour mask only, default mix
    args += ["--mask-mix", "lesion=1,blob=1,transplant=0.5"]
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    card = json.loads((tmp_path / "run" / "model" / "model_card.json").read_text())
    assert card["training"]["steps"] == 2 and card["training"]["data"][0]["licence"] == "CC0"
    assert card["training"]["config"]["data"]["mask_mix"] == [
        ["lesion", 1.0],
        ["blob", 1.0],
        ["transplant", 0.5],
    ]
    assert "model written to" in out
    assert "match no data source" in _error(capsys, *args, "--holdout", "nobody")
    assert "--hu-range" in _error(capsys, *args, "--hu-range", "wide-ish")
    assert "KIND=WEIGHT" in _error(capsys, *args[:-2], "--mask-mix", "lesion:1")
    # Extend the finished run from its own config.json with a new, decaying schedule
    run, extend = tmp_path / "run", ["train", "inpaint", "--config", tmp_path / "run" / "config.json"]
    assert "constant schedule only" in _error(capsys, *extend, "--steps", "4", "--lr-decay-steps", "2")
    assert "between 0 and steps" in _error(capsys, *extend, "--lr-schedule", "constant", "--steps", "4",
                                           "--lr-decay-steps", "5")  # fmt: skip
    code, _, err = _run(capsys, *extend, "--steps", "4", "--lr", "0.001", "--lr-schedule", "constant",
                        "--lr-decay-steps", "2", "--no-progress")  # fmt: skip
    assert code == 0, err
    card = json.loads((run / "model" / "model_card.json").read_text())
    assert card["training"]["steps"] == 4 and card["training"]["config"]["lr_decay_steps"] == 2
    assert [p["until_step"] for p in card["training"]["earlier_phases"]] == [2]
    lrs = [r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert lrs[-2:] == pytest.approx([0.00055, 0.0001])  # steps 3 and 4: the ramp down to a tenth
