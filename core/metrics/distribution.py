"""Distribution distances between feature sets: FID and KID.

Pure functions on ``(N, D)`` feature arrays beside thin callable classes, as MONAI
does (``get_fid_score`` / ``FIDMetric``). Which network makes the features is up to
the caller (``core.metrics.extractors``): the classes take an optional extractor and
then accept images instead of features.

* **FID** (Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``,
  with the matrix square root from ``scipy.linalg.sqrtm`` and the fixes pytorch-fid
  uses: a small ridge on both covariances when the product is near singular (fewer
  samples than dimensions), and dropping a negligible imaginary part. FID is biased
  upward for small N: compare FIDs only at equal sample sizes.
* **KID** (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / D + 1)^3``, averaged over random subsets; mean and std over the
  subsets. Unbiased, so it can be slightly negative when the sets match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InputError

if TYPE_CHECKING:
    from core.metrics.extractors import FeatureExtractor

# sqrtm's result is accepted when ||X @ X - A||_F <= this * ||A||_F, else the ridge is added.
_SQRTM_REL_TOL = 1e-5
# Imaginary parts of sqrt(S1 S2) up to this fraction of its largest real diagonal entry are
# rounding noise (pytorch-fid: atol 1e-3 on features of scale ~1).
_IMAG_REL_TOL = 1e-3


@dataclass(frozen=True)
class KIDScore:
    """KID over random subsets.

    Attributes:
        mean: mean unbiased MMD^2 over the subsets (feature units squared, kernel-scaled).
        std: standard deviation over the subsets (0 when every subset is the whole set).
        num_subsets: how many subsets were drawn.
        subset_size: samples per set in each subset.
    """

    mean: float
    std: float
    num_subsets: int
    subset_size: int


@dataclass(frozen=True)
class DistributionScores:
    """FID and KID of one comparison, with the sample sizes that make them comparable.

    Attributes:
        fid: Frechet distance.
        kid_mean: KID mean over subsets.
        kid_std: KID std over subsets.
        n_real: number of real samples.
        n_fake: number of generated (or second-set) samples.
    """

    fid: float
    kid_mean: float
    kid_std: float
    n_real: int
    n_fake: int


def check_features(features: np.ndarray, *, name: str = "features", min_samples: int = 2) -> np.ndarray:
    """Validate an ``(N, D)`` finite feature array and return it as float64."""
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2D (N, D) array of feature vectors, got shape {arr.shape}")
    if arr.shape[0] < min_samples:
        raise InputError(f"{name} needs at least {min_samples} samples, got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contain NaN or infinite values; check the extractor input")
    return arr


def _check_pair(real: np.ndarray, fake: np.ndarray, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    real = check_features(real, name="real features", min_samples=min_samples)
    fake = check_features(fake, name="fake features", min_samples=min_samples)
    if real.shape[1] != fake.shape[1]:
        raise InputError(
            f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}; "
            "use the same extractor for both"
        )
    return real, fake


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features."""
    features = check_features(features)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """``tr((sigma1 @ sigma2)^(1/2))`` with pytorch-fid's fixes for near-singular products."""
    from scipy import linalg

    product = sigma1 @ sigma2
    covmean = linalg.sqrtm(product)
    norm = max(np.linalg.norm(product), np.finfo(np.float64).tiny)
    if not np.isfinite(covmean).all() or np.linalg.norm(covmean @ covmean - product) > _SQRTM_REL_TOL * norm:
        # Near-singular (e.g. N < D): a ridge of eps on both covariances makes sqrtm well posed.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        diag = np.diagonal(covmean)
        scale = max(float(np.abs(diag.real).max()), 1.0)
        if np.abs(diag.imag).max() > _IMAG_REL_TOL * scale:
            raise ArithmeticError(
                f"sqrt(S1 S2) has a large imaginary part ({np.abs(diag.imag).max():.3g}); "
                "the covariances are badly conditioned: use more samples or fewer feature dimensions"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Frechet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1: mean, ``(D,)``.
        sigma1: covariance, ``(D, D)``, symmetric positive semi-definite.
        mu2: mean, ``(D,)``.
        sigma2: covariance, ``(D, D)``.
        eps: ridge added to both covariances when their product is near singular.

    Returns:
        The squared Frechet (2-Wasserstein) distance, >= 0, in feature units squared.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise InputError(
            f"shapes do not match: mu1 {mu1.shape}, mu2 {mu2.shape}, "
            f"sigma1 {sigma1.shape}, sigma2 {sigma2.shape}"
        )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2, eps)
    # Rounding can leave -1e-12 for identical sets; a distance is never negative.
    return max(float(value), 0.0)


def get_fid_score(real_features: np.ndarray, fake_features: np.ndarray, *, eps: float = 1e-6) -> float:
    """FID between two feature sets.

    Args:
        real_features: ``(N, D)`` features of real images, N >= 2.
        fake_features: ``(M, D)`` features of generated images, M >= 2.
        eps: ridge for near-singular covariances (see ``frechet_distance``).

    Returns:
        FID >= 0; symmetric in its arguments. Biased upward for small N, M.
    """
    real, fake = _check_pair(real_features, fake_features, min_samples=2)
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake), eps=eps)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, paired: bool = False) -> float:
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    # Paired rows (x_i, y_i) are dependent: k(x_i, y_i) is no sample of E k(x, y), so drop it
    # (Gretton et al. 2012, eq. 3, the U-statistic over pairs).
    cross = (k_xy.sum() - np.trace(k_xy)) / (m * (m - 1)) if paired else k_xy.mean()
    return float(term_xx + term_yy - 2.0 * cross)


def get_kid_score(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    generator: np.random.Generator | None = None,
    paired: bool = False,
) -> KIDScore:
    """KID: unbiased polynomial-kernel MMD^2 averaged over random subsets.

    Args:
        real_features: ``(N, D)`` features of real images, N >= 2.
        fake_features: ``(M, D)`` features of generated images, M >= 2.
        num_subsets: subsets drawn (torch-fidelity's default 100).
        subset_size: samples per set and subset; capped at ``min(N, M)``.
        generator: source of the subset draws; ``np.random.default_rng(0)`` when None,
            so results are reproducible.
        paired: row i of both sets belongs together (the same position in a real and an
            inpainted slice, or on neighbouring slices). Subsets then take the same rows of
            both and the cross term skips the pairs themselves; without this, similar pairs
            bias KID downward (negative values for near-identical sets).

    Returns:
        ``KIDScore`` with the mean and std over the subsets.
    """
    real, fake = _check_pair(real_features, fake_features, min_samples=2)
    if num_subsets < 1 or subset_size < 2:
        raise InputError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets} and {subset_size}")
    if paired and real.shape[0] != fake.shape[0]:
        raise InputError(
            f"paired sets need one fake row per real row, got {real.shape[0]} and {fake.shape[0]}"
        )
    rng = generator if generator is not None else np.random.default_rng(0)
    size = min(subset_size, real.shape[0], fake.shape[0])
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        rows = rng.choice(real.shape[0], size, replace=False)
        x = real[rows]
        y = fake[rows if paired else rng.choice(fake.shape[0], size, replace=False)]
        values[i] = _mmd2_unbiased(x, y, paired)
    return KIDScore(float(values.mean()), float(values.std()), num_subsets, size)


def compare_features(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    paired: bool = False,
) -> DistributionScores:
    """FID and KID of one pair of feature sets (KID subsets drawn with ``seed``; see
    ``get_kid_score`` for ``paired``)."""
    real, fake = _check_pair(real_features, fake_features, min_samples=2)
    rng = np.random.default_rng(seed)
    kid = get_kid_score(
        real, fake, num_subsets=kid_subsets, subset_size=kid_subset_size, generator=rng, paired=paired
    )
    return DistributionScores(get_fid_score(real, fake), kid.mean, kid.std, real.shape[0], fake.shape[0])


def _features(extractor: FeatureExtractor | None, data: np.ndarray) -> np.ndarray:
    return data if extractor is None else extractor.extract(data)


@dataclass(frozen=True)
class FIDMetric:
    """Callable FID. Without an extractor it takes ``(N, D)`` features; with one, images.

    Args:
        extractor: turns ``(N, H, W)`` HU or ``(N, H, W, 3)`` uint8 images into features.
        eps: ridge for near-singular covariances.
    """

    extractor: FeatureExtractor | None = None
    eps: float = 1e-6

    def __call__(self, real: np.ndarray, fake: np.ndarray) -> float:
        return get_fid_score(_features(self.extractor, real), _features(self.extractor, fake), eps=self.eps)


@dataclass(frozen=True)
class KIDMetric:
    """Callable KID. Without an extractor it takes ``(N, D)`` features; with one, images.

    Args:
        extractor: turns images into features (see ``FIDMetric``).
        num_subsets: subsets drawn.
        subset_size: samples per set and subset (capped at the smaller set).
        seed: seed of the subset draws; the same seed gives the same score.
        paired: row i of ``real`` and ``fake`` belong together (see ``get_kid_score``).
    """

    extractor: FeatureExtractor | None = None
    num_subsets: int = 100
    subset_size: int = 1000
    seed: int = 0
    paired: bool = False

    def __call__(self, real: np.ndarray, fake: np.ndarray) -> KIDScore:
        return get_kid_score(
            _features(self.extractor, real),
            _features(self.extractor, fake),
            num_subsets=self.num_subsets,
            subset_size=self.subset_size,
            generator=np.random.default_rng(self.seed),
            paired=self.paired,
        )
