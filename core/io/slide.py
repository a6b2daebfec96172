"""Whole-slide and tile images: open once, then decode only the pixels that are shown.

A pathologist's viewer asks for a thumbnail first and then for regions of one pyramid
level. ``open_slide`` reads only the file's structure; pixels are decoded on demand, tile
by tile (or strip by strip), so a gigapixel level 0 is held in memory only when a caller
asks for a region that large::

    with open_slide("case.svs") as slide:
        overview = slide.thumbnail(max_size=1024)          # (h, w, 3) uint8
        level = slide.best_level_for(4.0)
        patch = slide.read_region(level=level, x=0, y=0, width=512, height=512)

Formats:

* TIFF family, through tifffile + imagecodecs: Aperio SVS (the tiled pages of the baseline
  series; the thumbnail, label and macro pages are not levels), OME-TIFF and other
  pyramidal TIFFs (SubIFDs or reduced-resolution pages: tifffile's ``series[0].levels``),
  and plain tiled or stripped TIFFs. Only the first plane of a level is read (the first
  focal plane of a Z-stack SVS, the first page of a multi-page OME level).
* Anything else Pillow opens (PNG, JPEG, ...): one level, decoded whole on the first read
  because these formats have no random access; refused above ``MAX_PIXELS``.

Pixel rule: every read returns ``(h, w, 3)`` uint8 RGB. Samples keep their top 8
significant bits (16-bit ``v`` becomes ``v >> 8``, 12-bit ``v >> 4``, as Pillow does for
16-bit RGB PNG); 1- to 7-bit samples are stretched to 0..255; float samples are read as
0..1 and clipped; gray is copied to R, G and B; MinIsWhite is inverted; palette indices go
through the colour map; alpha is composited over white (the colour of glass and of the
padding outside the image). ICC profiles are not applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from core.errors import InputError
from core.io.slide_readers import MAX_PIXELS, _pixels, open_plain, open_tiff

__all__ = ["MAX_PIXELS", "DEFAULT_CACHE_BYTES", "Slide", "SlideLevel", "open_slide"]

DEFAULT_CACHE_BYTES = 32 * 2**20  # decoded tiles an open slide keeps for panning (LRU)
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level.

    Attributes:
        width: level width in pixels.
        height: level height in pixels.
        downsample: level-0 pixels per pixel of this level (mean of the x and y ratios, as
            OpenSlide reports it).
    """

    width: int
    height: int
    downsample: float


class Slide:
    """An open slide or tile image; create it with :func:`open_slide`.

    Attributes:
        path: the file.
        levels: level 0 (full resolution) first, downsample increasing.
        mpp: microns per pixel at level 0 when the file says so (Aperio ``MPP``, OME
            ``PhysicalSizeX``, a TIFF or PNG/JPEG resolution finer than 50 µm), else None.
        magnification: objective power (Aperio ``AppMag``, OME ``NominalMagnification``), else None.
        meta: format facts (``format``, ``vendor``, ``compression``, ``tile_size``, ...). Free-text
            descriptions are left out: scanners write user and file names into them.

    Reads may come from several threads at once (one lock guards the file position and cache).
    """

    def __init__(
        self, *, path: Path, reader: Any, mpp: float | None, magnification: float | None, meta: dict
    ):
        self.path, self._reader, self.meta = path, reader, meta
        self.mpp, self.magnification = mpp, magnification
        (w0, h0), *_ = reader.sizes
        self.levels = tuple(
            SlideLevel(width=w, height=h, downsample=(w0 / w + h0 / h) / 2) for w, h in reader.sizes
        )

    def read_region(self, *, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels of one level; parts outside the image are white.

        Args:
            level: index into ``levels``.
            x: left edge in that level's pixel coordinates (may be negative).
            y: top edge in that level's pixel coordinates (may be negative).
            width: region width in pixels, >= 1.
            height: region height in pixels, >= 1.

        Returns:
            ``(height, width, 3)`` uint8 RGB.
        """
        reader = self._open_reader()
        level = self._level_index(level)
        lvl = self.levels[level]
        x, y = _pixels(x, "x"), _pixels(y, "y")
        width, height = _pixels(width, "width"), _pixels(height, "height")
        if width < 1 or height < 1:
            raise InputError(f"region size must be at least 1x1 pixels, got width={width}, height={height}")
        if width * height > MAX_PIXELS:
            raise InputError(
                f"region {width}x{height} is over {MAX_PIXELS} pixels; read a coarser level or tiles"
            )
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, lvl.width), min(y + height, lvl.height)
        if (x0, y0, x1, y1) == (x, y, x + width, y + height):
            return reader.read(level, x0, y0, x1, y1)
        out = np.full((height, width, 3), 255, np.uint8)
        if x0 < x1 and y0 < y1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = reader.read(level, x0, y0, x1, y1)
        return out

    def thumbnail(self, *, max_size: int) -> np.ndarray:
        """The whole image with its longer side ``max_size`` pixels (never larger than level 0).

        Read from the smallest level at least that large, box-reduced band by band while it
        is read (so memory stays near one band plus the result), then resized to the exact
        size with Pillow's Lanczos filter.

        Args:
            max_size: longer side of the result in pixels, >= 1.

        Returns:
            ``(h, w, 3)`` uint8 RGB with the aspect ratio of level 0.
        """
        reader = self._open_reader()
        max_size = _pixels(max_size, "max_size")
        if max_size < 1:
            raise InputError(f"max_size must be >= 1 pixel, got {max_size}")
        w0, h0 = self.levels[0].width, self.levels[0].height
        scale = min(1.0, max_size / max(w0, h0))
        tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        index = max(i for i, lvl in enumerate(self.levels) if i == 0 or lvl.width >= tw and lvl.height >= th)
        lvl = self.levels[index]
        image = reader.reduced(index, max(1, min(lvl.width // tw, lvl.height // th)))
        if image.shape[:2] == (th, tw):
            return image
        from PIL import Image

        return np.array(Image.fromarray(image).resize((tw, th), Image.Resampling.LANCZOS))

    def best_level_for(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (1 % tolerance).

        Args:
            downsample: wanted level-0 pixels per displayed pixel, > 0.
        """
        if isinstance(downsample, bool) or not isinstance(downsample, (int, float, np.number)):
            raise InputError(f"downsample must be a number, got {downsample!r}")
        if not (math.isfinite(downsample) and downsample > 0):
            raise InputError(f"downsample must be a finite number > 0, got {downsample}")
        # 1 %: a 2221-pixel level of a 4443-pixel slide is "downsample 2" to a viewer.
        return max(i for i, lvl in enumerate(self.levels) if i == 0 or lvl.downsample <= downsample * 1.01)

    def close(self) -> None:
        """Release the file; later reads raise ``ValueError``."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{lvl.width}x{lvl.height}" for lvl in self.levels)
        return f"Slide({str(self.path)!r}, levels=[{sizes}], mpp={self.mpp})"

    def _open_reader(self) -> Any:
        if self._reader is None:
            raise ValueError(f"slide {self.path} is closed")
        return self._reader

    def _level_index(self, level: int) -> int:
        level = _pixels(level, "level")
        if not 0 <= level < len(self.levels):
            raise InputError(f"level must be in 0..{len(self.levels) - 1} for {self.path.name}, got {level}")
        return level


def open_slide(path: str | Path, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Slide:
    """Open a whole-slide image (SVS, OME-TIFF, pyramidal TIFF) or a tile image (PNG, JPEG, TIFF).

    Reads the file's structure only; no pixels are decoded until a read.

    Args:
        path: the image file.
        cache_bytes: decoded TIFF tiles kept for panning, in bytes (0 disables the cache).

    Raises:
        InputError: missing file, not an image, corrupt or truncated file, unsupported
            compression (naming the missing codec) or pixel type, plain image > ``MAX_PIXELS``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"slide file not found: {path}; check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the path of one slide or image file")
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise InputError(f"cache_bytes must be an integer >= 0, got {cache_bytes!r}")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head in _TIFF_MAGIC:
        reader, mpp, magnification, meta = open_tiff(path, cache_bytes=cache_bytes)
    else:
        reader, mpp, magnification, meta = open_plain(path)
    return Slide(path=path, reader=reader, mpp=mpp, magnification=magnification, meta=meta)
