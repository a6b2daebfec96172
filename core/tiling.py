"""Overlapping windows over a large array, and their Gaussian-weighted average (MONAI-style).

``Splitter`` says where the windows go (and can cut them out of an array); ``GaussianMerger``
takes a model's output for each window (``aggregate``) and returns the weighted average of
all windows covering each position (``finalize``). Weights are a separable Gaussian centred
on each window (sigma = ``sigma_scale`` x the window side), so a window's influence fades
towards its edges and neighbouring windows blend without visible seams (the fix for
MultiDiffusion's seams that SYNTHESIS.md lists; ZoomLDM and Graikos et al. decode the same way).

Memory: the merger can be streamed by rows. When windows arrive in raster order (as
``Splitter.rows`` gives them), rows above the next window row are final; ``flush(upto)``
returns them and drops them from the buffer, which therefore holds about one window row::

    splitter = Splitter(window=64, overlap=16)
    merger = GaussianMerger((c, H, W), window=64)
    for row_windows, next_top in splitter.rows((H, W)):
        for win in row_windows:
            merger.aggregate(model(x[:, win.slices]), win)
        band = merger.flush(next_top)          # (c, rows, W): final rows, top to bottom
    band = merger.finalize()                   # the rest

Without ``flush`` the merger holds the whole array and ``finalize`` returns all of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.errors import InputError


@dataclass(frozen=True)
class Window:
    """A window's top-left corner and size, in array rows and columns."""

    y: int
    x: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def scaled(self, factor: int) -> Window:
        """The same window on a grid ``factor`` times finer (latent -> pixels)."""
        return Window(self.y * factor, self.x * factor, self.h * factor, self.w * factor)


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in pair):
        raise InputError(f"{name} must be an integer or a pair of integers, got {value!r}")
    return int(pair[0]), int(pair[1])


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``window`` covering ``[0, length)`` with at least ``overlap`` shared.

    Windows step by ``window - overlap``; the last one is moved back to end exactly at
    ``length`` (so it may overlap its neighbour more). A length shorter than the window
    gets one window, which the caller clips to the length.
    """
    if length <= window:
        return [0]
    stride = window - overlap
    n = math.ceil((length - window) / stride) + 1
    starts = [i * stride for i in range(n)]
    starts[-1] = length - window
    return sorted(set(starts))


class Splitter:
    """Windows of ``window`` pixels overlapping by ``overlap`` (ints or (rows, cols) pairs).

    Args:
        window: window size; windows are clipped to the array where it is smaller.
        overlap: minimum overlap between neighbours, ``0 <= overlap < window``.
    """

    def __init__(self, window: int | tuple[int, int], overlap: int | tuple[int, int] = 0):
        self.window, self.overlap = _pair(window, "window"), _pair(overlap, "overlap")
        for w, o in zip(self.window, self.overlap):
            if w < 1 or not 0 <= o < w:
                raise InputError(
                    f"need window >= 1 and 0 <= overlap < window, got window {self.window}, overlap {self.overlap}"
                )

    def row_starts(self, shape: tuple[int, int]) -> list[int]:
        return window_starts(shape[0], self.window[0], self.overlap[0])

    def col_starts(self, shape: tuple[int, int]) -> list[int]:
        return window_starts(shape[1], self.window[1], self.overlap[1])

    def windows(self, shape: tuple[int, int]) -> list[Window]:
        """All windows over an array of ``shape`` (rows, cols), in raster order."""
        return [w for row, _ in self.rows(shape) for w in row]

    def rows(self, shape: tuple[int, int]) -> Iterator[tuple[list[Window], int]]:
        """Windows one row at a time, each with the row index above which nothing is added later."""
        h, w = min(self.window[0], shape[0]), min(self.window[1], shape[1])
        ys, xs = self.row_starts(shape), self.col_starts(shape)
        for i, y in enumerate(ys):
            next_top = ys[i + 1] if i + 1 < len(ys) else shape[0]
            yield [Window(y, x, h, w) for x in xs], next_top

    def __call__(self, array: np.ndarray) -> Iterator[tuple[np.ndarray, Window]]:
        """``(patch, window)`` for each window of a ``(..., H, W)`` array (patches are views)."""
        for win in self.windows(array.shape[-2:]):
            yield array[(..., *win.slices)], win


EDGE_TAPER = 1 / 8  # share of a window side over which its weight ramps down to ~0 at the edge


def gaussian_weights(h: int, w: int, sigma_scale: float = 1 / 6, *, taper: float = EDGE_TAPER) -> np.ndarray:
    """``(h, w)`` float32 separable Gaussian, 1 at the centre, sigma = ``sigma_scale`` x side,
    times a linear ramp that rises from near 0 (never 0: a canvas border is covered by one
    window only) to 1 over the outer ``taper`` of each side.

    A plain Gaussian is still about 1 % of its peak at the window edge, so a window entering the
    average adds a small step there, and networks (zero padding) are least right at their
    borders: the ramp removed about 40 % of the remaining seam excess of the tiled H&E model
    (``bench/slides.py``: seam ratio 1.079 -> 1.048 at 1024 px, control lines unchanged).
    """
    if not sigma_scale > 0:
        raise InputError(f"sigma_scale must be > 0, got {sigma_scale}")
    if not 0 <= taper < 0.5:
        raise InputError(f"taper must be in [0, 0.5), got {taper}")

    def axis(n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float64)
        g = np.exp(-0.5 * ((i - (n - 1) / 2) / (sigma_scale * n)) ** 2)
        if taper == 0:
            return g
        edge = np.minimum(i, i[::-1])  # pixels to the nearest edge
        return g * np.minimum((edge + 0.5) / max(1.0, taper * n), 1.0)

    return np.outer(axis(h), axis(w)).astype(np.float32)


class GaussianMerger:
    """Gaussian-weighted average of overlapping windows, optionally streamed by rows.

    Args:
        shape: ``(channels, H, W)`` of the merged result.
        sigma_scale: Gaussian sigma as a fraction of the window side; ``None`` = equal
            weights (plain averaging: what naive tiling and MultiDiffusion's ``value / count`` do).
        dtype: accumulator type (float32; float64 for exact reconstruction tests).
    """

    def __init__(self, shape: tuple[int, int, int], *, sigma_scale: float | None = 1 / 6, dtype=np.float32):
        self.channels, self.height, self.width = (int(v) for v in shape)
        self.sigma_scale, self.dtype = sigma_scale, dtype
        self.top = 0  # first row still held
        self._value = np.zeros((self.channels, 0, self.width), dtype)
        self._weight = np.zeros((0, self.width), dtype)
        self._weights_cache: dict[tuple[int, int], np.ndarray] = {}

    def _window_weights(self, h: int, w: int) -> np.ndarray:
        if (h, w) not in self._weights_cache:
            ones = np.ones((h, w), np.float32)
            self._weights_cache[(h, w)] = (
                ones if self.sigma_scale is None else gaussian_weights(h, w, self.sigma_scale)
            )
        return self._weights_cache[(h, w)]

    def _grow(self, bottom: int) -> None:
        held = self._weight.shape[0]
        need = bottom - self.top
        if need > held:
            extra = need - held
            self._value = np.concatenate(
                [self._value, np.zeros((self.channels, extra, self.width), self.dtype)], axis=1
            )
            self._weight = np.concatenate([self._weight, np.zeros((extra, self.width), self.dtype)], axis=0)

    def aggregate(self, values: np.ndarray, window: Window) -> None:
        """Add one window's ``(channels, h, w)`` values (numpy, or a CPU torch tensor)."""
        values = np.asarray(values)
        if values.shape != (self.channels, window.h, window.w):
            raise ValueError(
                f"values of shape {values.shape} do not fit window {window} with {self.channels} channels"
            )
        if window.y < self.top:
            raise ValueError(f"window at row {window.y} is above row {self.top}, which was already flushed")
        if window.y + window.h > self.height or window.x + window.w > self.width or window.x < 0:
            raise ValueError(f"window {window} is outside the merged array ({self.height}, {self.width})")
        self._grow(window.y + window.h)
        wgt = self._window_weights(window.h, window.w)
        r0, r1 = window.y - self.top, window.y - self.top + window.h
        self._value[:, r0:r1, window.x : window.x + window.w] += values * wgt
        self._weight[r0:r1, window.x : window.x + window.w] += wgt

    def flush(self, upto: int) -> np.ndarray:
        """Final rows ``[top, upto)`` as ``(channels, rows, W)``; they are dropped from the buffer."""
        upto = min(int(upto), self.height)
        n = upto - self.top
        if n <= 0:
            return np.zeros((self.channels, 0, self.width), self.dtype)
        self._grow(upto)
        weight = self._weight[:n]
        if not (weight > 0).all():
            rows = np.nonzero((weight <= 0).any(axis=1))[0]
            raise ValueError(f"rows {self.top + rows[0]}.. were covered by no window")
        out = self._value[:, :n] / weight
        self._value, self._weight = self._value[:, n:].copy(), self._weight[n:].copy()
        self.top = upto
        return out

    def finalize(self) -> np.ndarray:
        """All rows not flushed yet (the whole array when ``flush`` was never called)."""
        return self.flush(self.height)

    @property
    def held_rows(self) -> int:
        """Rows currently buffered (for memory checks)."""
        return self._weight.shape[0]
