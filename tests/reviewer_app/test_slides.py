"""Slides tab handlers and ``synthdx slide``, with a tiny random H&E model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import InputError
from core.tissue import example_layout, layout_to_rgb
from reviewer_app import slides_handlers as h
from reviewer_app.cli import main
from reviewer_app.services import Services
from reviewer_app.state import ViewerState
from tests.core.test_histo_tiled import make_tiny_he_model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    make_tiny_he_model(root / "tiny-he")
    yield root
    torch.set_num_threads(threads)


@pytest.fixture
def services(models, tmp_path) -> Services:
    return Services(catalog=[], work_dir=tmp_path / "work", model_dirs=[models])


def test_drawn_layout_generate_and_zoom(services):
    state, out = h.start(services, h.SlidesState())
    assert state.layout.shape == (h.DRAW_CELLS, h.DRAW_CELLS) and out["editor"]["background"].shape == (512, 512, 3)
    drawing = np.full((512, 512, 4), 255, np.uint8)
    drawing[:, 256:, :3] = (40, 30, 120)  # right half nuclei-dense, painted with the brush colour
    drawing[:, :256, 3] = 0  # left half: untouched transparent canvas = glass
    state, out = h.layout_from_editor(services, state, {"composite": drawing, "background": None, "layers": []})
    assert (state.layout[:, :64] == 0).all() and (state.layout[:, 64:] == 3).all()
    assert "nuclei-dense 50%" in out["layout_info"]
    [name] = services.slide_models()
    state, out = h.generate(services, state, name, 256, 192, 128, 32, 2, 5, "tcga")
    tiff = Path(state.slide_path)
    assert tiff.is_file() and {Path(f).name for f in out["files"]} == {"slide.ome.tif", "thumbnail.png", "layout.png", "provenance.json"}
    assert out["thumb"].shape == (192, 256, 3)
    prov = h.provenance_of(state)
    assert prov["style"] == "tcga" and prov["seed"] == 5 and prov["size"] == [192, 256]
    state, z = h.zoom(services, state, col=128, row=96)
    assert z["zoom"].shape == (512, 512, 3)
    from core.io.slide import open_slide

    with open_slide(tiff) as slide:  # the zoom is level 0 of the written file, centred on the click
        np.testing.assert_array_equal(z["zoom"][256 - 96 : 256 + 96, 256 - 128 : 256 + 128],
                                      slide.read_region(level=0, x=0, y=0, width=256, height=192))


def test_upload_and_viewer_slide_layouts(services, tmp_path, shared_data):
    from PIL import Image

    from core.catalog import CatalogEntry

    layout = example_layout((20, 30), seed=4)
    Image.fromarray(layout_to_rgb(layout, scale=3)).save(tmp_path / "l.png")
    state, out = h.layout_from_upload(services, h.SlidesState(), str(tmp_path / "l.png"))
    np.testing.assert_array_equal(state.layout[::3, ::3], layout)  # one picture pixel per cell
    svc = Services(catalog=[CatalogEntry("cmu", "CMU-1", "slide", str(shared_data / "histo/cmu-1-small-region.svs"))],
                   work_dir=tmp_path, model_dirs=services.model_dirs)
    state, out = h.layout_from_viewer(svc, h.SlidesState(), ViewerState(key="cmu", kind="slide"))
    assert state.layout.shape == (93, 70) and "CMU-1" in out["layout_info"]
    assert 0.5 < (state.layout == 0).mean() < 0.8  # mostly glass around a strip of skin


def test_handler_errors_are_input_errors(services):
    with pytest.raises(InputError, match="make a layout first"):
        h.generate(services, h.SlidesState(), "x", 256, 256, 256, 64, 2, 0, None)
    state, _ = h.start(services, h.SlidesState())
    with pytest.raises(InputError, match="unknown model"):
        h.generate(services, state, "nope", 256, 256, 256, 64, 2, 0, None)
    with pytest.raises(InputError, match="multiple of 32"):
        h.generate(services, state, next(iter(services.slide_models())), 250, 256, 128, 32, 2, 0, None)
    with pytest.raises(InputError, match="open an H&E slide"):
        h.layout_from_viewer(services, state, ViewerState())
    with pytest.raises(InputError, match="generate a slide first"):
        h.zoom(services, h.SlidesState(), 1, 1)
    with pytest.raises(InputError, match="nothing drawn"):
        h.layout_from_editor(services, state, None)


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_writes_its_files(models, tmp_path, capsys):
    np.save(tmp_path / "layout.npy", example_layout((8, 8), seed=1))
    code, out, err = _cli(capsys, "slide", "--model", models / "tiny-he", "--layout", tmp_path / "layout.npy",
                          "--size", "256x128", "--tile", "128", "--overlap", "32", "--steps", "2", "--seed", "7",
                          "--compression", "zlib", "--out", tmp_path / "out")
    assert code == 0, err
    for name in ("slide.ome.tif", "thumbnail.png", "layout.png", "provenance.json"):
        assert (tmp_path / "out" / name).is_file() and str(tmp_path / "out" / name) in out
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["size"] == [128, 256] and prov["seed"] == 7 and prov["overlap_px"] == 32
    code, out, _ = _cli(capsys, "slide", "--model", models / "tiny-he", "--layout", tmp_path / "layout.npy",
                        "--size", "64x64", "--style", "list", "--out", tmp_path / "o2")
    assert code == 0 and "cmu-1" in out


@pytest.mark.parametrize("args, words", [
    (["--layout", "missing.png", "--size", "256x256"], "layout file not found"),
    (["--layout", "L", "--size", "256"], "WIDTHxHEIGHT"),
    (["--layout", "L", "--size", "250x256"], "multiple of 32"),
    (["--layout", "L", "--size", "256x256", "--overlap", "256"], "overlap"),
    (["--layout", "L", "--size", "256x256", "--region", "0,0,9,9"], "--region goes with --layout-from"),
    (["--layout-from", "nope.svs", "--size", "256x256"], "slide file not found"),
])
def test_cli_bad_input_is_one_line(models, tmp_path, capsys, args, words):
    np.save(tmp_path / "L.npy", example_layout((4, 4)))
    args = [str(tmp_path / "L.npy") if a == "L" else a for a in args]
    if "missing.png" in args:
        args[args.index("missing.png")] = str(tmp_path / "missing.png")
    code, out, err = _cli(capsys, "slide", "--model", models / "tiny-he", "--out", tmp_path / "o", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("synthdx: error:") and words in err
    code, _, err = _cli(capsys, "slide", "--model", tmp_path, "--layout", tmp_path / "L.npy", "--size", "64x64", "--out", tmp_path / "o")
    assert code == 2 and "not a label-conditioned model folder" in err
