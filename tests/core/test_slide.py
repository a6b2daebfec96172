"""Tests for core.io.slide: real SVS files, pyramidal TIFFs written here, plain images, bad files."""

from __future__ import annotations

import functools
import itertools
import shutil
import struct
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image

from core.errors import InputError
from core.io.slide import open_slide

# name -> (level-0 width, height, number of pyramid levels, mpp, magnification)
SVS = {
    "cmu-1-small-region": (2220, 2967, 1, 0.499, 20.0),  # tiled JPEG; 4 pages, only page 0 is a level
    "tcga-cr-7395-01a-01-ts1": (4443, 3567, 2, None, None),  # tiled JPEG 2000; page 1 is the thumbnail
}


@pytest.fixture(scope="module")
def histo(shared_data: Path) -> Path:
    return shared_data / "histo"


@functools.lru_cache(maxsize=2)  # 20-48 MB decodes, shared read-only by several tests
def _png_reference(histo: Path, name: str) -> np.ndarray:
    with Image.open(histo / f"{name}.png") as im:
        reference = np.asarray(im.convert("RGB"))
    reference.flags.writeable = False
    return reference


def _random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_bilevel_png(path: Path, width: int, height: int, *, rows: int | None = None) -> None:
    """A black 1-bit PNG written row by row (cheap at any size: zeros compress ~1000:1)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    line = b"\0" * (1 + -(-width // 8))  # filter byte + packed row
    comp = zlib.compressobj(6)
    idat = b"".join(comp.compress(line) for _ in range(height if rows is None else rows)) + comp.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# --- real SVS slides ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SVS)
def test_svs_opens_with_level0_size_and_scale(histo: Path, name: str) -> None:
    width, height, n_levels, mpp, magnification = SVS[name]
    with open_slide(histo / f"{name}.svs") as slide:
        assert (slide.levels[0].width, slide.levels[0].height) == (width, height)
        assert len(slide.levels) == n_levels  # thumbnail / label / macro pages are not levels
        assert slide.mpp == mpp
        assert slide.magnification == magnification
        assert slide.meta["format"] == "svs" and slide.meta["vendor"] == "aperio"


@pytest.mark.parametrize("name", SVS)
def test_read_region_level0_matches_png_decode(histo: Path, name: str) -> None:
    # Measured: our imagecodecs decode equals the PNG decodes bit for bit (max difference 0),
    # so equality is asserted, for the whole level (every tile, including partial edge tiles)
    # and for an off-grid region spanning several tiles.
    reference = _png_reference(histo, name)
    with open_slide(histo / f"{name}.svs") as slide:
        h, w = reference.shape[:2]
        whole = slide.read_region(level=0, x=0, y=0, width=w, height=h)
        region = slide.read_region(level=0, x=333, y=517, width=700, height=450)
    assert whole.dtype == np.uint8 and whole.shape == (h, w, 3)
    np.testing.assert_array_equal(whole, reference)
    np.testing.assert_array_equal(region, reference[517:967, 333:1033])


def test_levels_have_increasing_downsample_and_show_the_same_tissue(histo: Path) -> None:
    with open_slide(histo / "tcga-cr-7395-01a-01-ts1.svs") as slide:
        downsamples = [lvl.downsample for lvl in slide.levels]
        assert downsamples[0] == 1.0
        assert all(a < b for a, b in itertools.pairwise(downsamples))
        assert (slide.levels[1].width, slide.levels[1].height) == (2221, 1783)
        assert downsamples[1] == pytest.approx(2.0, abs=1e-3)
        assert [slide.best_level_for(d) for d in (0.5, 1.0, 1.9, 2.0, 64.0)] == [0, 0, 0, 1, 1]
        level1 = slide.read_region(level=1, x=0, y=0, width=2221, height=1783)
    # Level 1 is the scanner's own (JPEG 2000, lossy) 2x reduction of level 0: measured mean
    # difference 3.9 from our 2x box reduction, 27.4 once shifted by 40 px: same tissue, aligned.
    halved = np.asarray(Image.fromarray(_png_reference(histo, "tcga-cr-7395-01a-01-ts1")).reduce(2))
    diff = np.abs(level1.astype(int) - halved[:1783, :2221].astype(int))
    assert diff.mean() < 6
    assert np.abs(level1.astype(int) - np.roll(halved, 40, axis=1)[:1783, :2221]).mean() > 3 * diff.mean()


def test_thumbnail_has_max_size_and_aspect_and_comes_from_a_small_level(histo: Path) -> None:
    path = histo / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as slide:
        level0_bytes = slide.levels[0].width * slide.levels[0].height * 3  # 47.5 MB
        tracemalloc.start()
        try:
            thumb = slide.thumbnail(max_size=1024)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        level1 = slide.read_region(level=1, x=0, y=0, width=2221, height=1783)
    assert thumb.shape == (822, 1024, 3)  # 3567 / 4443 * 1024 = 822.1
    # Built from level 1 (2221 px >= 1024): equal to level 1 box-reduced by 2, then Lanczos.
    expected = Image.fromarray(level1).reduce(2).resize((1024, 822), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(thumb, np.asarray(expected))
    # Level 0 was never decoded, and level 1 only a band at a time (measured peak ~8 MB).
    assert peak < level0_bytes / 4


def test_thumbnail_of_a_single_level_image_streams_bands(tmp_path: Path) -> None:
    image = _random_rgb(2160, 3072, seed=1)  # thumbnail 128 x 90 = level 0 / 24 exactly
    path = tmp_path / "single.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    with open_slide(path) as slide:
        tracemalloc.start()
        try:
            thumb = slide.thumbnail(max_size=128)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # 24 does not divide the 256-row bands: rows carried between bands must not shift the boxes.
    np.testing.assert_array_equal(thumb, np.asarray(Image.fromarray(image).reduce(24)))
    # 19.9 MB level, never held whole: measured peak 4.7 MB, about three 256-row bands.
    assert peak < image.nbytes / 3


def test_thumbnail_is_not_upscaled_past_level0(tmp_path: Path) -> None:
    image = _random_rgb(60, 80)
    tifffile.imwrite(tmp_path / "small.tif", image, photometric="rgb")
    with open_slide(tmp_path / "small.tif") as slide:
        np.testing.assert_array_equal(slide.thumbnail(max_size=500), image)


def test_region_at_the_edge_is_padded_white(histo: Path) -> None:
    reference = _png_reference(histo, "cmu-1-small-region")
    w = reference.shape[1]
    with open_slide(histo / "cmu-1-small-region.svs") as slide:
        corner = slide.read_region(level=0, x=w - 10, y=-5, width=30, height=20)
        outside = slide.read_region(level=0, x=w + 100, y=0, width=8, height=8)
    np.testing.assert_array_equal(corner[5:, :10], reference[:15, w - 10 :])
    assert (corner[:5] == 255).all() and (corner[:, 10:] == 255).all()
    assert outside.shape == (8, 8, 3) and (outside == 255).all()


# --- TIFF pyramids written here ------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ome-subifds", "reduced-pages"])
def test_pyramidal_tiff_reads_back_identically_at_every_level(tmp_path: Path, layout: str) -> None:
    base = _random_rgb(1000, 1300, seed=2)
    pyramid = [base, base[::2, ::2].copy(), base[::4, ::4].copy()]  # 1300, 650, 325 px wide
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=layout == "ome-subifds") as writer:
        options = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
        if layout == "ome-subifds":
            scale = {"PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.25}
            writer.write(base, subifds=2, metadata=scale, **options)
        else:
            writer.write(base, **options)
        for level in pyramid[1:]:
            writer.write(level, subfiletype=1, **options)
    with open_slide(path) as slide:
        assert [(lvl.width, lvl.height) for lvl in slide.levels] == [(1300, 1000), (650, 500), (325, 250)]
        assert [lvl.downsample for lvl in slide.levels] == [1.0, 2.0, 4.0]
        for index, expected in enumerate(pyramid):
            h, w = expected.shape[:2]
            np.testing.assert_array_equal(
                slide.read_region(level=index, x=0, y=0, width=w, height=h), expected
            )
        # Off-grid region across four tiles of level 1.
        region = slide.read_region(level=1, x=200, y=230, width=150, height=60)
        np.testing.assert_array_equal(region, pyramid[1][230:290, 200:350])
        assert slide.mpp == (0.25 if layout == "ome-subifds" else None)
        assert slide.meta["format"] == ("ome" if layout == "ome-subifds" else "tiff")


def test_stripped_tiff_reads_regions(tmp_path: Path) -> None:
    image = _random_rgb(300, 200, seed=3)
    tifffile.imwrite(tmp_path / "strips.tif", image, photometric="rgb", rowsperstrip=16, compression="lzw")
    with open_slide(tmp_path / "strips.tif") as slide:
        assert slide.meta["tile_size"] is None
        np.testing.assert_array_equal(
            slide.read_region(level=0, x=50, y=40, width=100, height=70), image[40:110, 50:150]
        )


def test_sixteen_bit_gray_keeps_the_high_byte(tmp_path: Path) -> None:
    gray = np.random.default_rng(4).integers(0, 65536, (64, 96), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "gray16.tif", gray, tile=(32, 32))
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    expected = np.repeat((gray >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    for name in ("gray16.tif", "gray16.png"):
        with open_slide(tmp_path / name) as slide:
            np.testing.assert_array_equal(slide.read_region(level=0, x=0, y=0, width=96, height=64), expected)


def test_rgba_png_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [100, 0, 200, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    with open_slide(tmp_path / "alpha.png") as slide:
        rgb = slide.read_region(level=0, x=0, y=0, width=3, height=1)[0].astype(int)
    assert rgb[0].tolist() == [10, 20, 30]  # opaque: unchanged
    assert rgb[1].tolist() == [255, 255, 255]  # transparent: white, like glass
    half = 128 / 255
    np.testing.assert_allclose(rgb[2], [c * half + 255 * (1 - half) for c in (100, 0, 200)], atol=1)


# --- plain images over Pillow's bomb limit --------------------------------------------------


def test_png_over_pillows_bomb_limit_opens(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    _write_bilevel_png(path, 13_400, 13_400)  # 179.6 Mpx, over Pillow's 2 x 89.5 Mpx error limit
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    with open_slide(path) as slide:
        assert (slide.levels[0].width, slide.levels[0].height) == (13_400, 13_400)
        assert (slide.read_region(level=0, x=13_390, y=5, width=5, height=5) == 0).all()
        thumb = slide.thumbnail(max_size=64)
    assert thumb.shape == (64, 64, 3) and (thumb == 0).all()
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # the global limit is restored


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [50_000, 70_000])  # 2.5 Gpx (Pillow warns), 4.9 Gpx (Pillow refuses)
def test_absurdly_large_plain_image_is_refused(tmp_path: Path, side: int) -> None:
    path = tmp_path / "absurd.png"
    _write_bilevel_png(path, side, side, rows=1)  # only the header is read
    with pytest.raises(InputError, match="pixels"):
        open_slide(path)


# --- bad input ----------------------------------------------------------------------------


def test_missing_directory_and_non_image_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(InputError, match="not a file"):
        open_slide(tmp_path)
    (tmp_path / "notes.txt").write_text("H&E, skin, 20x\n")
    with pytest.raises(InputError, match="not an image"):
        open_slide(tmp_path / "notes.txt")
    (tmp_path / "fake.tif").write_bytes(b"II*\0" + b"\xff" * 60)
    with pytest.raises(InputError, match="TIFF"):
        open_slide(tmp_path / "fake.tif")


def test_truncated_files_are_input_errors(histo: Path, tmp_path: Path) -> None:
    svs = (histo / "cmu-1-small-region.svs").read_bytes()
    (tmp_path / "half.svs").write_bytes(svs[: len(svs) // 2])  # Aperio: IFDs after the tiles
    with pytest.raises(InputError, match="corrupt or truncated"):
        open_slide(tmp_path / "half.svs")
    tifffile.imwrite(tmp_path / "whole.tif", _random_rgb(512, 512), tile=(128, 128), photometric="rgb")
    data = (tmp_path / "whole.tif").read_bytes()  # tifffile: IFD first, then tiles
    (tmp_path / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="truncated"):
        open_slide(tmp_path / "cut.tif")
    Image.fromarray(_random_rgb(64, 64)).save(tmp_path / "whole.png")
    png = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    with open_slide(tmp_path / "cut.png") as slide, pytest.raises(InputError, match="truncated"):
        slide.read_region(level=0, x=0, y=0, width=4, height=4)


def test_corrupt_tile_is_an_input_error_and_stays_local(histo: Path, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.svs"
    shutil.copyfile(histo / "cmu-1-small-region.svs", path)
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(5).integers(0, 256, count, dtype=np.uint8).tobytes())
    with open_slide(path) as slide:
        with pytest.raises(InputError, match="tile 0 of level 0 is corrupt"):
            slide.read_region(level=0, x=0, y=0, width=16, height=16)
        reference = _png_reference(histo, "cmu-1-small-region")
        np.testing.assert_array_equal(
            slide.read_region(level=0, x=500, y=500, width=16, height=16), reference[500:516, 500:516]
        )


def test_unsupported_compression_names_the_codec(histo: Path, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "jbig.tif"
    tifffile.imwrite(path, _random_rgb(64, 64), tile=(32, 32), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags["Compression"].overwrite(34661)  # JBIG: no decoder in tifffile
    with pytest.raises(InputError, match="JBIG compression is not supported"):
        open_slide(path)
    # An imagecodecs build without JPEG 2000 keeps a stub whose `available` is False.
    import imagecodecs

    monkeypatch.setattr(imagecodecs, "JPEG2K", SimpleNamespace(available=False))
    with pytest.raises(InputError, match="needs the JPEG2K codec"):
        open_slide(histo / "tcga-cr-7395-01a-01-ts1.svs")


def test_bad_read_arguments_and_closed_slide(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "small.tif", _random_rgb(32, 32), photometric="rgb")
    slide = open_slide(tmp_path / "small.tif")
    with pytest.raises(InputError, match="level must be in 0..0"):
        slide.read_region(level=1, x=0, y=0, width=4, height=4)
    with pytest.raises(InputError, match="at least 1x1"):
        slide.read_region(level=0, x=0, y=0, width=0, height=4)
    with pytest.raises(InputError, match="integer"):
        slide.read_region(level=0, x=1.5, y=0, width=4, height=4)
    with pytest.raises(InputError, match="max_size"):
        slide.thumbnail(max_size=0)
    with pytest.raises(InputError, match="downsample"):
        slide.best_level_for(-2)
    slide.close()
    with pytest.raises(ValueError, match="closed"):
        slide.read_region(level=0, x=0, y=0, width=4, height=4)


def _count_decodes(monkeypatch) -> list[int]:
    """Record the segment index of every tile the TIFF reader decodes."""
    from core.io import slide_readers as slide_module

    decoded: list[int] = []
    original = slide_module._TiffReader._decode

    def counting(self, level: int, index: int):
        decoded.append(index)
        return original(self, level, index)

    monkeypatch.setattr(slide_module._TiffReader, "_decode", counting)
    return decoded


def test_reads_decode_only_overlapping_tiles_and_reuse_the_cache(tmp_path: Path, monkeypatch) -> None:
    image = _random_rgb(512, 768, seed=6)  # 3 x 2 tiles of 256 px
    tifffile.imwrite(tmp_path / "tiles.tif", image, tile=(256, 256), photometric="rgb")
    decoded = _count_decodes(monkeypatch)
    tile_bytes = 256 * 256 * 3
    with open_slide(tmp_path / "tiles.tif", cache_bytes=2 * tile_bytes) as slide:
        slide.read_region(level=0, x=250, y=10, width=20, height=20)  # straddles tiles 0 and 1
        assert sorted(decoded) == [0, 1]
        slide.read_region(level=0, x=250, y=10, width=20, height=20)  # panning back: from the cache
        assert sorted(decoded) == [0, 1]
        slide.read_region(level=0, x=600, y=300, width=8, height=8)  # tile 5 evicts tile 0 (LRU)
        slide.read_region(level=0, x=0, y=0, width=8, height=8)
        assert decoded == [0, 1, 5, 0]
    decoded.clear()
    with open_slide(tmp_path / "tiles.tif", cache_bytes=0) as slide:
        for _ in range(2):
            slide.read_region(level=0, x=0, y=0, width=8, height=8)
        assert decoded == [0, 0]


def test_concurrent_reads_return_the_right_pixels(histo: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    reference = _png_reference(histo, "cmu-1-small-region")
    boxes = [(x, y) for x in range(0, 2000, 180) for y in range(0, 2700, 450)]
    with open_slide(histo / "cmu-1-small-region.svs", cache_bytes=0) as slide:

        def read(box: tuple[int, int]) -> bool:
            x, y = box
            region = slide.read_region(level=0, x=x, y=y, width=200, height=200)
            return np.array_equal(region, reference[y : y + 200, x : x + 200])

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert all(pool.map(read, boxes))
