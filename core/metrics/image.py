"""Paired image metrics: PSNR and SSIM (scikit-image's definitions), optionally inside a mask.

For CT in HU give ``data_range`` explicitly (e.g. 2000 for values clipped to
[-1000, 1000]): scikit-image would otherwise guess it from the dtype, which for float
HU is meaningless. A mask restricts the average to the region that was generated.
"""

from __future__ import annotations

import numpy as np

from core.errors import InputError


def _check_pair(reference: np.ndarray, test: np.ndarray, data_range: float, mask: np.ndarray | None):
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if reference.shape != test.shape or reference.ndim not in (2, 3):
        raise InputError(f"need two 2D or 3D images of one shape, got {reference.shape} and {test.shape}")
    if not (np.isfinite(reference).all() and np.isfinite(test).all()):
        raise InputError("images contain NaN or infinite values")
    if not data_range > 0:
        raise InputError(f"data_range must be > 0 (e.g. 2000 for HU in [-1000, 1000]), got {data_range}")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != reference.shape or not mask.any():
            raise InputError(
                f"mask must be a non-empty boolean array of shape {reference.shape}, got {mask.shape}"
            )
    return reference, test, mask


def psnr(
    reference: np.ndarray, test: np.ndarray, *, data_range: float, mask: np.ndarray | None = None
) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images).

    Args:
        reference: ground truth, 2D or 3D (HU for CT).
        test: same shape as ``reference``.
        data_range: max minus min of the possible values, in the images' units.
        mask: optional boolean array of the same shape: score only these pixels.
    """
    reference, test, mask = _check_pair(reference, test, data_range, mask)
    # skimage's peak_signal_noise_ratio formula, with the mask and without its divide-by-zero warning.
    err = (reference - test) ** 2
    mse = float(err.mean() if mask is None else err[mask].mean())
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(
    reference: np.ndarray, test: np.ndarray, *, data_range: float, mask: np.ndarray | None = None
) -> float:
    """Structural similarity (Wang et al. 2004; scikit-image, 7x7 window), in [-1, 1].

    Args:
        reference: ground truth, 2D or 3D, each side >= 7 pixels.
        test: same shape as ``reference``.
        data_range: max minus min of the possible values, in the images' units.
        mask: optional boolean array: average the SSIM map over these pixels only.
    """
    from skimage.metrics import structural_similarity

    reference, test, mask = _check_pair(reference, test, data_range, mask)
    if min(reference.shape) < 7:
        raise InputError(f"SSIM needs every side >= 7 pixels (its window), got {reference.shape}")
    value, full = structural_similarity(reference, test, data_range=data_range, full=True)
    return float(value if mask is None else full[mask].mean())
