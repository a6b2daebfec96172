"""Write an RGB image, band by band, as a pyramidal tiled OME-TIFF that slide viewers open.

``write_pyramid`` pulls row bands of the full-resolution image from an iterator (a generator
that is still producing them: the tiled H&E pipeline decodes band after band), so the
whole image is never in memory. Level 0 is written tile by tile as the bands arrive; each
band is also box-reduced 2x into a temporary raw file of level 1, which is written (and
reduced into level 2) after level 0, and so on. Memory stays near one band plus one row of
tiles at any image size; the temporary files hold a third of the output in all.

The file is an OME-TIFF (tifffile) with the reduced levels as SubIFDs of level 0 (the
OME-TIFF pyramid convention read by QuPath / Bio-Formats, OMERO, napari and
``core.io.slide.open_slide``), tiled 256 x 256 (or ``tile``), JPEG (quality 90) or lossless
(zlib/deflate) compressed, with the pixel size in the OME metadata (``PhysicalSizeX/Y`` in
µm) and as TIFF resolution tags.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import InputError

Compression = Literal["jpeg", "zlib", "none"]
_COMPRESSION = {"jpeg": "jpeg", "zlib": "zlib", "none": None}


@dataclass(frozen=True)
class PyramidInfo:
    """What ``write_pyramid`` wrote.

    Attributes:
        path: the OME-TIFF.
        levels: ``(width, height)`` of each level, full resolution first.
        tile: tile side in pixels. compression: as requested. mpp: µm per pixel or None.
    """

    path: Path
    levels: tuple[tuple[int, int], ...]
    tile: int
    compression: str
    mpp: float | None


def level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """Level sizes, halving (rounding up) until both sides fit in one tile."""
    sizes = [(width, height)]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append((-(-w // 2), -(-h // 2)))
    return sizes


def _reduce2(band: np.ndarray) -> np.ndarray:
    """2x2 box mean of an ``(h, w, 3)`` uint8 band with even ``h`` (odd widths repeat the last column)."""
    if band.shape[1] % 2:
        band = np.concatenate([band, band[:, -1:]], axis=1)
    b = band.astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


class _LevelSpool:
    """Rows of one reduced level, appended to a raw temporary file and read back in bands."""

    def __init__(self, folder: Path, index: int, width: int, height: int):
        self.path, self.width, self.height = folder / f"level{index}.raw", width, height
        self._fh = open(self.path, "wb")  # noqa: SIM115 - appended to across calls, closed in close_writing
        self._carry: np.ndarray | None = None  # an odd row waiting for its pair
        self.rows = 0

    def add_rows_from_finer(self, band: np.ndarray, *, last: bool) -> None:
        """Reduce rows of the finer level into this one (an odd final row is repeated)."""
        if self._carry is not None:
            band = np.concatenate([self._carry, band])
            self._carry = None
        if band.shape[0] % 2:
            if last:
                band = np.concatenate([band, band[-1:]])
            else:
                self._carry, band = band[-1:], band[:-1]
        if band.shape[0]:
            reduced = _reduce2(band)
            self._fh.write(np.ascontiguousarray(reduced).tobytes())
            self.rows += reduced.shape[0]

    def close_writing(self) -> None:
        self._fh.close()
        if self.rows != self.height:
            raise RuntimeError(f"level spool {self.path.name} has {self.rows} rows, expected {self.height}")

    def bands(self, rows: int) -> Iterator[np.ndarray]:
        row_bytes = self.width * 3
        with open(self.path, "rb") as fh:
            for y in range(0, self.height, rows):
                n = min(rows, self.height - y)
                yield np.fromfile(fh, np.uint8, count=n * row_bytes).reshape(n, self.width, 3)


def _tiles(
    bands: Iterable[np.ndarray], width: int, height: int, tile: int, spool: _LevelSpool | None, on_rows=None
) -> Iterator[np.ndarray]:
    """Row-major ``(tile, tile, 3)`` tiles of an image given as row bands; feeds ``spool`` on the way."""
    pending = np.zeros((0, width, 3), np.uint8)
    done = 0
    for band in bands:
        band = np.asarray(band)
        if band.dtype != np.uint8 or band.ndim != 3 or band.shape[1:] != (width, 3):
            raise ValueError(f"bands must be (rows, {width}, 3) uint8, got {band.dtype} {band.shape}")
        done += band.shape[0]
        if done > height:
            raise ValueError(f"the bands hold more than the declared {height} rows")
        if spool is not None:
            spool.add_rows_from_finer(band, last=done == height)
        if on_rows is not None:
            on_rows(band)
        pending = np.concatenate([pending, band]) if pending.shape[0] else band
        while pending.shape[0] >= tile or (done == height and pending.shape[0]):
            rows, pending = pending[:tile], pending[tile:]
            if rows.shape[0] < tile:  # the last, partial row of tiles: pad (tifffile crops on read)
                rows = np.concatenate([rows, np.zeros((tile - rows.shape[0], width, 3), np.uint8)])
            for x in range(0, width, tile):
                t = rows[:, x : x + tile]
                if t.shape[1] < tile:
                    t = np.concatenate([t, np.zeros((tile, tile - t.shape[1], 3), np.uint8)], axis=1)
                yield np.ascontiguousarray(t)
    if done != height:
        raise ValueError(f"the bands held {done} rows; the image was declared {height} rows high")


def write_pyramid(
    path: str | Path,
    bands: Iterable[np.ndarray],
    *,
    width: int,
    height: int,
    tile: int = 256,
    compression: Compression = "jpeg",
    quality: int = 90,
    mpp: float | None = None,
    name: str = "synthetic H&E (synthdx)",
    thumbnail_size: int = 1024,
) -> tuple[PyramidInfo, np.ndarray]:
    """Write row bands of an RGB image as a pyramidal tiled OME-TIFF.

    Args:
        path: output file (``.ome.tif``); its folder must exist.
        bands: ``(rows, width, 3)`` uint8 bands, top to bottom, ``height`` rows in all (any band heights).
        width: image width in pixels. height: image height in pixels.
        tile: TIFF tile side, a multiple of 16.
        compression: ``"jpeg"`` (lossy, ``quality``), ``"zlib"`` (lossless) or ``"none"``.
        mpp: microns per pixel of level 0 (written as OME PhysicalSize and TIFF resolution).
        name: OME image name.
        thumbnail_size: longer side of the returned thumbnail.

    Returns:
        ``(info, thumbnail)``: the levels written and an ``(h, w, 3)`` uint8 overview.
    """
    import tifffile

    if width < 1 or height < 1:
        raise InputError(f"image size must be at least 1x1, got {width}x{height}")
    if tile < 16 or tile % 16:
        raise InputError(f"tile must be a multiple of 16 pixels, got {tile}")
    if compression not in _COMPRESSION:
        raise InputError(f"compression must be one of {list(_COMPRESSION)}, got {compression!r}")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise InputError(f"mpp must be a positive number of microns per pixel, got {mpp}")
    path = Path(path)
    sizes = level_sizes(width, height, tile)
    # the coarsest level still at least thumbnail_size (kept in memory: at most 4x the thumbnail)
    thumb_level = max([i for i, (w, h) in enumerate(sizes) if max(w, h) >= thumbnail_size] or [0])
    comp = _COMPRESSION[compression]
    options = {"tile": (tile, tile), "photometric": "rgb", "compression": comp, "dtype": np.uint8}
    if comp == "jpeg":
        options["compressionargs"] = {"level": int(quality)}
    meta = {"axes": "YXS", "Name": name}
    if mpp is not None:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    thumb_rows: list[np.ndarray] = []
    with (
        tempfile.TemporaryDirectory(prefix="synthdx-pyramid-") as tmp,
        tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31, ome=True) as tif,
    ):
        spools = [_LevelSpool(Path(tmp), i, w, h) for i, (w, h) in enumerate(sizes) if i > 0]

        def keep_thumb(level: int):
            return (lambda band: thumb_rows.append(band)) if level == thumb_level else None

        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"} if mpp else {}
        tif.write(
            _tiles(bands, width, height, tile, spools[0] if spools else None, keep_thumb(0)),
            shape=(height, width, 3),
            subifds=len(spools),
            metadata=meta,
            software="synthdx",
            **res,
            **options,
        )
        for i, spool in enumerate(spools, start=1):
            spool.close_writing()
            nxt = spools[i] if i < len(spools) else None
            res = {"resolution": (1e4 / (mpp * 2**i),) * 2, "resolutionunit": "CENTIMETER"} if mpp else {}
            tif.write(
                _tiles(spool.bands(tile), spool.width, spool.height, tile, nxt, keep_thumb(i)),
                shape=(spool.height, spool.width, 3),
                subfiletype=1,
                metadata=None,
                **res,
                **options,
            )
    thumb = np.concatenate(thumb_rows)
    if max(thumb.shape[:2]) > thumbnail_size:
        from PIL import Image

        scale = thumbnail_size / max(thumb.shape[:2])
        size = (max(1, round(thumb.shape[1] * scale)), max(1, round(thumb.shape[0] * scale)))
        thumb = np.asarray(Image.fromarray(thumb).resize(size, Image.Resampling.LANCZOS))
    return PyramidInfo(path, tuple(sizes), tile, compression, mpp), thumb
