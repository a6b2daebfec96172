"""FID/KID, the neighbouring-slice baseline, PSNR/SSIM and memorisation, on synthetic data."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from core.errors import InputError
from core.metrics import (
    CropBox,
    FIDMetric,
    KIDMetric,
    compare_features,
    get_fid_score,
    get_kid_score,
    nearest_neighbour_correlation,
    neighbouring_slice_baseline,
    psnr,
    ratio_to_baseline,
    ssim,
)
from core.metrics.baselines import slice_pairs
from core.metrics.distribution import DistributionScores, frechet_distance
from core.metrics.permutation import _RealStats, paired_fid_permutation_test


def _gaussian(rng, mean, cov, n):
    return rng.multivariate_normal(mean, cov, size=n)


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fid_closed_form(mu1, s1, mu2, s2):
    """Independent route: tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), all symmetric."""
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(inner.clip(0)).sum())


class MeanStdExtractor:
    """A transparent extractor for tests: per-image mean, std and mean gradient magnitude."""

    name, feature_dim = "mean-std", 3

    def extract(self, images):
        x = np.asarray(images, np.float64)
        gy, gx = np.gradient(x, axis=(1, 2))
        return np.stack([x.mean((1, 2)), x.std((1, 2)), np.hypot(gy, gx).mean((1, 2))], axis=1)


# --- FID -------------------------------------------------------------------------------------------


def test_fid_of_identical_sets_is_zero() -> None:
    feats = np.random.default_rng(0).normal(size=(300, 16))
    assert get_fid_score(feats, feats) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_closed_form_for_known_gaussians() -> None:
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)  # do not commute
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fid_closed_form(mu1, s1, mu2, s2), rel=1e-9)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2, by hand.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 3 * 1.0**2 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b)) == pytest.approx(expected)


def test_fid_of_samples_converges_to_the_closed_form() -> None:
    rng = np.random.default_rng(2)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    fid = get_fid_score(_gaussian(rng, mu1, s1, 40_000), _gaussian(rng, mu2, s2, 40_000))
    assert fid == pytest.approx(_fid_closed_form(mu1, s1, mu2, s2), rel=0.03)


def test_fid_is_symmetric_and_grows_with_mean_shift() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(500, 8))
    other = rng.normal(size=(500, 8))
    assert get_fid_score(base, other) == pytest.approx(get_fid_score(other, base), rel=1e-9)
    fids = [get_fid_score(base, other + shift) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(fids, fids[1:]))
    # The mean term is exactly |shift|^2 * D on top of the unshifted covariance term.
    cross = 2 * 2.0 * (other.mean(0) - base.mean(0)).sum()
    assert fids[-1] - fids[0] == pytest.approx(4.0 * 8 + cross, rel=1e-6)


def test_fid_with_fewer_samples_than_dimensions_is_finite_and_ordered() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(40, 64)), rng.normal(size=(40, 64))
    same, shifted = get_fid_score(a, b), get_fid_score(a, b + 1.0)
    assert np.isfinite(same) and same >= 0
    assert shifted > same + 60  # mean term alone adds 64


def test_fid_rejects_bad_features() -> None:
    rng = np.random.default_rng(5)
    good = rng.normal(size=(10, 4))
    with pytest.raises(InputError, match="feature sizes differ"):
        get_fid_score(good, rng.normal(size=(10, 5)))
    with pytest.raises(InputError, match="2D"):
        get_fid_score(good[0], good)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        get_fid_score(good, bad)
    with pytest.raises(InputError, match="at least 2"):
        get_fid_score(good, good[:1])


# --- KID -------------------------------------------------------------------------------------------


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two() -> None:
    rng = np.random.default_rng(6)
    same = [get_kid_score(rng.normal(size=(100, 16)), rng.normal(size=(100, 16)), num_subsets=5,
                          subset_size=50, generator=rng).mean for _ in range(60)]
    # An unbiased estimator averages to 0 (a biased one, e.g. the V-statistic, stays > 0).
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert min(same) < 0 < max(same)
    shifted = get_kid_score(rng.normal(size=(100, 16)), rng.normal(size=(100, 16)) + 0.5, generator=rng)
    assert shifted.mean > 10 * shifted.std > 0


def test_paired_kid_stays_unbiased_when_rows_are_pairs() -> None:
    """Row i of both sets nearly equal (a slice and its neighbour): the unpaired cross term is biased."""
    rng = np.random.default_rng(14)
    unpaired, paired = [], []
    for _ in range(40):
        x = rng.normal(size=(40, 8))
        y = x + rng.normal(0, 0.3, size=x.shape)  # same distribution up to a small widening
        y = y / np.sqrt(1 + 0.3**2)  # ... undone, so the marginals match exactly
        unpaired.append(get_kid_score(x, y, num_subsets=3, subset_size=40, generator=rng).mean)
        paired.append(get_kid_score(x, y, num_subsets=3, subset_size=40, generator=rng, paired=True).mean)
    assert np.mean(unpaired) < -5 * np.std(unpaired) / np.sqrt(40)  # pulled below 0 by the matched pairs
    assert abs(np.mean(paired)) < 3 * np.std(paired) / np.sqrt(40)
    with pytest.raises(InputError, match="paired sets"):
        get_kid_score(rng.normal(size=(5, 2)), rng.normal(size=(6, 2)), paired=True)


def test_kid_is_reproducible_with_its_seed_and_caps_subsets() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(80, 8)), rng.normal(size=(60, 8)) + 0.2
    metric = KIDMetric(num_subsets=10, subset_size=1000, seed=3)
    first, second = metric(a, b), metric(a, b)
    assert first == second
    assert first.subset_size == 60 and first.num_subsets == 10


def test_metric_classes_run_an_extractor_on_images() -> None:
    rng = np.random.default_rng(8)
    images = rng.normal(0, 20, size=(30, 16, 16)).astype(np.float32)
    brighter = images + 100
    fid = FIDMetric(extractor=MeanStdExtractor())
    assert fid(images, images) == pytest.approx(0.0, abs=1e-9)
    assert fid(images, brighter) == pytest.approx(100.0**2, rel=1e-6)  # only the mean feature moves
    assert FIDMetric()(MeanStdExtractor().extract(images), MeanStdExtractor().extract(brighter)) == fid(
        images, brighter
    )
    assert KIDMetric(extractor=MeanStdExtractor(), num_subsets=5)(images, brighter).mean > 0


def test_compare_features_reports_sample_sizes() -> None:
    rng = np.random.default_rng(9)
    s = compare_features(rng.normal(size=(20, 3)), rng.normal(size=(25, 3)), kid_subsets=5)
    assert (s.n_real, s.n_fake) == (20, 25) and s.fid >= 0 and np.isfinite(s.kid_mean)


def test_permutation_test_settles_a_clear_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(11)
    real = rng.normal(size=(60, 4))
    close = real + rng.normal(0, 0.2, real.shape)  # paired: each row near its real row
    shifted = real + 0.6 + rng.normal(0, 0.2, real.shape)
    c = paired_fid_permutation_test(real, close, shifted, num_permutations=99)
    assert c.observed < c.null_low and c.p_a_lower == 0.01 and c.p_b_lower == 1.0 and c.verdict() == "a lower"
    assert paired_fid_permutation_test(real, shifted, close, num_permutations=99).verdict() == "b lower"
    twin = real + rng.normal(0, 0.2, real.shape)  # the same kind of edit as `close`
    null = paired_fid_permutation_test(real, close, twin, num_permutations=199)
    assert null.null_low < null.observed < null.null_high and null.verdict() == "not separable"
    assert null.p_a_lower > 0.05 and null.p_b_lower > 0.05
    same = paired_fid_permutation_test(real, close, close.copy(), num_permutations=19)
    assert same.observed == 0 and same.p_a_lower == same.p_b_lower == 1.0


def test_permutation_fid_route_equals_get_fid_score() -> None:
    rng = np.random.default_rng(13)
    for n, d in ((200, 16), (40, 64)):  # the second has fewer samples than dimensions
        x, y = rng.normal(size=(n, d)), 1.3 * rng.normal(size=(n, d)) + 0.2
        assert math.isclose(_RealStats(x).fid(y), get_fid_score(x, y), rel_tol=1e-6)


def test_permutation_test_is_seeded_and_checks_its_input() -> None:
    rng = np.random.default_rng(12)
    real, a, b = (rng.normal(size=(30, 3)) for _ in range(3))
    one = paired_fid_permutation_test(real, a, b, num_permutations=20, generator=np.random.default_rng(5))
    two = paired_fid_permutation_test(real, a, b, num_permutations=20, generator=np.random.default_rng(5))
    assert one == two and one.num_permutations == 20
    with pytest.raises(InputError, match="one row per region"):
        paired_fid_permutation_test(real, a, b[:-1])
    with pytest.raises(InputError, match="num_permutations"):
        paired_fid_permutation_test(real, a, b, num_permutations=10)


# --- neighbouring-slice baseline --------------------------------------------------------------------


def _smooth_volume(rng, depth=40, size=32):
    """Anatomy that drifts with z: a disc whose radius and brightness change slowly, plus noise."""
    yy, xx = np.mgrid[:size, :size]
    vol = np.empty((depth, size, size), np.float32)
    for z in range(depth):
        r = 6 + 8 * z / depth
        vol[z] = np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2, 40 + 3 * z, -100)
    return vol + rng.normal(0, 5, vol.shape).astype(np.float32)


def test_slice_pairs_are_disjoint_and_offset_apart() -> None:
    for offset in (1, 2, 5):
        pairs = slice_pairs(23, offset)
        first, second = {a for a, _ in pairs}, {b for _, b in pairs}
        assert not first & second
        assert all(b - a == offset and b < 23 for a, b in pairs)
    assert slice_pairs(6, 1) == [(0, 1), (2, 3), (4, 5)]
    with pytest.raises(InputError, match="offset"):
        slice_pairs(10, 0)


def test_neighbouring_slices_are_closer_than_distant_ones() -> None:
    rng = np.random.default_rng(10)
    volumes = [_smooth_volume(rng), _smooth_volume(rng)]
    near = neighbouring_slice_baseline(volumes, MeanStdExtractor(), offset=1, max_pairs=8, kid_subsets=10)
    far = neighbouring_slice_baseline(volumes, MeanStdExtractor(), offset=16, max_pairs=8, kid_subsets=10)
    assert (near.n_real, far.n_real) == (16, 16)
    assert 0 <= near.fid < far.fid and near.kid_mean < far.kid_mean


def test_baseline_on_crop_boxes_uses_the_same_positions() -> None:
    rng = np.random.default_rng(11)
    vol = _smooth_volume(rng)
    boxes = [[CropBox(z, 4, 28, 4, 28) for z in range(0, 39, 3)] + [CropBox(39, 0, 16, 0, 16)]]
    s = neighbouring_slice_baseline([vol], MeanStdExtractor(), boxes=boxes, kid_subsets=5)
    assert s.n_real == s.n_fake == len(boxes[0])
    assert np.isfinite(s.fid)
    with pytest.raises(InputError, match="outside the volume"):
        neighbouring_slice_baseline([vol], MeanStdExtractor(), boxes=[[CropBox(0, 0, 40, 0, 8)]])
    with pytest.raises(InputError, match="one list per volume"):
        neighbouring_slice_baseline([vol, vol], MeanStdExtractor(), boxes=boxes)


def test_ratio_to_baseline_needs_equal_sizes() -> None:
    base = DistributionScores(fid=2.0, kid_mean=0.01, kid_std=0.001, n_real=10, n_fake=10)
    model = DistributionScores(fid=5.0, kid_mean=0.04, kid_std=0.002, n_real=10, n_fake=10)
    ratio = ratio_to_baseline(model, base)
    assert ratio.fid == pytest.approx(2.5) and ratio.kid == pytest.approx(4.0)
    for unresolved in (-0.001, 0.0005):  # negative, or positive but within its subset spread
        no_kid = DistributionScores(fid=2.0, kid_mean=unresolved, kid_std=0.001, n_real=10, n_fake=10)
        assert math.isnan(ratio_to_baseline(model, no_kid).kid)
    with pytest.raises(InputError, match="sample sizes differ"):
        ratio_to_baseline(DistributionScores(5.0, 0.04, 0.0, 12, 12), base)


# --- PSNR / SSIM ------------------------------------------------------------------------------------


def test_psnr_and_ssim_values() -> None:
    rng = np.random.default_rng(12)
    ref = rng.uniform(-1000, 1000, size=(32, 32))
    assert psnr(ref, ref, data_range=2000) == math.inf
    assert ssim(ref, ref, data_range=2000) == pytest.approx(1.0)
    test = ref + 20.0  # MSE = 400 HU^2
    assert psnr(ref, test, data_range=2000) == pytest.approx(10 * np.log10(2000**2 / 400))
    noisy = ref + rng.normal(0, 200, ref.shape)
    expected = peak_signal_noise_ratio(ref, noisy, data_range=2000)
    assert psnr(ref, noisy, data_range=2000) == pytest.approx(expected)
    assert ssim(ref, noisy, data_range=2000) < ssim(ref, ref + rng.normal(0, 20, ref.shape), data_range=2000)


def test_psnr_and_ssim_inside_a_mask() -> None:
    ref = np.zeros((32, 32))
    test = ref.copy()
    test[:, 16:] += 50  # damage only the right half
    left = np.zeros_like(ref, bool)
    left[:, :16] = True
    assert psnr(ref, test, data_range=100, mask=left) == math.inf
    assert psnr(ref, test, data_range=100, mask=~left) == pytest.approx(10 * np.log10(100**2 / 50**2))
    with pytest.raises(InputError, match="data_range"):
        psnr(ref, test, data_range=0)
    with pytest.raises(InputError, match="mask"):
        ssim(ref, test, data_range=100, mask=np.zeros_like(left))


# --- memorisation -----------------------------------------------------------------------------------


def test_nearest_neighbour_correlation_flags_copies() -> None:
    rng = np.random.default_rng(13)
    training = rng.normal(size=(50, 16, 16))
    generated = np.stack([training[17] * 2 + 30, rng.normal(size=(16, 16)), np.full((16, 16), 5.0)])
    nn = nearest_neighbour_correlation(generated, training, chunk=8)
    assert nn.max_ncc[0] == pytest.approx(1.0) and nn.index[0] == 17  # a copy up to brightness/contrast
    assert nn.max_ncc[1] < 0.5
    assert nn.max_ncc[2] == 0.0  # constant: nothing to copy
    with pytest.raises(InputError, match="sizes differ"):
        nearest_neighbour_correlation(generated, training[:, :8])


def test_importing_metrics_does_not_import_torch() -> None:
    code = "import sys, core.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
