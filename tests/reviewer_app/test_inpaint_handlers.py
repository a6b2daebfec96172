"""Inpainting tab logic: masks from paint, organs, boxes and placed lesions; bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.catalog import CatalogEntry
from core.errors import InputError
from reviewer_app import inpaint_handlers as h
from reviewer_app.services import Services
from reviewer_app.state import InpaintState, ViewerState


@pytest.fixture
def services(tmp_path: Path) -> Services:
    ct = np.full((64, 64, 6), -1000, np.int16)  # NIfTI (x, y, z), 0.8 mm pixels
    ct[8:56, 8:56, :] = 40
    seg = np.zeros(ct.shape, np.uint8)
    seg[20:30, 30:44, 2:4] = 1  # "liver" on slices 2-3
    affine = np.diag([-0.8, -0.8, 3.0, 1.0])  # LPS voxel axes: file (i, j) = our (x, y)
    nib.save(nib.Nifti1Image(ct, affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(seg, affine), str(tmp_path / "seg.nii.gz"))
    entries = [
        CatalogEntry("ct", "test CT", "volume", str(tmp_path / "ct.nii.gz"), labels=str(tmp_path / "seg.nii.gz")),
        CatalogEntry("ihc", "slide", "slide", str(tmp_path / "x.png")),
    ]
    return Services(catalog=entries, work_dir=tmp_path)


def _taken(services: Services, k: int = 2) -> InpaintState:
    viewer = ViewerState(key="ct", index={"axial": k, "coronal": 0, "sagittal": 0})
    state, out = h.take_slice(services, InpaintState(), viewer)
    assert out["editor"]["background"].shape == (64, 64, 3)  # the slice at its native matrix
    return state


def test_take_slice_lists_organs_on_that_slice(services: Services) -> None:
    viewer = ViewerState(key="ct", index={"axial": 2, "coronal": 0, "sagittal": 0})
    state, out = h.take_slice(services, InpaintState(), viewer)
    assert state.slice_index == 2 and out["organ"]["choices"] == ["seg"]
    viewer.index["axial"] = 0
    _, out0 = h.take_slice(services, InpaintState(), viewer)
    assert out0["organ"]["choices"] == []


def test_painted_layer_alpha_is_the_mask(services: Services) -> None:
    state = _taken(services)
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[10:20, 30:33, 3] = 255
    state, out = h.mask_from_editor(services, state, {"background": np.zeros((64, 64, 4)), "layers": [layer],
                                                       "composite": None})
    assert state.mask.sum() == 30 and state.mask[10, 30] and not state.mask[9, 30]
    np.testing.assert_array_equal(out["mask_view"] > 0, state.mask)
    # a canvas twice the slice's size maps back pixel for pixel
    big = np.kron(layer, np.ones((2, 2, 1), np.uint8))
    state2, _ = h.mask_from_editor(services, state, {"background": np.zeros((128, 128, 4)), "layers": [big]})
    np.testing.assert_array_equal(state2.mask, state.mask)


def test_organ_and_box_masks(services: Services) -> None:
    state = _taken(services)
    state, _ = h.mask_from_organ(services, state, "seg", 0, box=False)
    organ = state.mask.copy()
    assert organ.sum() == 10 * 14
    state, out = h.mask_from_organ(services, state, "seg", 4.0, box=True)  # 4 mm = 5 px at 0.8 mm
    assert state.mask.sum() == (10 + 10) * (14 + 10) and np.all(state.mask[organ])
    assert "bounding box + 4 mm" in out["mask_info"]


def test_lesion_outline_is_placed_where_clicked_at_its_size(services: Services) -> None:
    state = _taken(services)
    state, _ = h.place_shape(services, state, "Round lesion", 16.0, 0.0, 40, 30)  # click at col 40, row 30
    rows, cols = np.nonzero(state.mask)
    assert abs(rows.mean() - 30) <= 1 and abs(cols.mean() - 40) <= 1
    assert 18 <= cols.max() - cols.min() + 1 <= 22  # 16 mm at 0.8 mm/px = 20 px across


def test_bad_input_messages(services: Services) -> None:
    with pytest.raises(InputError, match="open a CT"):
        h.take_slice(services, InpaintState(), ViewerState())
    with pytest.raises(InputError, match="2D slide"):
        h.take_slice(services, InpaintState(), ViewerState(key="ihc"))
    state = _taken(services)
    with pytest.raises(InputError, match="empty"):
        h.mask_from_editor(services, state, {"background": np.zeros((64, 64, 4)), "layers": [np.zeros((64, 64, 4))]})
    with pytest.raises(InputError, match="not on slice"):
        h.mask_from_organ(services, _taken(services, k=0), "seg", 0, box=False)
    with pytest.raises(InputError, match="make a mask first"):
        h.generate(services, state, "any", "ddim", 10, 0, 1)
    with pytest.raises(InputError, match="outside the slice"):
        h.place_shape(services, state, "Round lesion", 5.0, 0.0, 500, 500)


def test_generate_paints_the_chosen_content_and_records_it(services: Services) -> None:
    import json

    state = _taken(services)
    state, out = h.mask_from_organ(services, state, "seg", 0, box=False)
    assert out["content"] == "tissue"  # an organ mask proposes healthy tissue
    _, placed = h.place_shape(services, state, "Round lesion", 8.0, 0.0, 32, 32)
    assert placed["content"] == "lesion"
    demo = Path(__file__).resolve().parents[2] / "assets" / "models" / "ct-inpaint"  # classes tissue, lesion
    services = replace(services, model_dirs=[demo])
    name = next(iter(services.inpaint_models()))
    results = {}
    for content in ("tissue", "lesion"):
        done, out = h.generate(services, state, name, "dpmsolver++", 10, 0, 1, content)
        prov = json.loads((Path(done.out_dir) / "provenance.json").read_text())
        assert prov["content"] == content and f", {content}, sampler" in out["provenance"]
        results[content] = done.result
    inside = state.mask
    assert not np.array_equal(results["tissue"][inside], results["lesion"][inside])  # the label reaches the model
    np.testing.assert_array_equal(results["tissue"][~inside], results["lesion"][~inside])
    with pytest.raises(InputError, match="unknown content 'bone'"):
        h.generate(services, state, name, "dpmsolver++", 10, 0, 1, "bone")


def test_generate_button_sends_the_paint_choice(tmp_path: Path) -> None:
    """The tab wires the 'Paint' radio into Generate (last input, as generate() takes it) and lets
    mask handlers set it."""
    from reviewer_app.app import build_app

    cfg = build_app(Services(catalog=[], work_dir=tmp_path)).get_config_file()
    by_id = {c["id"]: c for c in cfg["components"]}
    paint = next(c for c in cfg["components"] if c["props"].get("label") == "Paint")
    choices = [tuple(c) for c in paint["props"]["choices"]]
    assert paint["type"] == "radio" and choices == [("lesion", "lesion"), ("healthy tissue", "tissue")]
    generate = next(b for b in cfg["components"] if b["props"].get("value") == "Generate")
    dep = next(d for d in cfg["dependencies"] if (generate["id"], "click") in [tuple(t) for t in d["targets"]])
    labels = [by_id[i]["props"].get("label") for i in dep["inputs"][1:]]
    assert labels == ["Model", "Sampler", "Steps", "Seed", "Samples (for the uncertainty map)", "Paint"]
    assert paint["id"] in dep["outputs"]
