"""Tissue masks and layouts: colour deconvolution, glass vs tissue on real slides, layout pictures."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.tissue import (
    CLASS_COLOURS,
    TISSUE_CLASSES,
    class_fractions,
    example_layout,
    glass_mask,
    hematoxylin,
    layout_from_rgb,
    layout_from_slide,
    layout_to_rgb,
    read_layout,
    resize_layout,
    tissue_layout,
)


def test_hematoxylin_matches_skimage_rgb2hed():
    from skimage.color import rgb2hed

    rgb = np.random.default_rng(0).integers(1, 256, (40, 50, 3)).astype(np.uint8)
    assert np.allclose(hematoxylin(rgb), np.maximum(rgb2hed(rgb)[..., 0], 0), atol=1e-5)


def test_synthetic_glass_and_stains():
    rgb = np.full((128, 256, 3), 245, np.uint8)  # glass
    rgb[:, 128:] = (230, 130, 180)  # pale pink tissue
    rgb[64:, 192:] = (90, 50, 140)  # hematoxylin-rich
    layout = tissue_layout(rgb, cell=32)
    assert layout.shape == (4, 8)
    assert (layout[:, :4] == 0).all() and (layout[:, 4:] > 0).all()
    assert layout[3, 7] == 3 and layout[0, 5] < layout[3, 7]


@pytest.mark.parametrize(
    "name, glass_range, corner",
    [
        ("cmu-1-small-region.svs", (0.55, 0.75), np.s_[:3, -3:]),
        ("tcga-cr-7395-01a-01-ts1.svs", (0.3, 0.45), np.s_[:3, :3]),
    ],
)
def test_real_slide_glass_and_tissue_fractions(shared_data, name, glass_range, corner):
    """Measured: CMU-1 (a strip of skin) is 64 % glass, the TCGA frozen section 38 %."""
    from core.io.slide import open_slide

    with open_slide(shared_data / "histo" / name) as slide:
        layout = layout_from_slide(slide)
        lv = slide.levels[0]
        assert layout.shape == (-(-lv.height // 32), -(-lv.width // 32))
        fr = class_fractions(layout)
        assert glass_range[0] < fr["background"] < glass_range[1]
        assert all(fr[c] > 0.03 for c in TISSUE_CLASSES[1:])  # every tissue class occurs
        assert (layout[corner] == 0).all()  # an empty corner of the slide is glass
        # glass mask at pixel level agrees with the bright pixels
        region = slide.read_region(level=0, x=0, y=0, width=256, height=256)
        assert glass_mask(region).mean() > 0.9


def test_layout_picture_round_trip_and_resize(tmp_path):
    from PIL import Image

    layout = example_layout((40, 60), seed=2)
    assert set(np.unique(layout)) == {0, 1, 2, 3}
    rgb = layout_to_rgb(layout, scale=4)
    assert rgb.shape == (160, 240, 3)
    assert np.array_equal(layout_from_rgb(rgb, (40, 60)), layout)
    Image.fromarray(rgb).save(tmp_path / "l.png")
    np.save(tmp_path / "l.npy", layout)
    assert np.array_equal(read_layout(tmp_path / "l.png", (40, 60)), layout)
    assert np.array_equal(read_layout(tmp_path / "l.npy"), layout)
    big = resize_layout(layout, (80, 120))
    assert np.array_equal(big[::2, ::2], layout)
    assert np.array_equal(resize_layout(big, (40, 60)), layout)


def test_bad_layouts_fail_with_a_message(tmp_path):
    with pytest.raises(InputError, match="not in a layout colour"):
        layout_from_rgb(np.full((20, 20, 3), (0, 255, 0), np.uint8))
    with pytest.raises(InputError, match="0..3"):
        resize_layout(np.full((3, 3), 9, np.uint8), (2, 2))
    with pytest.raises(InputError, match="not found"):
        read_layout(tmp_path / "missing.png")
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image"):
        read_layout(tmp_path / "x.png")
    with pytest.raises(InputError, match="no tissue"):
        tissue_layout(np.full((64, 64, 3), 250, np.uint8))
    assert len(CLASS_COLOURS) == len(TISSUE_CLASSES)


def test_he_texture_features_are_fixed_and_tell_stains_apart():
    from core.metrics import compare_features
    from core.metrics.he_features import HETextureExtractor

    rng = np.random.default_rng(0)
    pink = np.clip(rng.normal((230, 140, 190), 12, (24, 32, 32, 3)), 0, 255).astype(np.uint8)
    purple = np.clip(rng.normal((120, 70, 160), 12, (24, 32, 32, 3)), 0, 255).astype(np.uint8)
    ex = HETextureExtractor()
    fp = ex.extract(pink)
    assert fp.shape == (24, ex.feature_dim) and np.isfinite(fp).all()
    assert np.array_equal(fp, HETextureExtractor(batch_size=5).extract(pink))  # batch-independent
    fp2 = ex.extract(np.clip(rng.normal((230, 140, 190), 12, (24, 32, 32, 3)), 0, 255).astype(np.uint8))
    same, other = (
        compare_features(fp, fp2, kid_subset_size=12),
        compare_features(fp, ex.extract(purple), kid_subset_size=12),
    )
    assert other.fid > 10 * same.fid and other.kid_mean > same.kid_mean
    with pytest.raises(InputError):
        ex.extract(np.zeros((2, 32, 32), np.float32))
