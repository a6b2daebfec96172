"""Image-quality metrics for synthetic CT and H&E.

* ``distribution``: FID and KID from features (``get_fid_score``/``FIDMetric``,
  ``get_kid_score``/``KIDMetric``);
* ``extractors``: features from images: our trained ``CTFeatureExtractor`` and the
  standard ``InceptionExtractor`` from a user-supplied weight file;
* ``baselines``: the neighbouring-slice baseline and a model's ratio to it;
* ``permutation``: whether one method's FID is really below another's (paired permutation test);
* ``image``: PSNR and SSIM; ``memorization``: nearest-neighbour correlation.

Importing this package does not import torch; building an extractor does.
"""

from core.metrics.baselines import CropBox, neighbouring_slice_baseline, ratio_to_baseline
from core.metrics.distribution import (
    DistributionScores,
    FIDMetric,
    KIDMetric,
    KIDScore,
    compare_features,
    get_fid_score,
    get_kid_score,
)
from core.metrics.extractors import CTFeatureExtractor, InceptionExtractor, check_images
from core.metrics.image import psnr, ssim
from core.metrics.memorization import nearest_neighbour_correlation
from core.metrics.permutation import FIDComparison, paired_fid_permutation_test

__all__ = [
    "CTFeatureExtractor",
    "CropBox",
    "DistributionScores",
    "FIDComparison",
    "FIDMetric",
    "InceptionExtractor",
    "KIDMetric",
    "KIDScore",
    "check_images",
    "compare_features",
    "get_fid_score",
    "get_kid_score",
    "nearest_neighbour_correlation",
    "neighbouring_slice_baseline",
    "paired_fid_permutation_test",
    "psnr",
    "ratio_to_baseline",
    "ssim",
]
