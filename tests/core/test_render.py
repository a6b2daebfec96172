"""Slice extraction, physical aspect, click mapping and overlays."""

from __future__ import annotations

import numpy as np
import pytest

from core.render import (
    blend_labels,
    display_shape,
    display_to_voxel,
    extract_plane,
    label_colour,
    make_palette,
    render_view,
)


@pytest.fixture
def ramp() -> np.ndarray:
    # value encodes its own voxel: 10000 z + 100 y + x
    z, y, x = np.meshgrid(np.arange(6), np.arange(8), np.arange(10), indexing="ij")
    return (10000 * z + 100 * y + x).astype(np.float32)


def test_planes_are_in_radiological_display_orientation(ramp: np.ndarray) -> None:
    axial = extract_plane(ramp, "axial", 2)
    assert axial.shape == (8, 10) and axial[0, 0] == 20000  # anterior row first, patient right col first
    coronal = extract_plane(ramp, "coronal", 3)
    assert coronal.shape == (6, 10)
    assert coronal[0, 0] == 50300  # top row is the most superior slice (z = 5)
    sagittal = extract_plane(ramp, "sagittal", 4)
    assert sagittal.shape == (6, 8) and sagittal[0, 1] == 50104  # columns run anterior -> posterior
    with pytest.raises(ValueError, match="outside 0..5"):
        extract_plane(ramp, "axial", 6)


def test_display_keeps_physical_proportions() -> None:
    # 3 mm slices, 0.75 mm pixels: a coronal view of 40 slices x 512 columns is 160 x 512 display px
    assert display_shape((40, 512), (3.0, 0.75)) == (160, 512)
    assert display_shape((512, 512), (0.8, 0.8)) == (512, 512)
    rows, cols = display_shape((200, 512), (5.0, 0.5))  # 2000 x 512 would exceed the cap
    assert max(rows, cols) == 1024 and rows / cols == pytest.approx(2000 / 512, rel=0.01)


def test_click_maps_back_to_the_voxel_shown(ramp: np.ndarray) -> None:
    spacing = (3.0, 1.0, 1.0)
    for plane, index in (("axial", 2), ("coronal", 3), ("sagittal", 4)):
        shown = extract_plane(ramp, plane, index)
        image = render_view(ramp, plane=plane, index=index, low=0, high=1e6, spacing=spacing)
        rows, cols = image.shape
        for r, c in ((0, 0), (rows - 1, cols - 1), (rows // 2, cols // 3)):
            z, y, x = display_to_voxel(plane=plane, index=index, row=r, col=c, volume_shape=ramp.shape,
                                       spacing=spacing)
            sr, sc = r * shown.shape[0] // rows, c * shown.shape[1] // cols
            assert ramp[z, y, x] == shown[sr, sc]


def test_overlay_colours_only_labelled_pixels() -> None:
    grey = np.full((4, 4), 100, np.uint8)
    labels = np.zeros((4, 4), np.uint16)
    labels[1, 1] = 2
    palette = make_palette({2: "liver"})
    rgb = blend_labels(grey, labels, palette, 1.0)
    assert tuple(rgb[1, 1]) == label_colour("liver")
    assert np.all(rgb[0, 0] == 100)
    hidden = blend_labels(grey, labels, palette, 1.0, np.array([False, False, False]))
    assert np.all(hidden == 100)
    half = blend_labels(grey, labels, palette, 0.5)
    expected = tuple(int(round(100 + 0.5 * (v - 100))) for v in label_colour("liver"))
    assert np.abs(half[1, 1].astype(int) - expected).max() <= 1  # fixed-point blend


def test_render_view_windows_and_overlays(ramp: np.ndarray) -> None:
    labels = np.zeros(ramp.shape, np.uint16)
    labels[2, 0, 0] = 1
    grey = render_view(ramp, plane="axial", index=2, low=20000, high=20709, spacing=(1, 1, 1))
    assert grey.dtype == np.uint8 and grey.shape == (8, 10)
    assert grey[0, 0] == 0 and grey[7, 9] == 255
    rgb = render_view(ramp, plane="axial", index=2, low=20000, high=20709, spacing=(1, 1, 1),
                      labels=labels, palette=make_palette({1: "lesion"}), opacity=1.0)
    assert rgb.shape == (8, 10, 3) and tuple(rgb[0, 0]) == label_colour("lesion")
