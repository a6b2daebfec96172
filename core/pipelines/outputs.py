"""Output dataclasses of the pipelines (numpy only, so the app can hold them without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.pipelines.crops import CropBox


@dataclass
class CTInpaintOutput:
    """Result of ``CTInpaintPipeline.__call__`` on one axial slice.

    Attributes:
        images: ``(n, rows, cols)`` float32 HU, the edited slice once per sample; pixels
            outside ``mask`` are bit-identical to the input slice.
        mask: ``(rows, cols)`` bool, the repainted region.
        samples: ``(n, r, r)`` float32 HU, the model's raw output on the crop at the model
            resolution ``r`` (before scaling back and blending), clipped to the model's HU range.
        mean: ``(rows, cols)`` float32 HU, per-pixel mean of ``images``.
        std: ``(rows, cols)`` float32 HU, per-pixel standard deviation of ``images``
            (population, ddof=0); exactly 0 outside ``mask`` and everywhere when n == 1.
        crop_box: the square region of the slice that was sampled.
        provenance: JSON-able record: models (name, path, sha256), seeds, sampler, steps,
            content, mask and input hashes, crop box, HU range, UNet evaluations.
    """

    images: np.ndarray
    mask: np.ndarray
    samples: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    crop_box: CropBox
    provenance: dict = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        """The first sample's edited slice, ``(rows, cols)`` float32 HU."""
        return self.images[0]
