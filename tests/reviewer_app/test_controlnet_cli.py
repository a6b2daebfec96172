"""``synthdx generate``: files written for each condition format, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from reviewer_app.cli import main
from tests.core.test_controlnet import CT, tiny_ct_models


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_ct_models(tmp_path_factory.mktemp("models"))


def condition() -> np.ndarray:
    cm = np.full((16, 16), CT.index("body") + 1, np.uint8)
    cm[:2], cm[-2:] = CT.index("air") + 1, CT.index("air") + 1
    cm[4:10, 5:11] = CT.index("liver") + 1
    return cm


def test_generate_writes_condition_results_previews_and_provenance(models, tmp_path: Path, capsys) -> None:
    _, cn = models
    np.save(tmp_path / "cond.npy", condition())
    rc = main(["generate", "--model", str(cn), "--condition", str(tmp_path / "cond.npy"), "--seed", "7", "--steps", "2",
               "--samples", "2", "--scale", "0.5", "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 0
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "condition.npy",
        "condition.png",
        "preview.png",
        "provenance.json",
        "result_0.png",
        "result_1.png",
        "result_hu.nii.gz",
        "result_hu.npy",
    ]
    np.testing.assert_array_equal(np.load(out / "condition.npy"), condition())
    hu = np.load(out / "result_hu.npy")
    assert hu.shape == (2, 16, 16) and hu.dtype == np.float32 and -1000 <= hu.min() and hu.max() <= 1000
    img = nib.load(str(out / "result_hu.nii.gz"))
    assert img.shape == (16, 16, 2) and np.allclose(
        np.abs(np.diag(img.affine))[:3], 4.0
    )  # the model's pixel size
    np.testing.assert_allclose(np.asarray(img.dataobj)[:, :, 1].T, hu[1])
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seeds"] == [7, 8] and prov["num_inference_steps"] == 2 and prov["conditioning_scale"] == 0.5
    assert (
        prov["model"]["sha256"]["controlnet"]
        and len(prov["model_sha256"]) == 64
        and len(prov["condition_sha256"]) == 64
    )
    assert (
        prov["condition_file_sha256"]
        and prov["condition_file"]["mapping"] == "values are the model's class ids"
    )
    assert (
        Image.open(out / "preview.png").size[0] == 3 * Image.open(out / "preview.png").size[1]
    )  # condition | 2 results
    assert "provenance:" in capsys.readouterr().out


def test_colour_png_and_nifti_conditions_give_the_same_class_map(models, tmp_path: Path) -> None:
    from core.pipelines.label_condition import render_classes

    _, cn = models
    Image.fromarray(render_classes(condition(), CT)).save(tmp_path / "cond.png")
    assert (
        main(
            [
                "generate",
                "--model",
                str(cn),
                "--condition",
                str(tmp_path / "cond.png"),
                "--steps",
                "1",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "condition.npy"), condition())
    # a 3D label map with names: 1 = liver on slice 1, 4 mm pixels -> no resampling
    lab = np.zeros((16, 16, 3), np.uint8)
    lab[5:11, 4:10, 1] = 1  # file (x, y, z) -> our (z, y, x)
    nib.save(nib.Nifti1Image(lab, np.diag([-4.0, -4.0, 4.0, 1.0])), str(tmp_path / "seg.nii.gz"))
    (tmp_path / "labels.json").write_text(json.dumps({"1": "liver"}))
    assert (
        main(
            [
                "generate",
                "--model",
                str(cn),
                "--condition",
                str(tmp_path / "seg.nii.gz"),
                "--slice",
                "1",
                "--steps",
                "1",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    got = np.load(tmp_path / "b" / "condition.npy")
    assert (
        got.shape == (16, 16)
        and (got == CT.index("liver") + 1).sum() == 36
        and set(np.unique(got)) == {0, CT.index("liver") + 1}
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_model", "does not exist"),
        ("no_condition", "condition .* does not exist"),
        ("bad_ids", "class ids must be 0..13"),
        ("not_square", "must be square"),
        ("bad_steps", "num_inference_steps"),
        ("missing_slice", "give --slice"),
        ("bad_format", "unsupported condition format"),
    ],
)
def test_bad_input_fails_with_one_line(models, tmp_path: Path, capsys, case: str, message: str) -> None:
    _, cn = models
    np.save(tmp_path / "ok.npy", condition())
    np.save(tmp_path / "ids.npy", np.full((16, 16), 50))
    np.save(tmp_path / "rect.npy", np.zeros((16, 8), np.uint8))
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.uint8), np.eye(4)), str(tmp_path / "vol.nii.gz"))
    (tmp_path / "c.txt").write_text("1")
    cond = {
        "no_condition": "missing.npy",
        "bad_ids": "ids.npy",
        "not_square": "rect.npy",
        "missing_slice": "vol.nii.gz",
        "bad_format": "c.txt",
    }.get(case, "ok.npy")
    model = tmp_path / "nope" if case == "no_model" else cn
    steps = "0" if case == "bad_steps" else "1"
    rc = main(
        [
            "generate",
            "--model",
            str(model),
            "--condition",
            str(tmp_path / cond),
            "--steps",
            steps,
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("synthdx: error:")
    import re

    assert re.search(message, err), err
