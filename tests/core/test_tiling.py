"""Splitter + GaussianMerger: coverage, exact reconstruction with an identity model, streaming by rows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.errors import InputError
from core.tiling import GaussianMerger, Splitter, Window, gaussian_weights, window_starts


def test_window_starts_cover_and_keep_the_overlap():
    assert window_starts(256, 64, 16) == [0, 48, 96, 144, 192]
    starts = window_starts(250, 64, 16)
    assert starts[0] == 0 and starts[-1] + 64 == 250
    assert all(b - a <= 48 for a, b in itertools.pairwise(starts))  # overlap never below 16
    assert window_starts(40, 64, 16) == [0]
    assert window_starts(256, 64, 0) == [0, 64, 128, 192]


@pytest.mark.parametrize(
    "shape, window, overlap", [((100, 130), 32, 8), ((64, 64), 64, 0), ((20, 90), 32, (4, 12))]
)
def test_identity_model_reconstructs_exactly(shape, window, overlap):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, *shape)).astype(np.float64)
    splitter = Splitter(window, overlap)
    merger = GaussianMerger((3, *shape), dtype=np.float64)
    for patch, win in splitter(image):
        merger.aggregate(patch, win)  # identity "model"
    out = merger.finalize()
    assert out.shape == image.shape
    assert np.abs(out - image).max() < 1e-9
    assert np.array_equal(np.rint(out).astype(np.uint8), image.astype(np.uint8))


def test_streamed_rows_equal_the_whole_and_memory_is_one_window_row():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 200, 50))
    splitter = Splitter(32, 8)
    bands, held = [], []
    merger = GaussianMerger((2, 200, 50), dtype=np.float64)
    for wins, next_top in splitter.rows(image.shape[1:]):
        for win in wins:
            merger.aggregate(image[:, win.y : win.y + win.h, win.x : win.x + win.w] * 2, win)
        held.append(merger.held_rows)
        bands.append(merger.flush(next_top))
    bands.append(merger.finalize())
    out = np.concatenate(bands, axis=1)
    assert np.allclose(out, image * 2)
    assert max(held) <= 32 + 24  # one window plus a stride, whatever the image height


def test_gaussian_weights_blend_disagreeing_windows_smoothly():
    """Two windows predicting 0 and 1: the blend moves gradually across the overlap (no step)."""
    merger = GaussianMerger((1, 8, 96))
    merger.aggregate(np.zeros((1, 8, 64)), Window(0, 0, 8, 64))
    merger.aggregate(np.ones((1, 8, 64)), Window(0, 32, 8, 64))
    row = merger.finalize()[0, 0]
    assert row[:32].max() == 0 and row[64:].min() == 1
    assert np.all(np.diff(row[32:64]) > 0)  # monotone inside the overlap
    assert np.abs(np.diff(row)).max() < 0.25  # versus a jump of 1 when stitching, 0.5 with equal weights
    w = gaussian_weights(64, 64)
    assert w.max() == pytest.approx(1.0, abs=1e-2) and w[0, 32] < 0.02


def test_bad_arguments():
    with pytest.raises(InputError):
        Splitter(32, 32)
    with pytest.raises(InputError):
        Splitter(0)
    merger = GaussianMerger((1, 10, 10))
    with pytest.raises(ValueError, match="do not fit"):
        merger.aggregate(np.zeros((1, 4, 4)), Window(0, 0, 5, 5))
    merger.aggregate(np.zeros((1, 5, 5)), Window(0, 0, 5, 5))
    with pytest.raises(ValueError, match="covered by no window"):
        merger.finalize()


def test_seam_ratio_sees_tile_edges_and_not_smooth_images():
    from core.metrics.seams import seam_ratio, tile_boundaries

    rng = np.random.default_rng(0)
    texture = rng.normal(128, 10, (256, 256))
    rows = cols = tile_boundaries(256, 64)
    assert rows == [64, 128, 192]
    assert seam_ratio(texture, rows, cols).ratio == pytest.approx(1.0, abs=0.05)
    tiled = texture + np.kron(rng.normal(0, 15, (4, 4)), np.ones((64, 64)))  # a brightness step per tile
    assert seam_ratio(tiled, rows, cols).ratio > 1.3
    assert tile_boundaries(256, 64, 16) == [48, 64, 96, 112, 144, 160, 192, 208]
    with pytest.raises(InputError):
        seam_ratio(texture, [], [])


def test_seam_ratio_with_a_period_ignores_a_decoders_cell_texture_but_not_seams():
    from core.metrics.seams import seam_ratio, tile_boundaries

    rng = np.random.default_rng(1)
    cells = rng.normal(128, 10, (64, 64))
    # 4x upsampled: steps at every cell edge, as a latent decoder leaves
    decoded = np.kron(cells, np.ones((4, 4))) + rng.normal(0, 2, (256, 256))
    rows = cols = tile_boundaries(256, 64)
    assert seam_ratio(decoded, rows, cols).ratio > 1.5  # every pair: the cell edges look like seams
    assert seam_ratio(decoded, rows, cols, period=4).ratio == pytest.approx(1.0, abs=0.05)
    tiled = decoded + np.kron(rng.normal(0, 15, (4, 4)), np.ones((64, 64)))
    assert seam_ratio(tiled, rows, cols, period=4).ratio > 1.2
    with pytest.raises(InputError, match="multiple"):
        seam_ratio(decoded, [66], [], period=4)


def test_window_weights_peak_at_the_centre_and_vanish_at_the_edges():
    from core.tiling import gaussian_weights

    w = gaussian_weights(64, 32)
    assert w.shape == (64, 32) and w.max() == pytest.approx(1.0, abs=0.01)
    plain = gaussian_weights(64, 32, taper=0)
    assert plain[32, 0] > 0.01  # a plain Gaussian is still ~1 % of its peak at the edge
    assert 0 < w[0, 0] < 1e-5 and 0 < w[32, 0] < 0.2 * plain[32, 0]
    assert np.allclose(w[16:48, 8:24], plain[16:48, 8:24])  # the inside is the plain Gaussian
    with pytest.raises(InputError):
        gaussian_weights(8, 8, taper=0.6)
