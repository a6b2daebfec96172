"""Pyramidal OME-TIFF written band by band: levels, tiles, pixel size, read back by tifffile and open_slide."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.io.slide import open_slide
from core.io.slide_write import level_sizes, write_pyramid


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w)[None].astype(np.uint8)
    img[..., 1] = np.linspace(0, 255, h)[:, None].astype(np.uint8)
    img[..., 2] = rng.integers(0, 256, (h, w))
    return img


def _bands(img: np.ndarray, rows: int):
    for y in range(0, img.shape[0], rows):
        yield img[y : y + rows]


def test_level_sizes_halve_until_one_tile():
    assert level_sizes(1000, 700, 256) == [(1000, 700), (500, 350), (250, 175)]
    assert level_sizes(200, 100, 256) == [(200, 100)]


def test_lossless_pyramid_reads_back_with_tifffile_and_open_slide(tmp_path):
    import tifffile

    img = _image(600, 1000)
    info, thumb = write_pyramid(
        tmp_path / "s.ome.tif",
        _bands(img, 77),
        width=1000,
        height=600,
        tile=256,
        compression="zlib",
        mpp=0.5,
        thumbnail_size=300,
    )
    assert info.levels == ((1000, 600), (500, 300), (250, 150))
    with tifffile.TiffFile(info.path) as tif:
        assert tif.is_ome and len(tif.pages[0].subifds or ()) == 2
        levels = tif.series[0].levels
        assert np.array_equal(levels[0].asarray(), img)
        lvl1 = levels[1].asarray()
    # level 1 is the 2x2 mean of level 0 (rounded)
    expect = ((img.astype(np.uint16).reshape(300, 2, 500, 2, 3).sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)
    assert np.array_equal(lvl1, expect)
    with open_slide(info.path) as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert [(lv.width, lv.height) for lv in slide.levels] == [(1000, 600), (500, 300), (250, 150)]
        assert np.array_equal(
            slide.read_region(level=0, x=900, y=500, width=100, height=100), img[500:, 900:]
        )
    assert max(thumb.shape[:2]) == 300


def test_jpeg_pyramid_is_close_and_odd_sizes_work(tmp_path):
    img = _image(333, 517)
    img[..., 2] = 128  # smooth content: JPEG keeps it within a few grey levels
    info, _ = write_pyramid(
        tmp_path / "j.ome.tif",
        _bands(img, 100),
        width=517,
        height=333,
        tile=128,
        compression="jpeg",
        quality=95,
    )
    with open_slide(info.path) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [(517, 333), (259, 167), (130, 84), (65, 42)]
        back = slide.read_region(level=0, x=0, y=0, width=517, height=333)
    assert np.abs(back.astype(int) - img).mean() < 3


def test_wrong_bands_and_options_fail(tmp_path):
    img = _image(64, 64)
    with pytest.raises(ValueError, match="declared 80 rows"):
        write_pyramid(tmp_path / "a.tif", _bands(img, 32), width=64, height=80, compression="zlib")
    with pytest.raises(ValueError, match="bands must be"):
        write_pyramid(tmp_path / "b.tif", _bands(img[:, :50], 32), width=64, height=64)
    with pytest.raises(InputError, match="compression"):
        write_pyramid(tmp_path / "c.tif", _bands(img, 32), width=64, height=64, compression="lzw")
    with pytest.raises(InputError, match="tile"):
        write_pyramid(tmp_path / "d.tif", _bands(img, 32), width=64, height=64, tile=100)
