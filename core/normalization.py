"""Model-input normalisation of HU: a fixed clip range scaled to [-1, 1].

Kept apart from display windowing on purpose: the model's range is part of its
checkpoint (written to its model card), the display window is the user's choice.
Common ranges: soft tissue [-160, 240], lung [-1350, 150], MAISI-like [-1000, 1000].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAMED_RANGES: dict[str, tuple[float, float]] = {
    "soft_tissue": (-160.0, 240.0),
    "lung": (-1350.0, 150.0),
    "wide": (-1000.0, 1000.0),
}


def normalize_hu(hu: np.ndarray, *, low: float, high: float) -> np.ndarray:
    """HU -> float32 in [-1, 1], clipping to ``[low, high]``."""
    if not high > low:
        raise ValueError(f"normalisation high ({high}) must exceed low ({low})")
    x = np.clip(np.asarray(hu, dtype=np.float32), low, high)
    return (x - low) * np.float32(2.0 / (high - low)) - np.float32(1.0)


def denormalize_hu(x: np.ndarray, *, low: float, high: float) -> np.ndarray:
    """[-1, 1] -> HU in ``[low, high]`` (inputs outside [-1, 1] are clipped)."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    return (x + np.float32(1.0)) * np.float32((high - low) / 2.0) + np.float32(low)


@dataclass(frozen=True)
class HUNormalize:
    """Callable form of ``normalize_hu`` with its inverse.

    Args:
        low: HU mapped to -1.
        high: HU mapped to +1.
    """

    low: float = -1000.0
    high: float = 1000.0

    @classmethod
    def named(cls, name: str) -> "HUNormalize":
        if name not in NAMED_RANGES:
            raise ValueError(f"unknown HU range {name!r}; choose one of {list(NAMED_RANGES)}")
        return cls(*NAMED_RANGES[name])

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        return normalize_hu(hu, low=self.low, high=self.high)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return denormalize_hu(x, low=self.low, high=self.high)
