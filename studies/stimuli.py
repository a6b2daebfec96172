"""Stimulus files: one standardisation and one encoder for real and synthetic alike.

Every way a file could differ between the classes other than the image content is a
leak (READER_STUDIES.md §3), so both classes go through exactly the same steps:

* **2D images** (``kind="image2d"``): uint8, ``(H, W)`` grey or ``(H, W, 3)`` RGB. Grey is
  repeated to RGB. The image is centre-cropped to the aspect ratio of
  :attr:`StimulusSpec.image_size`, then resized to that size with Lanczos (skipped when
  it already has that size). Cropping, not letterboxing: padding would differ with the
  input's aspect ratio and show up as a border. Stored as the PNG that will be served.
* **CT volumes** (``kind="volume"``): HU, ``(z, y, x)``. Clipped to
  :attr:`StimulusSpec.hu_range` (scanners pad outside the field of view with -2048 or
  -3024, generators do not), the central ``n_slices`` kept (fewer raises: padding with
  air would leak), each slice centre-cropped to the in-plane aspect and resized
  bilinearly (no overshoot, so HU stay within range), rounded to int16, stored ``.npy``.
  The app windows and encodes slices with :func:`encode_png` when serving.

Files are named only by :func:`new_public_id`: random hex, never derived from source
names or truth. A source's own resolution still matters: an upsampled 256-px synthetic
next to a native 512-px real image differs in sharpness; :mod:`studies.audit` checks that.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import struct
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studies.models import KINDS, TRUTHS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COMPRESS_LEVEL = 6  # zlib level; fixed so file size depends on content only
PNG_CHUNKS = ("IHDR", "IDAT", "IEND")  # the only chunks encode_png writes
SUFFIX = {"image2d": ".png", "volume": ".npy"}


@dataclass(frozen=True)
class CaseInput:
    """One case as the app hands it over: already decoded, never a file name.

    Attributes:
        array: image2d: uint8 ``(H, W)`` or ``(H, W, 3)``; volume: HU ``(z, y, x)``, any
            real dtype (values are rounded to int16).
        truth: "real" or "synthetic".
        kind: "image2d" or "volume".
        strata: e.g. ``{"organ": "liver"}``; strings, for stratified analysis.
        provenance: JSON-serialisable origin (source file, generator, model version, seed,
            mask hash ...); owner-side only.
        training: shown in the training block, with feedback, excluded from analysis.
        catch: attention check ("obvious fake"), analysed separately.
    """

    array: np.ndarray
    truth: str
    kind: str
    strata: Mapping[str, str] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    training: bool = False
    catch: bool = False

    def __post_init__(self) -> None:
        if self.truth not in TRUTHS:
            raise ValueError(f"truth must be one of {TRUTHS}, got {self.truth!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.training and self.catch:
            raise ValueError("a case cannot be both a training case and a catch case")
        for key, value in self.strata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"strata must map str to str, got {key!r}: {value!r}")
        try:
            json.dumps(dict(self.provenance))
        except TypeError as err:
            raise ValueError(f"provenance must be JSON-serialisable: {err}") from None


@dataclass(frozen=True)
class StimulusSpec:
    """The one grid every stimulus of a study is put on.

    Attributes:
        image_size: ``(height, width)`` of 2D stimuli in pixels.
        volume_shape: ``(slices, height, width)`` of volume stimuli.
        hu_range: ``(low, high)`` HU clip for volumes.
    """

    image_size: tuple[int, int] = (512, 512)
    volume_shape: tuple[int, int, int] = (32, 256, 256)
    hu_range: tuple[int, int] = (-1024, 3071)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "volume_shape", tuple(int(v) for v in self.volume_shape))
        object.__setattr__(self, "hu_range", tuple(int(v) for v in self.hu_range))
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be (height, width) >= 8 px, got {self.image_size}")
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 1 or min(self.volume_shape[1:]) < 8:
            raise ValueError(f"volume_shape must be (slices >= 1, height >= 8, width >= 8), "
                             f"got {self.volume_shape}")
        lo, hi = self.hu_range
        if not -32768 <= lo < hi <= 32767:
            raise ValueError(f"hu_range must be increasing within int16, got {self.hu_range}")

    def to_json(self) -> dict:
        """Plain dict for the study's design JSON."""
        return {k: list(v) for k, v in asdict(self).items()}


def new_public_id() -> str:
    """A fresh opaque case id: 128 random bits as 32 hex characters.

    Deliberately not seeded: ids must be unguessable. Hex can never spell "real",
    "synth" or "fake", so the name audit never trips on chance.
    """
    return secrets.token_hex(16)


def _crop_box(h: int, w: int, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of the largest centred crop of an ``h x w`` image with aspect ``height:width``."""
    if h * width > w * height:  # too tall: keep full width
        new_h = max(1, round(w * height / width))
        top = (h - new_h) // 2
        return slice(top, top + new_h), slice(0, w)
    new_w = max(1, round(h * width / height))
    left = (w - new_w) // 2
    return slice(0, h), slice(left, left + new_w)


def standardize_image(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Put a 2D image on the study grid (see the module docstring).

    Args:
        array: uint8 ``(H, W)`` or ``(H, W, 3)``.
        size: ``(height, width)``.

    Returns:
        uint8 ``(height, width, 3)``.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"2D stimuli must be uint8 (window CT before), got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"2D stimuli must be (H, W) or (H, W, 3), got shape {array.shape}")
    height, width = size
    if array.shape[:2] == (height, width):
        return np.ascontiguousarray(array)
    rows, cols = _crop_box(*array.shape[:2], height, width)
    cropped = array[rows, cols]  # (h', w', 3)
    resized = Image.fromarray(np.ascontiguousarray(cropped), "RGB").resize(
        (width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def standardize_volume(array: np.ndarray, shape: tuple[int, int, int],
                       hu_range: tuple[int, int]) -> np.ndarray:
    """Put a CT volume on the study grid (see the module docstring).

    Args:
        array: HU ``(z, y, x)``.
        shape: ``(slices, height, width)``.
        hu_range: ``(low, high)`` HU clip.

    Returns:
        int16 ``shape``.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"volume stimuli must be (z, y, x), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"volume stimuli must hold real HU values, got dtype {array.dtype}")
    n_slices, height, width = shape
    if array.shape[0] < n_slices:
        raise ValueError(f"volume has {array.shape[0]} slices, the study needs {n_slices}; "
                         "choose fewer slices for the study or a longer crop")
    start = (array.shape[0] - n_slices) // 2
    hu = np.clip(array[start:start + n_slices].astype(np.float32), *hu_range)  # (n_slices, y, x)
    if hu.shape[1:] != (height, width):
        rows, cols = _crop_box(*hu.shape[1:], height, width)
        hu = hu[:, rows, cols]  # (n_slices, y', x')
        hu = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(s), "F").resize(
            (width, height), Image.Resampling.BILINEAR)) for s in hu])
    return np.rint(np.clip(hu, *hu_range)).astype(np.int16)


def encode_png(array: np.ndarray) -> bytes:
    """Encode an 8-bit image as a PNG with only IHDR, IDAT and IEND.

    Always 8-bit RGB (colour type 2), zlib level :data:`PNG_COMPRESS_LEVEL`, no
    metadata chunks (tEXt, iTXt, tIME, pHYs, gAMA, iCCP ...), so bit depth, colour type
    and chunk list never differ between cases.

    Args:
        array: uint8 ``(H, W)`` (grey, e.g. a windowed CT slice) or ``(H, W, 3)``.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"encode_png needs (H, W) or (H, W, 3), got shape {array.shape}")
    buffer = io.BytesIO()
    # A fresh Image carries no info dict, so Pillow writes no ancillary chunk.
    Image.fromarray(np.ascontiguousarray(array), "RGB").save(
        buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buffer.getvalue()


def png_chunks(data: bytes) -> list[tuple[str, bytes]]:
    """Parse a PNG into ``(type, payload)`` chunks, checking signature and CRCs.

    Args:
        data: PNG file bytes.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"not a PNG: first bytes {data[:8]!r}")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError(f"truncated PNG chunk header at byte {offset}")
        length, ctype = struct.unpack(">I4s", data[offset:offset + 8])
        payload = data[offset + 8:offset + 8 + length]
        crc_bytes = data[offset + 8 + length:offset + 12 + length]
        if len(payload) != length or len(crc_bytes) != 4:
            raise ValueError(f"truncated PNG chunk {ctype!r} at byte {offset}")
        if zlib.crc32(ctype + payload) != struct.unpack(">I", crc_bytes)[0]:
            raise ValueError(f"bad CRC in PNG chunk {ctype!r} at byte {offset}")
        chunks.append((ctype.decode("latin-1"), payload))
        offset += 12 + length
    return chunks


def png_header(data: bytes) -> dict[str, int]:
    """IHDR fields of a PNG: width, height, bit_depth, color_type, compression, filter, interlace."""
    ctype, payload = png_chunks(data)[0]
    if ctype != "IHDR":
        raise ValueError(f"PNG must start with IHDR, got {ctype}")
    names = ("width", "height", "bit_depth", "color_type", "compression", "filter", "interlace")
    return dict(zip(names, struct.unpack(">IIBBBBB", payload)))


def stimulus_path(media_dir: str | Path, public_id: str, kind: str) -> Path:
    """Where the stimulus of a case lives: ``media_dir/<public_id>.png|.npy``."""
    if kind not in SUFFIX:
        raise ValueError(f"kind must be one of {tuple(SUFFIX)}, got {kind!r}")
    return Path(media_dir) / f"{public_id}{SUFFIX[kind]}"


def write_stimulus(case: CaseInput, *, spec: StimulusSpec, media_dir: str | Path, public_id: str) -> Path:
    """Standardise a case and write it under its public id.

    Args:
        case: the decoded input.
        spec: the study grid.
        media_dir: the study's media directory (created if needed).
        public_id: from :func:`new_public_id`.

    Returns:
        The file written.
    """
    path = stimulus_path(media_dir, public_id, case.kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"stimulus {path} exists; public ids must be fresh")
    if case.kind == "image2d":
        path.write_bytes(encode_png(standardize_image(case.array, spec.image_size)))
    else:
        np.save(path, standardize_volume(case.array, spec.volume_shape, spec.hu_range), allow_pickle=False)
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a stored stimulus (kept in the case row to detect swapped files)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_image(path: str | Path) -> np.ndarray:
    """Decode a stored 2D stimulus to uint8 ``(H, W, 3)``."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_volume(path: str | Path) -> np.ndarray:
    """Load a stored volume stimulus, int16 HU ``(z, y, x)``."""
    return np.load(path, allow_pickle=False)
