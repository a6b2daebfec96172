"""Pixel readers behind ``core.io.slide.Slide``: TIFF-family pyramids and Pillow images.

Split from ``core.io.slide`` (the public API) to keep modules small. Each reader decodes
only what a read needs and converts every sample to ``(h, w, 3)`` uint8 by the pixel
rule documented in ``core.io.slide``.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.errors import InputError

MAX_PIXELS = 2_000_000_000  # plain images and single reads above this are refused (6 GB as RGB)
_VENDORS = {"svs": "aperio", "ndpi": "hamamatsu", "philips": "philips", "scn": "leica", "bif": "roche"}
_JPEG = {6, 7, 33007, 34892}  # TIFF compressions that tifffile decodes to RGB from YCbCr
_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
_TIFF_UM_PER_UNIT = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}  # ResolutionUnit inch, cm, mm, µm
_MAX_MPP = 50.0  # coarser is screen/print DPI (72 dpi = 353 µm/px), not a microscope resolution
_PIL_LIMIT_LOCK = threading.Lock()  # Pillow's bomb limit is a module global
Alpha = Literal["straight", "premultiplied"] | None


# --- TIFF family ------------------------------------------------------------------------


def open_tiff(path: Path, *, cache_bytes: int) -> tuple[Any, float | None, float | None, dict]:
    """(reader, mpp, magnification, meta) of a TIFF-family slide; see ``core.io.slide``."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many types on bad structure
        raise InputError(f"{path}: not a readable TIFF, corrupt or truncated ({exc!r})") from exc
    try:
        try:
            levels = tif.series[0].levels
            pages = [lvl.pages[0] for lvl in levels]
            pages = [p if isinstance(p, tifffile.TiffPage) else p.aspage() for p in pages]
            planes = math.prod(levels[0].shape) // math.prod(pages[0].shape)
        except Exception as exc:
            raise InputError(f"{path}: TIFF structure is corrupt or truncated ({exc!r})") from exc
        pyramid = _pyramid(pages)
        for page in pyramid:
            _check_page(path, page)
        page0 = pyramid[0]
        fmt = next((f for f in _VENDORS if getattr(tif, f"is_{f}")), "ome" if tif.is_ome else "tiff")
        mpp, magnification = _tiff_scale(tif, page0)
        meta = {
            "format": fmt,
            "vendor": _VENDORS.get(fmt),
            "compression": page0.compression.name,
            "photometric": page0.photometric.name,
            "dtype": str(page0.dtype),
            "tile_size": (page0.tilewidth, page0.tilelength) if page0.is_tiled else None,
            "planes": planes,  # > 1: focal planes / channels, of which plane 0 is read
            "skipped_pages": len(pages) - len(pyramid),  # levels whose aspect ratio does not fit
            "icc_profile": 34675 in page0.tags,
        }
        reader = _TiffReader(path=path, tif=tif, pages=pyramid, cache_bytes=cache_bytes)
    except BaseException:
        tif.close()
        raise
    return reader, mpp, magnification, meta


def _pyramid(pages: list) -> list:
    """Level 0 plus the pages that are smaller and downsampled equally in x and y (±1 pixel)."""
    w0, h0 = pages[0].imagewidth, pages[0].imagelength
    kept = [pages[0]]
    for page in pages[1:]:
        w, h = page.imagewidth, page.imagelength
        d = (w0 / w + h0 / h) / 2
        if w < kept[-1].imagewidth and abs(w * d - w0) <= d + 1 and abs(h * d - h0) <= d + 1:
            kept.append(page)
    return kept


def _check_page(path: Path, page: Any) -> None:
    """Refuse at open what would fail at every read: missing codec, pixel type, truncation."""
    import imagecodecs
    import tifffile

    name = page.compression.name
    if page.compression != 1:
        try:
            decompress = tifffile.TIFF.DECOMPRESSORS[page.compression]
        except KeyError as exc:
            raise InputError(
                f"{path}: {name} compression is not supported by tifffile/imagecodecs ({exc.args[0]}); "
                "convert the slide, e.g. `vips tiffsave in.svs out.tif --tile --pyramid --compression jpeg`"
            ) from exc
        # imagecodecs keeps a stub for a codec it was built without: jpeg2k_decode -> imagecodecs.JPEG2K
        codec_name = getattr(decompress, "__name__", "").removesuffix("_decode").upper()
        codec = getattr(imagecodecs, codec_name, None)
        if codec is not None and not getattr(codec, "available", True):
            raise InputError(
                f"{path}: {name} needs the {codec_name} codec, which this imagecodecs build lacks; "
                "install an imagecodecs wheel that includes it (`pip install -U imagecodecs`)"
            )
    photometric = int(page.photometric)
    if (
        photometric not in (0, 1, 2, 3, 6)
        or (photometric == 6 and page.compression not in _JPEG)
        or (photometric == 3 and page.colormap is None)
    ):
        raise InputError(f"{path}: {page.photometric.name} colour is not supported; convert the slide to RGB")
    if page.dtype is None or page.dtype.kind not in "buf" or page.imagedepth != 1:
        raise InputError(f"{path}: {page.dtype} samples, depth {page.imagedepth}: not supported; use 2D uint")
    size = page.parent.filehandle.size
    end = max((o + c for o, c in zip(page.dataoffsets, page.databytecounts)), default=0)
    if end > size:
        raise InputError(
            f"{path}: file is truncated ({size} bytes, image data runs to byte {end}); copy again"
        )


def _tiff_scale(tif: Any, page0: Any) -> tuple[float | None, float | None]:
    """(microns per pixel, objective magnification) from vendor metadata or TIFF resolution tags."""
    mpp = magnification = None
    if tif.is_svs:  # Aperio ImageDescription: "...|AppMag = 20|...|MPP = 0.4990|..."
        found = {k: float(v) for k, v in re.findall(r"\|\s*(MPP|AppMag)\s*=\s*([0-9.]+)", page0.description)}
        mpp, magnification = found.get("MPP"), found.get("AppMag")
    elif tif.is_ome:  # first <Pixels> (image 0) and <Objective>; namespaces differ between schema years
        import xml.etree.ElementTree as ET

        try:
            tree = list(ET.fromstring(tif.ome_metadata).iter())
            elements = {e.tag.rsplit("}", 1)[-1]: e for e in reversed(tree)}  # first of each tag wins
            pixels, objective = elements.get("Pixels", {}), elements.get("Objective", {})
            if pixels.get("PhysicalSizeX"):
                unit = _UM_PER_UNIT.get(pixels.get("PhysicalSizeXUnit", "µm"), math.nan)
                mpp = float(pixels.get("PhysicalSizeX")) * unit  # stated explicitly: no plausibility cap
                mpp = mpp if mpp > 0 and math.isfinite(mpp) else None
            if objective.get("NominalMagnification"):
                magnification = float(objective.get("NominalMagnification"))
        except (ET.ParseError, ValueError):
            pass  # broken OME-XML: pixels are still readable, scale unknown
    if mpp is None and int(page0.resolutionunit) in _TIFF_UM_PER_UNIT and page0.resolution[0] > 0:
        mpp = _plausible_mpp(_TIFF_UM_PER_UNIT[int(page0.resolutionunit)] / page0.resolution[0])
    return mpp, magnification


class _TiffReader:
    """Decodes the tiles (or strips) of one TIFF pyramid that overlap a region."""

    def __init__(self, *, path: Path, tif: Any, pages: list, cache_bytes: int) -> None:
        self._path, self._tif, self._pages = path, tif, pages
        self.sizes = [(p.imagewidth, p.imagelength) for p in pages]
        # Per level: (chunk height, chunk width, chunks across, chunks down); strips are chunks
        # as wide as the image.
        self._grids = []
        for p in pages:
            tiled = p.is_tiled
            ch, cw = (
                (p.tilelength, p.tilewidth) if tiled else (min(p.rowsperstrip, p.imagelength), p.imagewidth)
            )
            self._grids.append((ch, cw, -(-p.imagewidth // cw), -(-p.imagelength // ch)))
        self._convert = [_tiff_converter(p) for p in pages]
        self._lock = threading.Lock()  # one file position; the cache dict
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._cache_bytes, self._cached = cache_bytes, 0

    def read(self, level: int, x0: int, y0: int, x1: int, y1: int, *, cache: bool = True) -> np.ndarray:
        """``(y1 - y0, x1 - x0, 3)`` uint8 of an in-bounds box, decoding only overlapping chunks."""
        ch, cw, _, _ = self._grids[level]
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for row in range(y0 // ch, (y1 - 1) // ch + 1):
            for col in range(x0 // cw, (x1 - 1) // cw + 1):
                chunk = self._chunk(level, row, col, cache=cache)
                top, left = row * ch, col * cw
                ya, yb, xa, xb = max(y0, top), min(y1, top + ch), max(x0, left), min(x1, left + cw)
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = chunk[ya - top : yb - top, xa - left : xb - left]
        return out

    def reduced(self, level: int, factor: int) -> np.ndarray:
        """The whole level box-reduced by ``factor``, read one band of chunk rows at a time."""
        w, h = self.sizes[level]
        if factor == 1:
            return self.read(level, 0, 0, w, h, cache=False)
        ch = self._grids[level][0]
        rows = ch * -(-256 // ch)  # whole chunk rows, >= 256 image rows per band
        read = functools.partial(self.read, level, cache=False)
        return _stream_reduce(read, w, h, rows=rows, factor=factor)

    def close(self) -> None:
        self._tif.close()
        self._cache.clear()

    def _chunk(self, level: int, row: int, col: int, *, cache: bool) -> np.ndarray:
        """``(h, w, 3)`` uint8 chunk, cropped to the image."""
        key = (level, row, col)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        page = self._pages[level]
        ch, cw, across, down = self._grids[level]
        h, w = min(ch, page.imagelength - row * ch), min(cw, page.imagewidth - col * cw)
        n_planes = page.samplesperpixel if page.planarconfig == 2 else 1  # separate: a segment per sample
        planes = [self._decode(level, (s * down + row) * across + col) for s in range(n_planes)]
        if any(p is None for p in planes):
            rgb = np.full((h, w, 3), 255, np.uint8)  # sparse chunk: nothing scanned there
        else:
            rgb = self._convert[level](np.concatenate([p[:h, :w] for p in planes], axis=-1))
        if cache and rgb.nbytes <= self._cache_bytes:
            with self._lock:
                self._cache[key] = rgb
                self._cached += rgb.nbytes
                while self._cached > self._cache_bytes:
                    self._cached -= self._cache.popitem(last=False)[1].nbytes
        return rgb

    def _decode(self, level: int, index: int) -> np.ndarray | None:
        """One segment as ``(h, w, samples)``, or None when the file stores none."""
        page = self._pages[level]
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if count == 0:
            return None
        with self._lock:
            fh = self._tif.filehandle
            fh.seek(offset)
            data = fh.read(count)
        if len(data) < count:
            raise InputError(f"{self._path}: file is truncated in tile {index} of level {level}; copy again")
        try:
            decoded = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)[0]
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(f"{self._path}: tile {index} of level {level} is corrupt ({exc!r})") from exc
        return decoded[0]  # (depth 1, h, w, samples)


def _tiff_converter(page: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Raw ``(h, w, samples)`` of this page -> ``(h, w, 3)`` uint8 by the module's pixel rule."""
    if int(page.photometric) == 3:  # palette: 16-bit colour map, (3, entries)
        lut = (np.asarray(page.colormap) >> 8).astype(np.uint8).T
        return lambda raw: lut[raw[..., 0]]
    colour = 1 if page.samplesperpixel < 3 else 3
    extra = tuple(page.extrasamples)
    alpha: Alpha = None
    if page.samplesperpixel > colour and extra and int(extra[0]) in (1, 2):  # 1 associated, 2 unassociated
        alpha = "premultiplied" if int(extra[0]) == 1 else "straight"
    invert = int(page.photometric) == 0  # MinIsWhite
    return functools.partial(_to_rgb8, bits=page.bitspersample, alpha=alpha, invert=invert)


# --- Pillow images ------------------------------------------------------------------------


def open_plain(path: Path) -> tuple[Any, float | None, float | None, dict]:
    """(reader, mpp, magnification, meta) of a Pillow-readable image; see ``core.io.slide``."""
    image = _pil_open(path)
    w, h = image.size
    if w * h > MAX_PIXELS:
        image.close()
        raise InputError(f"{path}: {w}x{h} is over {MAX_PIXELS} pixels; save it as a tiled pyramidal TIFF")
    dpi = image.info.get("dpi")
    mpp = _plausible_mpp(25400.0 / float(dpi[0])) if dpi and float(dpi[0]) > 0 else None
    fmt = (image.format or "").lower()
    meta = {"format": fmt, "vendor": None, "compression": fmt, "mode": image.mode, "tile_size": None}
    return _PlainReader(path=path, image=image), mpp, None, meta


def _pil_open(path: Path) -> Any:
    """``Image.open`` with the decompression-bomb limit raised to ``MAX_PIXELS`` for this file.

    The limit guards against images nobody asked for; this file was asked for, and our own
    ``MAX_PIXELS`` check replaces it.
    """
    from PIL import Image, UnidentifiedImageError

    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
        try:
            return Image.open(path)
        except Image.DecompressionBombError as exc:
            raise InputError(f"{path}: image is far over {MAX_PIXELS} pixels ({exc}); tile it first") from exc
        except UnidentifiedImageError as exc:
            raise InputError(f"{path}: not an image we can read (SVS, TIFF, OME-TIFF, PNG, JPEG)") from exc
        except OSError as exc:
            raise InputError(f"{path}: image header is corrupt or truncated ({exc})") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = saved


class _PlainReader:
    """One-level image; Pillow decodes it whole on the first read (no random access in PNG/JPEG)."""

    def __init__(self, *, path: Path, image: Any) -> None:
        self._path, self._image, self._loaded = path, image, False
        self.sizes = [image.size]
        self._lock = threading.Lock()

    def read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return _pil_to_rgb(self._full().crop((x0, y0, x1, y1)))

    def reduced(self, level: int, factor: int) -> np.ndarray:
        w, h = self.sizes[0]
        if factor == 1:
            return self.read(0, 0, 0, w, h)
        return _stream_reduce(functools.partial(self.read, 0), w, h, rows=256, factor=factor)

    def close(self) -> None:
        self._image.close()

    def _full(self) -> Any:
        with self._lock:
            if not self._loaded:
                try:
                    self._image.load()
                except OSError as exc:
                    raise InputError(f"{self._path}: image data is corrupt or truncated ({exc})") from exc
                self._loaded = True
        return self._image


def _pil_to_rgb(image: Any) -> np.ndarray:
    """Pillow image -> ``(h, w, 3)`` uint8 by the module's pixel rule."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image)  # a writable copy, like every other read
    if mode in ("1", "L") or mode.startswith("I;16"):
        return _to_rgb8(np.asarray(image)[..., None], bits=1 if mode == "1" else 8 if mode == "L" else 16)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info):
        return _to_rgb8(np.asarray(image.convert("RGBA")), bits=8, alpha="straight")
    if mode in ("I", "F"):
        raise InputError(f"32-bit {mode!r} images are not supported; export as 8- or 16-bit")
    return np.array(image.convert("RGB"))  # P, CMYK, YCbCr, LAB, HSV: Pillow's own conversion


# --- shared pixel helpers -------------------------------------------------------------------


def _to_rgb8(raw: np.ndarray, *, bits: int, alpha: Alpha = None, invert: bool = False) -> np.ndarray:
    """``(h, w, samples)`` -> ``(h, w, 3)`` uint8: top 8 bits, gray to RGB, alpha over white."""
    if raw.dtype == np.bool_:
        a = raw.astype(np.uint8) * np.uint8(255)
    elif raw.dtype.kind == "u" and bits < 8:
        a = (raw.astype(np.uint16) * 255 // (2**bits - 1)).astype(np.uint8)
    elif raw.dtype.kind == "u":
        a = raw if raw.dtype == np.uint8 else np.minimum(raw >> (bits - 8), 255).astype(np.uint8)
    elif raw.dtype.kind == "f":
        a = (np.clip(np.nan_to_num(raw), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    else:
        raise InputError(f"{raw.dtype} samples are not supported; use unsigned integer or 0..1 float images")
    colour = 1 if a.shape[-1] < 3 else 3
    rgb = 255 - a[..., :colour] if invert else a[..., :colour]
    if colour == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    if alpha is None:
        return np.ascontiguousarray(rgb)
    opacity = a[..., colour : colour + 1].astype(np.uint32)
    weighted = rgb.astype(np.uint32) * (opacity if alpha == "straight" else 255)  # premultiplied is weighted
    return np.minimum((weighted + 255 * (255 - opacity) + 127) // 255, 255).astype(np.uint8)


def _stream_reduce(read: Callable[..., np.ndarray], width: int, height: int, *, rows: int, factor: int):
    """Box-reduce a ``width`` x ``height`` image by ``factor``, reading ``rows`` rows at a time.

    Bands are cut at multiples of ``factor`` so the result equals reducing the whole image at once.
    """
    from PIL import Image

    parts, carry = [], np.empty((0, width, 3), np.uint8)
    for top in range(0, height, rows):
        band = read(0, top, width, min(top + rows, height))
        band = np.concatenate([carry, band]) if len(carry) else band
        keep = band.shape[0] if top + rows >= height else band.shape[0] // factor * factor
        if keep:
            parts.append(np.asarray(Image.fromarray(band[:keep]).reduce(factor)))
        carry = band[keep:].copy()  # a view would keep the whole band alive
    return np.concatenate(parts)


def _plausible_mpp(mpp: float) -> float | None:
    return mpp if 0 < mpp < _MAX_MPP else None


def _pixels(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer number of pixels, got {value!r}")
    return int(value)
