"""Gradio components tuned for medical images.

``SliceImage`` is ``gr.Image`` with its own encoder: lossless PNG (libpng via
imagecodecs, zlib level 1, SUB filter, the settings OpenCV uses for speed) with only
IHDR/IDAT/IEND chunks, written under a content hash with a neutral name (``view.png``).
Measured on a 512x512 CT slice: grey 3.3 ms vs 9.8 ms for PIL at level 1, RGB 9 ms vs
20 ms; Gradio's default (PIL level 6 plus a metadata chunk) took 50-140 ms for RGB.
Gradio's own file names can also carry information we must not leak in blinded studies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr
import imagecodecs
import numpy as np
from gradio.data_classes import ImageData

_RLE, _SUB = 3, 16  # zlib strategy Z_RLE, PNG filter SUB (imagecodecs.PNG.STRATEGY / FILTER)


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 (H, W) or (H, W, 3) array, no ancillary chunks."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"display images must be uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    # RLE suits grey slices; for RGB overlays the default strategy is as fast and 40% smaller.
    strategy = _RLE if image.ndim == 2 else 0
    return imagecodecs.png_encode(np.ascontiguousarray(image), level=1, strategy=strategy, filter=_SUB)


class SliceImage(gr.Image):
    """An image output that accepts uint8 numpy arrays and serves fast, neutral PNGs."""

    def get_block_name(self) -> str:
        return "image"  # reuse gr.Image's frontend

    def postprocess(self, value):  # type: ignore[override]
        if value is None or not isinstance(value, np.ndarray):
            return super().postprocess(value)
        data = encode_png(value)
        folder = Path(self.GRADIO_CACHE) / hashlib.sha256(data).hexdigest()[:40]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "view.png"
        if not path.exists():
            path.write_bytes(data)
        return ImageData(path=str(path), orig_name="view.png")
