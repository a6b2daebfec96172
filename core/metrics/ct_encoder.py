"""The CT feature network: a small residual CNN from axial HU crops to a feature vector.

Imported lazily (it imports torch): by ``core.metrics.extractors.CTFeatureExtractor``
and by the training script ``core/training/train_features.py``. Its input contract is
fixed and written to the model card, because features are only comparable under the
same preprocessing:

* HU are clipped to each range of ``CTEncoderConfig.hu_ranges`` and scaled to
  [-1, 1] (``core.normalization.normalize_hu``), one channel per range: by default a
  wide channel [-1000, 1000] HU (air to bone) and a soft-tissue channel [-160, 240] HU
  where lesion texture lives;
* crops are resized to ``input_size`` x ``input_size`` by bilinear interpolation
  (antialiased when shrinking, ``align_corners=False``); non-square crops are
  stretched, so pass square crops when aspect matters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.normalization import normalize_hu


@dataclass(frozen=True)
class CTEncoderConfig:
    """Architecture and input contract of the CT encoder (stored in the model card)."""

    widths: tuple[int, ...] = (32, 64, 96, 128)  # channels per stage; features = widths[-1]
    input_size: int = 64  # crops are resized to input_size x input_size pixels
    # One input channel per HU range, each clipped and scaled to [-1, 1].
    hu_ranges: tuple[tuple[float, float], ...] = ((-1000.0, 1000.0), (-160.0, 240.0))
    groups: int = 8  # GroupNorm groups: no batch statistics, so features never depend on the batch

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "CTEncoderConfig":
        return cls(
            widths=tuple(int(w) for w in data["widths"]),
            input_size=int(data["input_size"]),
            hu_ranges=tuple((float(lo), float(hi)) for lo, hi in data["hu_ranges"]),
            groups=int(data["groups"]),
        )


def preprocess_hu(images: np.ndarray, config: CTEncoderConfig) -> torch.Tensor:
    """``(N, H, W)`` HU -> ``(N, C, S, S)`` float32 network input (C = len(hu_ranges), S = input_size)."""
    channels = [normalize_hu(images, low=lo, high=hi) for lo, hi in config.hu_ranges]
    x = torch.from_numpy(np.stack(channels, axis=1))  # (N, C, H, W) in [-1, 1]
    size = config.input_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class _ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class CTEncoder(nn.Module):
    """``(N, C, S, S)`` normalised crops -> ``(N, widths[-1])`` features (global average pool).

    A stride-2 stem, then per stage a residual block and a stride-2 convolution to the
    next width: with S = 64 and four stages the maps are 32, 16, 8, 4 pixels wide.
    """

    def __init__(self, config: CTEncoderConfig) -> None:
        super().__init__()
        self.config = config
        w, g = config.widths, config.groups
        self.stem = nn.Conv2d(len(config.hu_ranges), w[0], 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(_ResBlock(c, g) for c in w)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(g, a), nn.SiLU(), nn.Conv2d(a, b, 3, stride=2, padding=1))
            for a, b in zip(w[:-1], w[1:])
        )
        self.norm_out = nn.GroupNorm(g, w[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # (N, w0, S/2, S/2)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.downs):
                h = self.downs[i](h)  # halves the map, next width
        h = F.silu(self.norm_out(h))  # (N, w[-1], S/16, S/16)
        return h.mean(dim=(2, 3))  # (N, w[-1])
