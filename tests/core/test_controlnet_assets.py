"""The shipped CT label-diffusion base and ControlNet (``assets/models``): cards, hashes, and a generation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.settings import shipped_models

BASE, CN = shipped_models() / "ct-label-diffusion", shipped_models() / "ct-controlnet"
pytestmark = pytest.mark.skipif(not (CN / "model_card.json").is_file(), reason="assets/models/ct-controlnet not shipped in this checkout")


def test_cards_say_what_was_trained_on_what_for_how_long_and_how_well() -> None:
    for folder in (BASE, CN):
        card = json.loads((folder / "model_card.json").read_text())
        t = card["training"]
        assert t["steps"] > 0 and t["wall_time_s"] > 0 and t["machine"] and t["config"]
        assert t["data"] and all(d["licence"] != "unknown" and d["attribution"] for d in t["data"])
        assert card["licences"] and card["metrics"] and card["code_version"]["git_commit"]
    card = json.loads((CN / "model_card.json").read_text())
    comp = card["comparison"]
    assert (CN / comp["grid"]).is_file() and len(comp["regimes"]) == 3
    assert all(r["fid"] >= 0 and r["dice_mean"] is not None for r in comp["regimes"])


def test_the_shipped_controlnet_loads_on_its_shipped_base_and_follows_a_label_map(shared_data) -> None:
    from core.pipelines.controlnet import ControlNetPipeline
    from core.pipelines.label_condition import load_condition

    pipe = ControlNetPipeline.from_pretrained(CN)
    assert pipe.spec.components["unet"] == BASE.resolve() and pipe.resolution == 64
    cond, _ = load_condition(shared_data / "ct" / "totalseg" / "example_seg_dicom.nii.gz", class_names=pipe.classes,
                             rules=pipe.spec.class_rules, resolution=64, pixel_mm=pipe.spec.card["pixel_mm"], slice_index=10)  # fmt: skip
    out = pipe(cond, num_inference_steps=10, seed=0)
    img = out.image
    assert img.shape == (64, 64) and np.isfinite(img).all()
    liver = cond == pipe.classes.index("liver") + 1
    assert liver.sum() > 100
    # a liver region is soft tissue (not air) wherever the map asks for it
    assert np.median(img[liver]) > -200
