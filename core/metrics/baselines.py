"""The neighbouring-slice baseline: how close real data gets to itself.

CT inpainting papers judge a model's FID against the FID between adjacent real slices:
slice k and slice k + 1 of the same volume are as alike as two real images can be, so
their FID is the floor a generator can hope to approach. Here

* without crop boxes, set A is slices k and set B slices k + offset, over disjoint pairs
  (k in [0, offset), [2 offset, 3 offset), ...) so no slice is in both sets;
* with crop boxes, set A is each box on its own slice and set B the same box on the slice
  ``offset`` above (below when above is out of the volume): the same positions as the
  inpainted regions, so the baseline and the model are scored on comparable crops.

Compare a model only with a baseline computed on the same number of samples (FID is
biased by N); ``ratio_to_baseline`` refuses unequal sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import InputError
from core.metrics.distribution import DistributionScores, compare_features
from core.metrics.extractors import FeatureExtractor


@dataclass(frozen=True)
class CropBox:
    """An axial crop: rows ``y0:y1`` and columns ``x0:x1`` of slice ``z`` (voxel indices)."""

    z: int
    y0: int
    y1: int
    x0: int
    x1: int

    def take(self, volume: np.ndarray, z: int | None = None) -> np.ndarray:
        """``(y1 - y0, x1 - x0)`` crop of ``volume`` (z, y, x) on slice ``z`` (default: the box's own)."""
        return volume[self.z if z is None else z, self.y0 : self.y1, self.x0 : self.x1]


@dataclass(frozen=True)
class BaselineRatio:
    """A model's scores divided by the neighbouring-slice baseline's (1 = as close as real data).

    ``kid`` is NaN when the baseline KID does not exceed its spread over subsets (the
    unbiased estimate cannot tell the neighbouring sets apart): a ratio to a value that is
    noise around 0 means nothing. Compare ``kid_mean`` differences then.
    """

    fid: float
    kid: float


def slice_pairs(depth: int, offset: int = 1) -> list[tuple[int, int]]:
    """Disjoint ``(k, k + offset)`` slice pairs of a volume with ``depth`` slices."""
    if offset < 1:
        raise InputError(f"offset must be >= 1 slice, got {offset}")
    return [(k, k + offset) for k in range(depth - offset) if (k // offset) % 2 == 0]


def _check_volume(volume: np.ndarray, index: int) -> None:
    if not isinstance(volume, np.ndarray) or volume.ndim != 3:
        got = getattr(volume, "shape", type(volume).__name__)
        raise InputError(f"volume {index} must be a (z, y, x) array, got {got}")


def _pair_images(
    volume: np.ndarray, boxes: Sequence[CropBox] | None, offset: int, max_pairs: int | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if boxes is None:
        pairs = slice_pairs(volume.shape[0], offset)
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)]
        return [volume[a] for a, _ in pairs], [volume[b] for _, b in pairs]
    a, b = [], []
    for box in boxes:
        if not (0 <= box.z < volume.shape[0] and 0 <= box.y0 < box.y1 <= volume.shape[1]
                and 0 <= box.x0 < box.x1 <= volume.shape[2]):
            raise InputError(f"crop box {box} lies outside the volume of shape {volume.shape}")
        other = box.z + offset if box.z + offset < volume.shape[0] else box.z - offset
        if other < 0:
            raise InputError(f"volume has {volume.shape[0]} slices: no slice {offset} away from {box}")
        a.append(box.take(volume))
        b.append(box.take(volume, other))
    return a, b


def extract_features(extractor: FeatureExtractor, images: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, D)`` features of N HU images of possibly different sizes, in their order.

    Slices of different volumes (and crops of different masks) differ in size: each size
    group goes through the extractor as one batch.
    """
    out: list[np.ndarray | None] = [None] * len(images)
    shapes = sorted({im.shape for im in images})
    for shape in shapes:
        idx = [i for i, im in enumerate(images) if im.shape == shape]
        feats = extractor.extract(np.stack([images[i] for i in idx]).astype(np.float32))
        for i, f in zip(idx, feats):
            out[i] = f
    return np.stack(out)  # type: ignore[arg-type]


def neighbouring_slice_baseline(
    volumes: Sequence[np.ndarray],
    extractor: FeatureExtractor,
    *,
    boxes: Sequence[Sequence[CropBox]] | None = None,
    offset: int = 1,
    max_pairs: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> DistributionScores:
    """FID/KID between real slices (or crops) ``offset`` slices apart.

    Args:
        volumes: ``(z, y, x)`` HU arrays (``Volume.array``), one per case.
        extractor: feature extractor taking ``(N, H, W)`` HU.
        boxes: per volume, the crop boxes (e.g. the inpainted regions); None = whole slices.
        offset: slices between the two sets; 1 is the neighbouring-slice baseline, larger
            offsets show how the distance grows with anatomical change.
        max_pairs: whole-slice mode only: at most this many evenly spread pairs per volume,
            to compare offsets at equal sample sizes.
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (capped at the number of pairs).
        seed: seed of the KID subset draws.

    Returns:
        ``DistributionScores`` with set A as "real" and set B as "fake".
    """
    if len(volumes) == 0:
        raise InputError("no volumes given")
    if boxes is not None and len(boxes) != len(volumes):
        raise InputError(
            f"boxes must hold one list per volume: {len(boxes)} lists for {len(volumes)} volumes"
        )
    set_a: list[np.ndarray] = []
    set_b: list[np.ndarray] = []
    for i, volume in enumerate(volumes):
        _check_volume(volume, i)
        a, b = _pair_images(volume, None if boxes is None else boxes[i], offset, max_pairs)
        set_a += a
        set_b += b
    if len(set_a) < 2:
        raise InputError(
            f"only {len(set_a)} slice pairs {offset} apart: need at least 2 (more volumes or boxes)"
        )
    feats_a, feats_b = extract_features(extractor, set_a), extract_features(extractor, set_b)
    # Row i of both sets is one pair (same place, nearby slices): KID's paired estimator.
    return compare_features(
        feats_a, feats_b, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, paired=True
    )


def ratio_to_baseline(scores: DistributionScores, baseline: DistributionScores) -> BaselineRatio:
    """A model's FID and KID as multiples of the neighbouring-slice baseline.

    Args:
        scores: the model's scores (real crops vs generated crops).
        baseline: ``neighbouring_slice_baseline`` on the same positions and sample sizes.

    Raises:
        InputError: sample sizes differ (FID is biased by N) or the baseline FID is 0.
    """
    if (scores.n_real, scores.n_fake) != (baseline.n_real, baseline.n_fake):
        raise InputError(
            f"sample sizes differ: model {scores.n_real}/{scores.n_fake}, baseline "
            f"{baseline.n_real}/{baseline.n_fake}; compute both on the same crops"
        )
    if not baseline.fid > 0:
        raise InputError("baseline FID is 0: its two sets are identical (duplicated slices?)")
    resolved = baseline.kid_mean > 0 and baseline.kid_mean > baseline.kid_std
    kid = scores.kid_mean / baseline.kid_mean if resolved else math.nan
    return BaselineRatio(fid=scores.fid / baseline.fid, kid=kid)
