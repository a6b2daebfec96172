"""core.masks (label masks, random shapes, tumour transplants, validation) and core.pipelines.crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.io.volume import LabelMap
from core.masks import (
    RandomBlob,
    RandomBrush,
    RandomEllipse,
    TransplantTumor,
    as_mask,
    bbox,
    bbox_mask,
    blob_mask,
    body_mask,
    ellipse_mask,
    extract_tumor_shapes,
    mask_hash,
    organ_mask,
    place_in_region,
    stroke_mask,
    transplant_shape,
    tumor_mask,
    validate_mask,
)
from core.pipelines.crops import (
    crop_box,
    extract,
    image_to_model,
    mask_to_model,
    model_to_image,
    paste_region,
)


def _labels() -> LabelMap:
    arr = np.zeros((3, 40, 40), np.uint16)
    arr[:, 5:30, 5:30] = 1  # kidney
    arr[1, 10:15, 12:20] = 2  # tumor
    arr[2, 30:35, 30:35] = 3  # cyst
    return LabelMap(arr, {1: "kidney", 2: "tumor", 3: "cyst"})


def test_organ_and_tumor_masks_from_a_label_map() -> None:
    labels = _labels()
    assert organ_mask(labels, "kidney").sum() == 3 * 25 * 25 - 40
    assert np.array_equal(organ_mask(labels, ("tumor", 3), slice_index=2), labels.array[2] == 3)
    tumour = tumor_mask(labels)  # named "tumor": found by name; the cyst is not a lesion
    assert tumour.sum() == 40 and not tumour[2].any()
    assert tumor_mask(labels, lesion_labels=("cyst",)).sum() == 25
    assert not tumor_mask(LabelMap(np.ones((1, 4, 4), np.uint16), {1: "liver"})).any()


def test_bbox_mask_grows_by_the_margin_and_stays_in_the_image() -> None:
    m = np.zeros((20, 20), bool)
    m[2:5, 10:12] = True
    box = bbox_mask(m, margin_px=3)
    assert bbox(box) == (0, 8, 7, 15)  # rows clipped at the top edge
    assert box.sum() == 8 * 8
    with pytest.raises(InputError, match="empty"):
        bbox(np.zeros((4, 4), bool))


def test_body_mask_is_the_filled_largest_component() -> None:
    img = np.full((50, 50), -1000.0, np.float32)
    img[ellipse_mask(img.shape, (25, 25), (20, 15))] = 40.0
    img[20:30, 20:30] = -1000.0  # air inside the body (bowel gas) stays inside
    img[0:2, 0:2] = 500.0  # a speck outside the body
    body = body_mask(img)
    assert body[25, 25] and not body[0, 0] and body.sum() == ellipse_mask(img.shape, (25, 25), (20, 15)).sum()


def test_shapes_have_the_requested_size() -> None:
    e = ellipse_mask((101, 101), (50, 50), (20, 10), angle=0.3)
    assert e.sum() == pytest.approx(np.pi * 20 * 10, rel=0.03)
    rng = np.random.default_rng(3)
    b = blob_mask((101, 101), (50, 50), 15.0, rng, irregularity=0.0)
    assert b.sum() == pytest.approx(np.pi * 15**2, rel=0.05)
    s = stroke_mask((40, 40), np.array([[5, 5], [5, 30]]), width_px=5)
    assert s[5, 5] and s[5, 30] and s[7, 17] and not s[9, 17] and not s[20, 20]


def test_random_shapes_are_seeded_and_inside_their_region() -> None:
    region = np.zeros((80, 80), bool)
    region[20:70, 10:60] = True
    for make in (RandomEllipse((3, 10)), RandomBlob((3, 10)), RandomBrush(extent_px=30)):
        a = make((80, 80), np.random.default_rng(7), region=region)
        b = make((80, 80), np.random.default_rng(7), region=region)
        c = make((80, 80), np.random.default_rng(8), region=region)
        assert a is not None and a.any()
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert not (a & ~region).any()


def test_place_in_region_refuses_when_nothing_fits() -> None:
    region = np.zeros((30, 30), bool)
    region[5:10, 5:10] = True
    assert place_in_region(np.ones((6, 6), bool), region, np.random.default_rng(0)) is None
    placed = place_in_region(np.ones((5, 5), bool), region, np.random.default_rng(0))
    assert np.array_equal(placed, region)


def test_tumour_shapes_are_cut_per_component_and_transplanted_at_physical_size() -> None:
    labels = np.zeros((5, 60, 60), np.uint8)
    labels[1:4, 10:20, 10:30] = 2  # 10 x 20 px component on 3 slices
    labels[2, 40:44, 40:44] = 2  # a small second one
    shapes = extract_tumor_shapes(labels, (3.0, 1.0, 1.0), label=2, min_pixels=10, per_component=1)
    assert sorted(s.mask.shape for s in shapes) == [(4, 4), (10, 20)]
    big = next(s for s in shapes if s.mask.shape == (10, 20))
    region = np.zeros((200, 200), bool)
    region[20:180, 20:180] = True
    # target pixels of 0.5 mm: the 10 x 20 mm outline becomes ~20 x 40 px (area x4)
    placed = transplant_shape(big, region, (0.5, 0.5), np.random.default_rng(1), scale_range=(1.0, 1.0))
    assert placed is not None and not (placed & ~region).any()
    assert placed.sum() == pytest.approx(4 * 200, rel=0.15)
    # a region too small for the outline: it is shrunk (halved) until it fits
    small = np.zeros((200, 200), bool)
    small[50:62, 50:75] = True
    fit = transplant_shape(big, small, (0.5, 0.5), np.random.default_rng(1), scale_range=(1.0, 1.0))
    assert fit is not None and not (fit & ~small).any() and fit.sum() < 400
    with pytest.raises(InputError, match="no tumour shapes"):
        TransplantTumor(())((10, 10), np.random.default_rng(0))


def test_kits_tumours_transplant_into_a_real_liver(shared_data: Path) -> None:
    from core.io.load import load_volume
    from core.training.data import load_shape_library

    shapes = load_shape_library((str(shared_data / "masks" / "kits23" / "case_00000"),), label=2)
    assert shapes and all(s.mask.any() for s in shapes)
    base = shared_data / "ct" / "totalseg"
    vol = load_volume(base / "example_ct.nii.gz", labels=base / "example_seg" / "liver.nii.gz")
    liver = vol.labels.array > 0  # the one binary mask (its label name comes from labels.json ids)
    k = int(np.argmax(liver.sum((1, 2))))
    placed = TransplantTumor(tuple(shapes))(
        liver[k].shape, np.random.default_rng(0), region=liver[k], spacing=vol.spacing[1:]
    )
    assert placed is not None and placed.any() and not (placed & ~liver[k]).any()


def test_validate_mask_explains_what_is_wrong() -> None:
    m = np.zeros((64, 64), np.uint8)
    m[20:30, 20:30] = 255
    assert validate_mask(m, image_shape=(64, 64), min_context_px=8).sum() == 100
    with pytest.raises(InputError, match="empty"):
        validate_mask(np.zeros((64, 64)), image_shape=(64, 64))
    with pytest.raises(InputError, match=r"64x64 pixels but the slice is 512x512"):
        validate_mask(m, image_shape=(512, 512))
    with pytest.raises(InputError, match="one 2D slice"):
        validate_mask(np.zeros((2, 64, 64)), image_shape=(64, 64))
    edge = np.zeros((64, 64), bool)
    edge[0:5, 30:35] = True
    assert validate_mask(edge, image_shape=(64, 64), min_context_px=0).any()
    with pytest.raises(InputError, match="within 0 px of the image border.*move or shrink"):
        validate_mask(edge, image_shape=(64, 64), min_context_px=4)
    with pytest.raises(InputError, match="whole slice"):
        validate_mask(np.ones((64, 64)), image_shape=(64, 64))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[10:20, 10:20, 3] = 255  # painted strokes live in the alpha channel
    rgba[..., :3] = 200
    assert as_mask(rgba).sum() == 100
    with pytest.raises(InputError, match="NaN"):
        as_mask(np.full((4, 4), np.nan))


def test_mask_hash_depends_on_pixels_and_shape_only() -> None:
    m = np.zeros((16, 16), bool)
    m[3:5, 3:5] = True
    assert mask_hash(m) == mask_hash(m.astype(np.uint8))
    m2 = m.copy()
    m2[0, 0] = True
    assert mask_hash(m2) != mask_hash(m)
    assert mask_hash(np.zeros((16, 16), bool)) != mask_hash(np.zeros((8, 32), bool))


def test_crops_are_native_for_lesions_and_scaled_for_organs() -> None:
    small = crop_box((250, 270, 100, 115), (512, 512), resolution=64, fill=0.5)
    assert small.size == 64 and small.row0 <= 250 and small.row0 + 64 >= 270
    big = crop_box((100, 300, 100, 250), (512, 512), resolution=64, fill=0.5)
    assert big.size == 400 and big.row0 == 0  # moved (not shrunk) to stay inside the slice
    corner = crop_box((0, 10, 0, 10), (512, 512), resolution=64)
    assert (corner.row0, corner.col0) == (0, 0)
    tiny = crop_box((10, 20, 10, 20), (30, 40), resolution=64)  # slice smaller than the crop: centred, padded
    assert tiny.row0 < 0 and tiny.col0 < 0
    img = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    crop = extract(img, tiny)
    dst, src = paste_region(tiny, img.shape)
    assert crop.shape == (64, 64) and np.array_equal(crop[src], img[dst])
    assert crop[0, 0] == img[0, 0]  # edge padding
    assert not extract(img > 1e9, tiny, fill_value=False).any()
    native = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    assert np.array_equal(image_to_model(native, 64), native) and np.array_equal(
        model_to_image(native, 64), native
    )
    down = image_to_model(np.full((128, 128), 40.0), 64)
    assert down.shape == (64, 64) and np.allclose(down, 40.0)
    m = np.zeros((128, 128), bool)
    m[60:61, 60:61] = True  # one pixel: still marked unknown at half resolution
    assert mask_to_model(m, 64).any()
