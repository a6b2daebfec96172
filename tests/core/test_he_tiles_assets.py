"""The shipped tiled H&E model (``assets/models/he-tiles``): card, and a generation that follows its layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.settings import shipped_models

MODEL = shipped_models() / "he-tiles"
pytestmark = pytest.mark.skipif(
    not (MODEL / "model_card.json").is_file(), reason="assets/models/he-tiles not shipped in this checkout"
)


def test_card_says_what_was_trained_on_for_how_long_and_with_what_autoencoder() -> None:
    card = json.loads((MODEL / "model_card.json").read_text())
    t = card["training"]
    assert t["steps"] > 0 and t["wall_time_s"] > 0
    assert (MODEL / card["base"]["path"] / "vae").is_dir(), "the card's autoencoder is not shipped beside it"
    text = json.dumps(card).lower()
    assert "cc0" in text and "tcga" in text  # both training slides are attributed


def test_the_shipped_model_follows_its_layout_from_glass_to_nuclei_dense() -> None:
    """Left third glass, middle eosinophilic, right third nuclei-dense: optical density and hematoxylin
    rise in that order. (The demo model renders glass as pale, sparse tissue rather than clean glass;
    its card says so.)"""
    from core.pipelines.histo_tiled import HistoTiledPipeline
    from core.tissue import hematoxylin, optical_density

    pipe = HistoTiledPipeline.from_pretrained(MODEL)
    layout = np.zeros((8, 12), np.uint8)  # cells of 32 px
    layout[:, 4:8], layout[:, 8:] = 1, 3
    out = pipe(layout, height=256, width=384, tile_size=256, overlap=64, num_inference_steps=20, seed=0)
    img = out.image
    assert img.shape == (256, 384, 3) and img.dtype == np.uint8

    thirds = (slice(16, 112), slice(144, 240), slice(272, 368))  # away from the class edges
    od = [float(optical_density(img)[:, x].mean()) for x in thirds]
    hema = [float(hematoxylin(img)[:, x].mean()) for x in thirds]
    assert od[0] < 0.75 * od[1] < 0.75 * od[2], f"optical density {od} does not follow glass < eosin < dense"
    assert hema[2] > 1.3 * hema[1], (
        f"hematoxylin {hema}: nuclei-dense is not more basophilic than eosinophilic"
    )
