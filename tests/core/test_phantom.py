"""The procedural abdominal CT phantom: grid, determinism, anatomy, HU and noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from core.phantom import DEFAULT_SHAPE, LABEL_NAMES, PHANTOM_NAME, PHANTOM_VERSION, make_abdominal_phantom

SMALL = (32, 128, 128)  # the standard coverage at 6 x 3 x 3 mm

# Plausible median HU per label for a portal-venous abdominal CT (see HU in core.phantom._layout).
HU_RANGES = {
    "subcutaneous_fat": (-130, -70),
    "torso_fat": (-130, -60),
    "skeletal_muscle": (30, 80),
    "liver": (90, 125),
    "spleen": (95, 135),
    "kidney_left": (120, 220),
    "kidney_right": (120, 220),
    "aorta": (130, 220),
    "iliac_artery_left": (110, 220),
    "iliac_artery_right": (110, 220),
    "inferior_vena_cava": (100, 180),
    "portal_vein_and_splenic_vein": (130, 220),
    "pancreas": (70, 130),
    "gallbladder": (-10, 40),
    "vertebrae": (150, 600),
    "intervertebral_discs": (60, 130),
    "ribs": (200, 900),
    "costal_cartilages": (80, 250),
    "spinal_cord": (10, 60),
    "lung_left": (-950, -700),
    "lung_right": (-950, -700),
    "lesion": (20, 65),
}


@pytest.fixture(scope="module")
def small():
    return make_abdominal_phantom(seed=3, shape=SMALL)


@pytest.fixture(scope="module")
def default():
    return make_abdominal_phantom(seed=0)


def _centroid(vol, name: str) -> np.ndarray:
    """Mean voxel index ``(z, y, x)`` of a label."""
    return np.argwhere(vol.labels.mask(name)).mean(axis=0)


def test_default_grid_covers_the_standard_field(default):
    assert default.shape == DEFAULT_SHAPE
    assert default.spacing == pytest.approx((3.0, 0.75, 0.75))
    assert default.array.dtype == np.float32
    assert default.labels.array.dtype == np.uint16
    assert default.labels.array.shape == default.shape
    assert default.modality == "CT"
    assert np.isfinite(default.array).all()
    assert -1024 <= default.array.min() and default.array.max() < 3000
    assert set(default.labels.present().values()) == set(LABEL_NAMES.values())


def test_spacing_follows_shape_unless_given():
    vol = make_abdominal_phantom(seed=0, shape=(8, 64, 64), noise_hu=0.0)
    assert vol.spacing == pytest.approx((24.0, 6.0, 6.0))
    vol = make_abdominal_phantom(seed=0, shape=(8, 64, 80), spacing=(5.0, 2.0, 2.5), noise_hu=0.0)
    assert vol.spacing == (5.0, 2.0, 2.5)
    assert vol.shape == (8, 64, 80)


def test_affine_is_ras_with_x_to_the_left_y_posterior_z_superior(small):
    a = small.affine
    sz, sy, sx = small.spacing
    np.testing.assert_allclose(np.diag(a)[:3], [-sx, -sy, sz])
    step = small.world_mm(1, 1, 1) - small.world_mm(0, 0, 0)
    np.testing.assert_allclose(step, [-sx, -sy, sz])
    # The liver is on the patient's right: +R in RAS; the spleen on the left.
    assert small.world_mm(*_centroid(small, "liver"))[0] > 30
    assert small.world_mm(*_centroid(small, "spleen"))[0] < -30


def test_meta_records_generator_version_and_seed(small):
    assert small.meta["generator"] == PHANTOM_NAME
    assert small.meta["version"] == PHANTOM_VERSION
    assert small.meta["seed"] == 3
    assert small.meta["lesion"] is True


def test_same_seed_is_bit_identical(small):
    again = make_abdominal_phantom(seed=3, shape=SMALL)
    assert again.array.tobytes() == small.array.tobytes()
    assert again.labels.array.tobytes() == small.labels.array.tobytes()


def test_other_seeds_differ_in_noise_and_shape(small):
    other = make_abdominal_phantom(seed=4, shape=SMALL)
    body = small.labels.array > 0
    assert np.mean(other.array[body] != small.array[body]) > 0.9
    changed = np.mean(other.labels.array[body] != small.labels.array[body])
    assert 0.02 < changed < 0.5  # same anatomy, different details
    liver_a, liver_b = small.labels.mask("liver").sum(), other.labels.mask("liver").sum()
    assert liver_a != liver_b


def test_noise_does_not_change_the_anatomy(small):
    clean = make_abdominal_phantom(seed=3, shape=SMALL, noise_hu=0.0)
    assert clean.labels.array.tobytes() == small.labels.array.tobytes()
    muscle = binary_erosion(clean.labels.mask("skeletal_muscle"), np.ones((1, 3, 3)))
    flat = np.abs(clean.array[muscle] - np.median(clean.array[muscle])) < 2.0
    assert np.mean(flat) > 0.8  # homogeneous without noise (bar partial volume with fat planes)
    assert np.mean(np.abs(small.array[muscle] - np.median(small.array[muscle])) < 2.0) < 0.4


def test_every_label_is_present_and_lesion_optional(small):
    assert set(small.labels.present().values()) == set(LABEL_NAMES.values())
    without = make_abdominal_phantom(seed=3, shape=SMALL, lesion=False)
    assert "lesion" not in without.labels.present().values()
    lesion = small.labels.mask("lesion")
    assert np.all(without.labels.mask("liver")[lesion])  # the lesion replaces liver, nothing else
    assert np.array_equal(without.labels.array[~lesion], small.labels.array[~lesion])


@pytest.mark.parametrize("name", sorted(HU_RANGES))
def test_median_hu_per_label_is_realistic(default, name):
    lo, hi = HU_RANGES[name]
    median = float(np.median(default.array[default.labels.mask(name)]))
    assert lo <= median <= hi, f"{name}: median {median} HU outside [{lo}, {hi}]"


def test_air_outside_the_body(default):
    outside = default.labels.array == 0
    corners = default.array[:, :20, :20]
    assert np.all(corners == -1024)  # outside the reconstruction circle
    assert np.median(default.array[outside]) < -990


def test_anatomical_placement(small):
    c = {name: _centroid(small, name) for name in LABEL_NAMES.values()}
    z, y, x = 0, 1, 2
    assert c["liver"][x] < c["spleen"][x]  # liver on the patient's right = low x
    assert c["kidney_right"][x] < c["kidney_left"][x]
    assert c["inferior_vena_cava"][x] < c["aorta"][x]  # IVC right, aorta left of midline
    assert c["aorta"][y] < c["vertebrae"][y]  # aorta anterior to the spine
    assert c["inferior_vena_cava"][y] < c["vertebrae"][y]
    for kidney in ("kidney_left", "kidney_right"):
        assert c[kidney][y] > c["aorta"][y] + 10  # retroperitoneal, posterior
    assert c["lung_right"][x] < c["lung_left"][x]
    assert c["iliac_artery_right"][x] < c["iliac_artery_left"][x]
    assert max(c["iliac_artery_left"][z], c["iliac_artery_right"][z]) < c["aorta"][z]
    nz = small.shape[0]
    for lung in ("lung_left", "lung_right"):
        zs = np.nonzero(small.labels.mask(lung).any(axis=(1, 2)))[0]
        assert zs.min() > nz // 2  # lung bases only in the superior half
    assert c["liver"][z] > c["kidney_right"][z]  # liver above the right kidney
    assert c["stomach"][y] < c["spleen"][y]  # stomach anterior to the spleen


def test_lesion_inside_the_liver(small):
    lesion = small.labels.mask("lesion")
    shell = binary_dilation(lesion, np.ones((1, 3, 3))) & ~lesion
    liver = small.labels.mask("liver")
    assert np.mean(liver[shell]) > 0.95
    sz, sy, sx = small.spacing
    diameter = 2 * (3 * lesion.sum() * sz * sy * sx / (4 * np.pi)) ** (1 / 3)
    assert 15 < diameter < 45  # mm
    assert np.median(small.array[liver]) - np.median(small.array[lesion]) > 40  # hypodense


def test_noise_level_and_texture():
    # Same anatomy with and without noise: the difference is the noise itself.
    kw = {"seed": 1, "shape": (6, 256, 256), "spacing": (3.0, 0.75, 0.75)}
    noisy, clean = make_abdominal_phantom(**kw), make_abdominal_phantom(**kw, noise_hu=0.0)
    body = binary_erosion(clean.labels.array > 0, np.ones((1, 5, 5))) & (clean.array > -1024)
    noise = np.where(body, noisy.array - clean.array, np.nan)
    assert 9.0 < np.nanstd(noise) < 16.0  # HU; 14 at the centre, less towards the skin
    assert abs(np.nanmean(noise)) < 0.5
    for axis in (1, 2):  # neighbouring pixels are correlated, as after filtered back projection
        a, b = np.moveaxis(noise, axis, 0)[:-1], np.moveaxis(noise, axis, 0)[1:]
        ok = np.isfinite(a) & np.isfinite(b)
        assert np.corrcoef(a[ok], b[ok])[0, 1] > 0.2
    # ... but not white or blurred flat: correlation has faded a few pixels away.
    a, b = noise[:, :, :-6], noise[:, :, 6:]
    ok = np.isfinite(a) & np.isfinite(b)
    assert abs(np.corrcoef(a[ok], b[ok])[0, 1]) < 0.15


def test_noise_in_a_homogeneous_region(default):
    # Paraspinal and psoas muscle, away from their edges: constant 55 HU plus noise.
    muscle = binary_erosion(default.labels.mask("skeletal_muscle"), np.ones((1, 7, 7)))
    values = default.array[muscle]
    assert 8.0 < values.std() < 20.0
    assert 40 < np.median(values) < 70


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (2, 128, 128)},
        {"shape": (16, 128)},
        {"shape": (16, 128.5, 128)},
        {"spacing": (3.0, 0.0, 0.75)},
        {"spacing": (3.0, float("nan"), 0.75)},
        {"noise_hu": -1.0},
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        make_abdominal_phantom(**kwargs)
