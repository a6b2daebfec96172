"""Gradio components tuned for medical images.

``SliceImage`` is ``gr.Image`` with its own encoder: lossless PNG at zlib level 1 with
no metadata chunks, written under a content hash with a neutral name (``view.png``).
Gradio's default (PIL level 6, plus a metadata chunk) took 50-140 ms per 512x512
RGB slice here, too slow for scrolling, and its file names can carry information we
must not leak in blinded studies.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData
from PIL import Image


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 (H, W) or (H, W, 3) array, no ancillary chunks."""
    if image.dtype != np.uint8:
        raise ValueError(f"display images must be uint8, got {image.dtype}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


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
