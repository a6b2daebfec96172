"""The fast PNG encoder behind every displayed slice."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from reviewer_app.components import encode_png


def _chunks(data: bytes) -> list[str]:
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        out.append(data[i + 4 : i + 8].decode())
        i += 12 + n
    return out


@pytest.mark.parametrize("shape", [(64, 80), (64, 80, 3)])
def test_png_is_lossless_and_has_no_metadata(shape) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(image)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
    chunks = _chunks(data)
    assert chunks[0] == "IHDR" and chunks[-1] == "IEND" and set(chunks) == {"IHDR", "IDAT", "IEND"}


def test_png_rejects_non_display_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), np.float32))
