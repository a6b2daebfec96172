"""ControlNet tab logic: label maps from the viewer, painting, erase/grow edits, generation, and the app wiring."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.catalog import CatalogEntry
from core.errors import InputError
from core.pipelines.label_condition import render_classes
from reviewer_app import controlnet_handlers as h
from reviewer_app.services import Services
from reviewer_app.state import ViewerState
from tests.core.test_controlnet import CT, tiny_ct_models

LIVER, LESION, BODY, AIR = (CT.index(n) + 1 for n in ("liver", "lesion", "body", "air"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    _, cn = tiny_ct_models(tmp_path_factory.mktemp("models"))
    return cn.parent  # the run folder; its model/ is a subfolder the app finds


@pytest.fixture
def services(model_dir: Path, tmp_path: Path) -> Services:
    ct = np.full((40, 40, 4), -1000, np.int16)  # NIfTI (x, y, z), 2 mm pixels
    ct[4:36, 6:34, :] = 40
    seg = np.zeros(ct.shape, np.uint8)
    seg[10:20, 12:24, 1:3] = 1  # liver on slices 1-2
    seg[24:28, 20:24, 1] = 2  # a tumour
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(ct, affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(seg, affine), str(tmp_path / "seg.nii.gz"))
    (tmp_path / "labels.json").write_text(json.dumps({"1": "liver", "2": "liver_tumor"}))
    entries = [CatalogEntry("ct", "test CT", "volume", str(tmp_path / "ct.nii.gz"), labels=str(tmp_path / "seg.nii.gz")),
               CatalogEntry("nolab", "CT without labels", "volume", str(tmp_path / "ct.nii.gz"))]  # fmt: skip
    return Services(catalog=entries, work_dir=tmp_path / "work", model_dirs=[model_dir])


def _model(services: Services) -> str:
    (name,) = services.controlnet_models()
    return name


def _taken(services: Services, k: int = 1) -> h.ControlNetState:
    viewer = ViewerState(key="ct", index={"axial": k, "coronal": 0, "sagittal": 0})
    state, out = h.take_slice(services, h.ControlNetState(), viewer, _model(services))
    assert out["condition"].shape == (16 * 32, 16 * 32, 3)  # the 16 px canvas shown at 32x
    return state


def test_the_viewer_slice_becomes_a_label_map_on_the_model_canvas(services: Services) -> None:
    state = _taken(services)
    cm = state.classes_map
    assert cm.shape == (16, 16) and {AIR, BODY, LIVER, LESION} <= set(np.unique(cm).tolist())
    # 2 mm pixels -> the model's 4 mm: the 12 x 10 px liver becomes about 6 x 5
    assert 20 <= (cm == LIVER).sum() <= 40 and state.source.startswith("test CT, axial slice 1")


def test_erase_grow_shrink_and_undo(services: Services) -> None:
    name = _model(services)
    state = _taken(services)
    lesion = (state.classes_map == LESION).sum()
    grown, out = h.grow(services, state, "lesion", 1, name)
    assert (grown.classes_map == LESION).sum() > lesion and not np.any(
        (grown.classes_map == LESION) & (state.classes_map == AIR)
    )
    assert "grown by 1 px" in out["map_info"]
    shrunk, _ = h.grow(services, grown, "lesion", -1, name)
    assert (shrunk.classes_map == LESION).sum() < (grown.classes_map == LESION).sum()
    erased, _ = h.erase(services, state, "liver", "body", name)
    assert not (erased.classes_map == LIVER).any() and np.all(
        erased.classes_map[state.classes_map == LIVER] == BODY
    )
    freed, _ = h.erase(services, state, "liver", "free", name)
    assert np.all(freed.classes_map[state.classes_map == LIVER] == 0)
    undone, _ = h.undo(services, freed)
    np.testing.assert_array_equal(undone.classes_map, state.classes_map)
    with pytest.raises(InputError, match="not on this map"):
        h.grow(services, erased, "liver", 2, name)


def test_painting_maps_colours_back_to_classes(services: Services) -> None:
    name = _model(services)
    state, _ = h.blank(services, h.ControlNetState(), name)
    cm = np.full((16, 16), BODY, np.uint8)
    cm[3:9, 4:12] = LIVER
    canvas = np.kron(render_classes(cm, CT), np.ones((32, 32, 1), np.uint8))
    canvas[::7, ::5] = (canvas[::7, ::5] * 0.9).astype(np.uint8)  # brush antialiasing: colours slightly off
    painted, out = h.from_painting(
        services, state, {"background": canvas, "layers": [], "composite": canvas}, name
    )
    np.testing.assert_array_equal(painted.classes_map, cm)
    assert out["edit_class"]["choices"] == ["body", "liver"]


def test_generate_shows_an_image_next_to_the_condition_and_writes_files(services: Services) -> None:
    name = _model(services)
    state = _taken(services)
    ticks = []
    state, out = h.generate(services, state, name, 2, 5, 0.8, 2, progress=lambda p, **kw: ticks.append(p))
    assert out["result"].shape == (512, 512, 3) and out["result"].dtype == np.uint8
    assert len(out["samples_view"]) == 2 and state.results.shape == (2, 16, 16)
    assert ticks[-1] == (2, 2) and "seeds [5, 6]" in out["provenance"]
    prov = json.loads((Path(state.out_dir) / "provenance.json").read_text())
    assert prov["conditioning_scale"] == 0.8 and prov["label_map_source"].startswith("test CT")
    assert any(f.endswith("result_hu.nii.gz") for f in out["files"])


def test_bad_input_messages(services: Services) -> None:
    name = _model(services)
    with pytest.raises(InputError, match="open a CT volume"):
        h.take_slice(services, h.ControlNetState(), ViewerState(), name)
    with pytest.raises(InputError, match="no segmentation"):
        h.take_slice(services, h.ControlNetState(), ViewerState(key="nolab"), name)
    with pytest.raises(InputError, match="make a label map first"):
        h.generate(services, h.ControlNetState(), name, 2, 0, 1.0, 1)
    with pytest.raises(InputError, match="unknown model"):
        h.blank(services, h.ControlNetState(), "no such model")
    with pytest.raises(InputError, match="nothing to undo"):
        h.undo(services, h.ControlNetState())
    _, out = h.regimes(services, h.ControlNetState(), name)
    assert out["regime_grid"] is None and "no training-regime comparison" in out["regime_info"]


def test_the_tab_is_built_and_takes_the_viewer_slice_through_the_api(services: Services, serve) -> None:
    from gradio_client import Client

    from reviewer_app.app import build_app

    client = Client(serve(build_app(services)), verbose=False)
    client.predict("ct", api_name="/open_image")
    outputs = client.predict(_model(services), api_name="/controlnet_take_slice")
    assert any("Label map from test CT" in str(o) for o in outputs)
