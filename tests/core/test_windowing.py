"""Display windowing and model normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from core.normalization import HUNormalize, denormalize_hu, normalize_hu
from core.windowing import PRESETS, HUWindow, apply_window


def test_presets_are_ohif_values() -> None:
    assert PRESETS == {
        "Soft tissue": (400, 40),
        "Lung": (1500, -600),
        "Liver": (150, 90),
        "Bone": (2500, 480),
        "Brain": (80, 40),
    }
    w = HUWindow.preset("Soft tissue")
    assert (w.low, w.high) == (-160, 240)


def test_window_always_clips_and_maps_linearly() -> None:
    hu = np.array([-3000, -160, 40, 240, 5000], np.float32)
    out = HUWindow(400, 40)(hu)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255]  # 40 HU is mid-grey: round(127.5) = 128
    assert apply_window(np.int16([-1024, 3000]), low=-1000, high=1000).tolist() == [0, 255]


def test_window_rejects_bad_width() -> None:
    with pytest.raises(ValueError, match="width must be > 0"):
        HUWindow(0, 40)
    with pytest.raises(ValueError, match="unknown window preset"):
        HUWindow.preset("Abdomen-ish")


def test_normalisation_round_trip_and_independence_from_display() -> None:
    hu = np.linspace(-1500, 1500, 101, dtype=np.float32)
    x = normalize_hu(hu, low=-1000, high=1000)
    assert x.min() == -1.0 and x.max() == 1.0
    inside = (hu >= -1000) & (hu <= 1000)
    np.testing.assert_allclose(denormalize_hu(x, low=-1000, high=1000)[inside], hu[inside], atol=1e-3)
    norm = HUNormalize.named("soft_tissue")
    assert norm(np.float32([-160, 240])).tolist() == [-1.0, 1.0]
