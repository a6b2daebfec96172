"""Tiled H&E generation with a tiny random model: size, determinism, fusion, streaming memory, TIFF output."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.tissue import TISSUE_CLASSES, example_layout


def make_tiny_he_model(folder: Path) -> Path:
    """A model folder in the shared layout with tiny random components (seconds to sample on a CPU)."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

    from core.pipelines.label_models import condition_embedding_class
    from core.training.train_he_tiles import PROMPT_LENGTH, STYLES, TOKENS

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=8,
        attention_head_dim=4,
    )
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_channels=len(TISSUE_CLASSES), conditioning_embedding_out_channels=(4, 8, 8)
    )
    for p in controlnet.parameters():  # make the control matter (from_unet starts with zero convs)
        torch.nn.init.normal_(p, std=0.02)
    embedding = condition_embedding_class()(tokens=list(TOKENS), dim=8, max_length=PROMPT_LENGTH)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=4,
        mid_block_add_attention=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    controlnet.save_pretrained(folder / "controlnet")
    embedding.save_pretrained(folder / "condition_embedding")
    vae.save_pretrained(folder / "vae")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear").save_pretrained(
        folder / "scheduler"
    )
    card = {
        "card_format": 1,
        "name": "tiny-he",
        "kind": "latent-diffusion",
        "domain": "he",
        "resolution": 64,
        "channels": 3,
        "intensity": {"rgb": "x / 127.5 - 1"},
        "latent": {"downsample": 4, "channels": 4, "scaling_factor": 1.0, "shift_factor": 0.0},
        "classes": list(TISSUE_CLASSES),
        "layout": {"cell_px": 32},
        "prompt": {"kind": "class-presence", "prefix": ["he"], "styles": list(STYLES)},
        "styles": {s.split(":", 1)[1]: {"mpp": 0.5} for s in STYLES},
    }
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    import torch

    from core.pipelines.histo_tiled import HistoTiledPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead (30x on a busy 2-core CPU)
    yield HistoTiledPipeline.from_pretrained(make_tiny_he_model(tmp_path_factory.mktemp("he") / "model"))
    torch.set_num_threads(threads)


def _run(pipe, layout, **kw):
    opts = {"height": 128, "width": 192, "tile_size": 64, "overlap": 32, "num_inference_steps": 2, "seed": 3}
    return pipe(layout, **{**opts, **kw})


def test_size_and_determinism_by_seed(pipe):
    layout = example_layout((8, 8), seed=1)
    a, b = _run(pipe, layout), _run(pipe, layout)
    assert a.image.shape == (128, 192, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, _run(pipe, layout, seed=4).image)
    # the same seed with another window batch changes nothing but the speed
    assert np.abs(a.image.astype(int) - _run(pipe, layout, window_batch=1).image).max() <= 1


def test_layout_changes_the_image_and_provenance_records_it(pipe):
    glass, dense = np.zeros((4, 6), np.uint8), np.full((4, 6), 3, np.uint8)
    out_glass, out_dense = _run(pipe, glass), _run(pipe, dense)
    assert not np.array_equal(out_glass.image, out_dense.image)
    prov = out_dense.provenance
    assert prov["seed"] == 3 and prov["size"] == [128, 192] and prov["synthetic"] is True
    assert prov["layout"]["fractions"]["nuclei-dense"] == 1.0
    assert prov["layout"]["grid_shape"] == [4, 6]  # 32 px per cell


def test_evaluation_count_and_windows_in_flight(pipe):
    calls = []
    out = _run(
        pipe,
        example_layout((4, 6)),
        height=128,
        width=192,
        window_batch=2,
        progress=lambda done, total, stage: calls.append((done, total, stage)),
    )
    # latent 32 x 48, windows of 16 overlapping by 8: 3 rows x 5 cols, 2 steps
    assert out.provenance["counts"]["evaluations"] == 3 * 5 * 2
    assert out.provenance["counts"]["windows_per_step"] == 15
    denoise = [d for d, t, s in calls if s == "denoise"]
    assert denoise[-1] == 30 and all(b - a <= 2 for a, b in zip([0] + denoise, denoise))
    # the merge buffer never holds more than one window row plus the next stride
    assert out.provenance["counts"]["max_held_rows"] <= 16 + 8
    naive = _run(pipe, example_layout((4, 6)), overlap=0)
    assert naive.provenance["counts"]["evaluations"] == 2 * 3 * 2
    assert naive.provenance["counts"]["evaluations_per_pixel_vs_naive"] == 1.0


def test_bad_inputs_raise_input_errors(pipe):
    layout = example_layout((4, 4))
    for kw, words in (
        ({"height": 100}, "multiple of 32"),
        ({"tile_size": 48}, "tile size"),
        ({"overlap": 64}, "overlap"),
        ({"num_inference_steps": 0}, "steps"),
        ({"style": "nope"}, "unknown style"),
        ({"seed": -1}, "seed"),
    ):
        with pytest.raises(InputError, match=words):
            _run(pipe, layout, **kw)
    with pytest.raises(InputError, match="values must be in 0..3"):
        _run(pipe, np.full((4, 4), 7, np.uint8))


def test_1024_slide_pyramid_reads_back(pipe, tmp_path):
    import tifffile

    from core.io.slide import open_slide

    out = pipe(
        example_layout((32, 32)),
        height=1024,
        width=1024,
        tile_size=256,
        overlap=64,
        num_inference_steps=1,
        seed=0,
        output_dir=tmp_path,
        compression="zlib",
    )
    assert set(out.files) == {"slide", "thumbnail", "layout", "provenance"} and out.image is None
    assert all(p.is_file() for p in out.files.values())
    with tifffile.TiffFile(out.files["slide"]) as tif:
        assert tif.is_ome
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(1024, 1024, 3), (512, 512, 3), (256, 256, 3)]
        assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 256
        full = levels[0].asarray()
    with open_slide(out.files["slide"]) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [(1024, 1024), (512, 512), (256, 256)]
        assert slide.mpp == pytest.approx(0.5)
        assert np.array_equal(
            slide.read_region(level=0, x=300, y=700, width=64, height=64), full[700:764, 300:364]
        )
    assert out.thumbnail.shape == (1024, 1024, 3) or max(out.thumbnail.shape[:2]) <= 1024
    prov = json.loads(out.files["provenance"].read_text())
    assert prov["output"]["levels"] == [[1024, 1024], [512, 512], [256, 256]]
    # lossless: the written pixels are those of an in-memory run with the same options
    again = pipe(
        example_layout((32, 32)),
        height=1024,
        width=1024,
        tile_size=256,
        overlap=64,
        num_inference_steps=1,
        seed=0,
    )
    assert np.array_equal(again.image, full)


def _numpy_peak(pipe, folder: Path, height: int) -> int:
    tracemalloc.start()
    pipe(
        example_layout((8, 8)),
        height=height,
        width=256,
        tile_size=128,
        overlap=32,
        num_inference_steps=1,
        seed=0,
        output_dir=folder,
        compression="zlib",
        window_batch=2,
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_numpy_memory_does_not_grow_with_image_height(pipe, tmp_path):
    """Bands stream into the TIFF: 8x the rows, the same numpy peak (the latent canvas is torch, 1 byte/px)."""
    small = _numpy_peak(pipe, tmp_path / "a", 512)
    large = _numpy_peak(pipe, tmp_path / "b", 4096)
    whole_image = 4096 * 256 * 3
    assert large < 1.25 * small, (small, large)
    assert large < whole_image  # never the whole uint8 image, let alone float
