"""Stimulus standardisation and PNG encoding: nothing but content may differ between cases."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from studies.stimuli import (PNG_CHUNKS, CaseInput, StimulusSpec, encode_png, load_image, load_volume,
                             new_public_id, png_chunks, png_header, standardize_image, standardize_volume,
                             write_stimulus)


def _he_region(shared_data, top: int, left: int, size: tuple[int, int]) -> np.ndarray:
    with Image.open(shared_data / "histo" / "cmu-1-small-region.png") as img:
        return np.asarray(img.convert("RGB").crop((left, top, left + size[1], top + size[0])))


def _ct(shared_data, patient: str = "STS_002") -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    img = nib.load(shared_data / "ct" / "ibsi_sts" / patient / "CT_image.nii.gz")
    return np.asarray(img.dataobj).transpose(2, 1, 0)  # NIfTI (x, y, z) -> (z, y, x)


def test_png_has_only_image_chunks_and_is_8bit_rgb():
    grey = np.arange(64 * 48, dtype=np.uint32).reshape(64, 48).astype(np.uint8)
    for array in (grey, np.stack([grey, 255 - grey, grey // 2], axis=2)):
        data = encode_png(array)
        types = [t for t, _ in png_chunks(data)]
        assert types[0] == "IHDR" and types[-1] == "IEND" and set(types) == set(PNG_CHUNKS)
        assert png_header(data) == {"width": 48, "height": 64, "bit_depth": 8, "color_type": 2,
                                    "compression": 0, "filter": 0, "interlace": 0}
        decoded = np.asarray(Image.open(io.BytesIO(data)))
        assert decoded.shape == (64, 48, 3)
        assert np.array_equal(decoded[..., 0], grey)  # lossless


def test_metadata_of_a_source_png_does_not_survive(tmp_path):
    # A source PNG with text, time and resolution chunks: decoding to an array and
    # re-encoding must drop all of them.
    info = PngImagePlugin.PngInfo()
    info.add_text("Source", "/archive/patient_0001_synthetic.png")
    src = tmp_path / "src.png"
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(src, pnginfo=info, dpi=(300, 300))
    assert {"tEXt", "pHYs"} <= {t for t, _ in png_chunks(src.read_bytes())}
    data = encode_png(np.asarray(Image.open(src)))
    assert {t for t, _ in png_chunks(data)} == set(PNG_CHUNKS)
    assert b"archive" not in data and b"synthetic" not in data


def test_png_chunk_parser_checks_crc():
    data = bytearray(encode_png(np.zeros((8, 8), np.uint8)))
    data[20] ^= 0xFF  # inside IHDR
    with pytest.raises(ValueError, match="CRC"):
        png_chunks(bytes(data))
    with pytest.raises(ValueError, match="not a PNG"):
        png_chunks(b"GIF89a")


def test_real_and_synthetic_of_different_sizes_serve_identically(shared_data, tmp_path):
    spec = StimulusSpec(image_size=(128, 128))
    real = CaseInput(array=_he_region(shared_data, 400, 300, (300, 420)), truth="real", kind="image2d")
    # A "synthetic" image produced at a lower, square resolution, in grey.
    small = _he_region(shared_data, 1200, 900, (96, 96)).mean(axis=2).astype(np.uint8)
    synthetic = CaseInput(array=small, truth="synthetic", kind="image2d")
    files = [write_stimulus(c, spec=spec, media_dir=tmp_path, public_id=new_public_id())
             for c in (real, synthetic)]
    headers = [png_header(f.read_bytes()) for f in files]
    chunk_lists = [[t for t, _ in png_chunks(f.read_bytes())] for f in files]
    assert headers[0] == headers[1] and headers[0]["width"] == headers[0]["height"] == 128
    assert {t for c in chunk_lists for t in c} == set(PNG_CHUNKS)
    assert all(re.fullmatch(r"[0-9a-f]{32}\.png", f.name) for f in files)
    assert load_image(files[1]).shape == (128, 128, 3)


def test_image_is_centre_cropped_not_letterboxed():
    # 40 x 120 image: columns 0-39 and 80-119 white, the centre black. Cropping to a
    # square keeps only the black centre; letterboxing would add bars.
    img = np.full((40, 120), 255, np.uint8)
    img[:, 40:80] = 0
    out = standardize_image(img, (20, 20))
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out.max() <= 5
    assert np.array_equal(standardize_image(np.asarray(img[:, 40:80]), (40, 40))[..., 0], img[:, 40:80])
    with pytest.raises(ValueError, match="uint8"):
        standardize_image(img.astype(np.float32), (20, 20))


def test_volume_standardisation_on_real_ct(shared_data, tmp_path):
    hu = _ct(shared_data)  # (48, 143, 161) float32
    hu[:, :3, :] = -3024  # scanner padding outside the field of view
    hu[15], hu[16], hu[31], hu[32] = 900, 500, -500, 900  # marks: 16..31 are the central 16 of 48
    spec = StimulusSpec(volume_shape=(16, 64, 64))
    out = standardize_volume(hu, spec.volume_shape, spec.hu_range)
    assert out.shape == (16, 64, 64) and out.dtype == np.int16
    assert out.min() >= -1024 and out.max() <= 3071
    assert (out[0] == 500).all() and (out[15] == -500).all() and not (out[1:15] == 900).all(axis=(1, 2)).any()
    path = write_stimulus(CaseInput(array=hu, truth="real", kind="volume"), spec=spec, media_dir=tmp_path,
                          public_id=new_public_id())
    assert path.suffix == ".npy" and np.array_equal(load_volume(path), out)
    with pytest.raises(ValueError, match="48 slices"):
        standardize_volume(hu, (64, 64, 64), spec.hu_range)


def test_public_ids_are_fresh_hex_and_files_are_never_overwritten(tmp_path):
    ids = {new_public_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    case = CaseInput(array=np.zeros((10, 10), np.uint8), truth="real", kind="image2d")
    pid = new_public_id()
    write_stimulus(case, spec=StimulusSpec(image_size=(16, 16)), media_dir=tmp_path, public_id=pid)
    with pytest.raises(FileExistsError):
        write_stimulus(case, spec=StimulusSpec(image_size=(16, 16)), media_dir=tmp_path, public_id=pid)


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="'fake'"):
        CaseInput(array=np.zeros((4, 4), np.uint8), truth="fake", kind="image2d")
    with pytest.raises(ValueError, match="JSON"):
        CaseInput(array=np.zeros((4, 4), np.uint8), truth="real", kind="image2d", provenance={"x": object()})
    with pytest.raises(ValueError, match="image_size"):
        StimulusSpec(image_size=(4, 4))


def test_png_header_reads_ihdr_fields():
    ihdr = struct.pack(">IIBBBBB", 7, 5, 16, 0, 0, 0, 0)
    body = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + body + struct.pack(">I", zlib.crc32(body))
    assert png_header(data)["bit_depth"] == 16 and png_header(data)["width"] == 7
