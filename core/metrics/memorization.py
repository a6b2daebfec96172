"""Memorisation: how close each generated crop is to its nearest training crop.

The score of Akbar et al. 2025 (Mach. Learn.: Sci. Technol., doi 10.1088/2632-2153/ad9a3a):
the maximum normalised cross-correlation (Pearson correlation of the pixels) between a
generated image and every training image of the same size. Values near 1 flag copies;
compare with the same score of held-out real crops against the training set, which tells
what "near" means on the data at hand. Constant images have no structure to copy and
score 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import InputError


@dataclass(frozen=True)
class NearestNeighbours:
    """Attributes:
        max_ncc: ``(N,)`` highest correlation of each generated image with any training image.
        index: ``(N,)`` index of that training image.
    """

    max_ncc: np.ndarray
    index: np.ndarray


def _standardise(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images, np.float64)
    if images.ndim < 3 or images.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty batch (N, H, W[, C]), got shape {images.shape}")
    if not np.isfinite(images).all():
        raise InputError(f"{name} contain NaN or infinite values")
    flat = images.reshape(len(images), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)


def nearest_neighbour_correlation(
    generated: np.ndarray, training: np.ndarray, *, chunk: int = 4096
) -> NearestNeighbours:
    """Max normalised cross-correlation of each generated image to all training images.

    Args:
        generated: ``(N, H, W)`` (or ``(N, H, W, C)``) generated crops.
        training: ``(M, H, W)`` training crops of the same size, same units.
        chunk: training images compared at once (memory: ``N * chunk`` floats).
    """
    gen, train = _standardise(generated, "generated"), _standardise(training, "training")
    if np.shape(generated)[1:] != np.shape(training)[1:]:
        raise InputError(
            f"image sizes differ: generated {np.shape(generated)[1:]}, training {np.shape(training)[1:]}"
        )
    best = np.full(len(gen), -np.inf)
    index = np.zeros(len(gen), dtype=np.int64)
    for start in range(0, len(train), chunk):
        corr = gen @ train[start : start + chunk].T  # (N, chunk) Pearson correlations
        arg = corr.argmax(axis=1)
        value = corr[np.arange(len(gen)), arg]
        better = value > best
        best[better], index[better] = value[better], arg[better] + start
    return NearestNeighbours(max_ncc=best, index=index)
