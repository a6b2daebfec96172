"""A fixed H&E feature extractor for patch FID/KID: stain statistics, texture energies, random filters.

Why a fixed extractor and not a network: no pretrained pathology or Inception weights can
be downloaded here, and a network trained on our two slides would learn to tell the two
slides apart (stain and scanner) more than what tissue looks like. A fixed function has
no weights to ship or verify, gives the same features on every machine, and each feature
means something. It is weaker than a foundation-model embedding: treat its FID/KID as a
within-project comparison (our tiles vs naive tiling vs real held-out tiles, always at
equal sample sizes and patch sizes), not as a number comparable with published patch FIDs.

Features of one ``(h, w, 3)`` uint8 patch (``feature_dim`` = 113), all from optical density
``OD = -ln(max(v, 1) / 255)`` per RGB channel and the hematoxylin / eosin densities of
scikit-image's H&E-DAB colour deconvolution (``hed_from_rgb``):

* **stain** (25): mean, std and 10/50/90th percentiles of OD-R, OD-G, OD-B, H and E;
* **texture** (24): for H, E and total OD at Gaussian scales 1, 2, 4 and 8 px, the mean
  gradient magnitude and the mean absolute scale-normalised Laplacian (``log1p``-compressed):
  nuclear size and density, fibre and edge content;
* **random filters** (64): 16 fixed 7x7 filters on the three OD channels (zero mean, unit
  norm, drawn once from ``numpy.random.default_rng(20240101)``) at full and half
  resolution, ReLU, then the mean and the standard deviation of each response.
"""

from __future__ import annotations

import numpy as np

from core.metrics.extractors import check_images

_SEED = 20240101
_SCALES = (1.0, 2.0, 4.0, 8.0)
_N_FILTERS = 16


def _random_filters() -> np.ndarray:
    """``(16, 3, 7, 7)`` float32, zero mean and unit norm each (independent of library versions)."""
    w = np.random.default_rng(_SEED).standard_normal((_N_FILTERS, 3, 7, 7))
    w -= w.mean(axis=(1, 2, 3), keepdims=True)
    w /= np.linalg.norm(w.reshape(_N_FILTERS, -1), axis=1)[:, None, None, None]
    return w.astype(np.float32)


class HETextureExtractor:
    """``(N, H, W, 3)`` uint8 H&E patches -> ``(N, 113)`` float64 features (see the module docstring).

    Args:
        batch_size: patches per random-filter pass (memory only).
    """

    name = "he-texture-v1"
    feature_dim = 25 + 24 + 4 * _N_FILTERS

    def __init__(self, *, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._filters = _random_filters()

    def _stain_texture(self, rgb: np.ndarray) -> np.ndarray:
        from scipy import ndimage as ndi
        from skimage.color import hed_from_rgb

        od = -np.log(np.maximum(rgb, 1).astype(np.float32) / 255.0)  # (h, w, 3)
        hed = np.maximum(od @ (hed_from_rgb.astype(np.float32) / np.float32(-np.log(1e-6))), 0)
        maps = [od[..., 0], od[..., 1], od[..., 2], hed[..., 0], hed[..., 1]]
        stain = [f for m in maps for f in (m.mean(), m.std(), *np.percentile(m, (10, 50, 90)))]
        texture = []
        for m in (hed[..., 0], hed[..., 1], od.sum(-1)):
            for s in _SCALES:
                grad = ndi.gaussian_gradient_magnitude(m, s).mean()
                log = np.abs(ndi.gaussian_laplace(m, s)).mean() * s * s
                texture += [np.log1p(10 * grad), np.log1p(10 * log)]
        return np.asarray(stain + texture, np.float64)

    def _random_features(self, rgb: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        od = torch.from_numpy(-np.log(np.maximum(rgb, 1).astype(np.float32) / 255.0)).permute(0, 3, 1, 2)
        w = torch.from_numpy(self._filters)
        feats = []
        with torch.inference_mode():
            for x in (od, F.avg_pool2d(od, 2)):
                r = F.relu(F.conv2d(x, w))  # (n, 16, h', w')
                feats += [r.mean(dim=(2, 3)), r.std(dim=(2, 3))]
        return torch.cat(feats, 1).double().numpy()

    def extract(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 -> ``(N, 113)`` float64 (deterministic; H, W >= 16)."""
        check_images(images, accept=("rgb",))
        stain = np.stack([self._stain_texture(im) for im in images])
        rand = np.concatenate(
            [
                self._random_features(images[i : i + self.batch_size])
                for i in range(0, len(images), self.batch_size)
            ]
        )
        return np.concatenate([stain, rand], axis=1)
