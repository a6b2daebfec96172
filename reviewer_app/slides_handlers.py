"""Slides tab logic: a tissue layout (drawn, uploaded, derived from a slide) -> a tiled H&E slide.

Handlers take plain values and return ``(state, {output name: value})`` like the other tabs'.
The generated slide is written as a pyramidal OME-TIFF under the work folder; the tab shows
its thumbnail and reads full-resolution regions back through ``core.io.slide.open_slide``.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.tissue import (
    CLASS_COLOURS,
    TISSUE_CLASSES,
    class_fractions,
    example_layout,
    layout_to_rgb,
    read_layout,
)
from reviewer_app.services import Services
from reviewer_app.state import ViewerState

CANVAS = 512  # px, side of the drawing canvas
DRAW_CELLS = 128  # a drawing is kept as 128 x 128 cells, then stretched to the output size
BRUSH_COLOURS = ["#{:02x}{:02x}{:02x}".format(*c) for c in CLASS_COLOURS]
ZOOM = 512  # px, side of a full-resolution region
MAX_LAYOUT_SIDE = 4096  # px: a slide's layout is derived from the finest level no larger than this


@dataclass
class SlidesState:
    """One user's slide session.

    Attributes:
        layout: ``(rows, cols)`` uint8 tissue classes, or None. layout_source: how it was made.
        slide_path: the written OME-TIFF. thumb_shape: ``(h, w)`` of the shown thumbnail.
    """

    layout: np.ndarray | None = None
    layout_source: str = ""
    slide_path: str | None = None
    thumb_shape: tuple[int, int] = (0, 0)


def _canvas(layout: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(
        Image.fromarray(layout_to_rgb(layout)).resize((CANVAS, CANVAS), Image.Resampling.NEAREST)
    )


def _layout_views(state: SlidesState) -> dict:
    fr = class_fractions(state.layout)
    parts = ", ".join(f"{name} {100 * fr[name]:.0f}%" for name in TISSUE_CLASSES)
    return {
        "layout_view": _canvas(state.layout),
        "layout_info": f"Layout from {state.layout_source}: {state.layout.shape[1]} x {state.layout.shape[0]} cells; {parts}.",
    }


def start(services: Services, state: SlidesState) -> tuple[SlidesState, dict]:
    """The example layout in the editor and as the current layout (so Generate works at once)."""
    layout = example_layout((DRAW_CELLS, DRAW_CELLS), seed=0)
    state = replace(state, layout=layout, layout_source="the example (seed 0)")
    bg = _canvas(layout)
    return state, {"editor": {"background": bg, "layers": [], "composite": bg}, **_layout_views(state)}


def layout_from_editor(
    services: Services, state: SlidesState, editor: dict | None
) -> tuple[SlidesState, dict]:
    """Read the drawing: every pixel takes the nearest layout colour, then 128 x 128 cells by majority."""
    from core.tissue import layout_from_rgb

    if not editor or editor.get("composite") is None:
        raise InputError("nothing drawn: paint the tissue classes on the canvas with the brush colours")
    rgba = np.asarray(editor["composite"])
    if rgba.dtype != np.uint8:
        rgba = np.clip(rgba, 0, 255).astype(np.uint8)
    if rgba.ndim == 3 and rgba.shape[-1] == 4:
        rgba = rgba.copy()
        rgba[rgba[..., 3] == 0, :3] = 255  # transparent canvas = glass
        rgba = rgba[..., :3]
    layout = layout_from_rgb(rgba, (DRAW_CELLS, DRAW_CELLS), max_distance=90.0)
    state = replace(state, layout=layout, layout_source="your drawing")
    return state, _layout_views(state)


def layout_from_upload(services: Services, state: SlidesState, path: str | None) -> tuple[SlidesState, dict]:
    if not path:
        raise InputError("the upload is empty; choose a .npy of class ids or a PNG in the layout colours")
    layout = read_layout(path)
    state = replace(state, layout=layout, layout_source=f"the file {Path(path).name}")
    bg = _canvas(layout)
    return state, {"editor": {"background": bg, "layers": [], "composite": bg}, **_layout_views(state)}


def layout_from_viewer(
    services: Services, state: SlidesState, viewer: ViewerState
) -> tuple[SlidesState, dict]:
    """Derive the layout of the slide open in the Viewer (its finest level no larger than 4096 px)."""
    from core.tissue import layout_from_slide

    if viewer.key is None or viewer.kind != "slide":
        raise InputError(
            "open an H&E slide in the Viewer tab first (the demo's histology sample, or your own SVS/TIFF)"
        )
    slide = services.open(viewer.key)
    level = next(
        (i for i, lv in enumerate(slide.levels) if max(lv.width, lv.height) <= MAX_LAYOUT_SIDE),
        len(slide.levels) - 1,
    )
    lv = slide.levels[level]
    if max(lv.width, lv.height) > MAX_LAYOUT_SIDE:
        raise InputError(
            f"this slide has no level of at most {MAX_LAYOUT_SIDE} px ({lv.width} x {lv.height} is the smallest)"
        )
    layout = layout_from_slide(slide, level=level)
    state = replace(
        state,
        layout=layout,
        layout_source=f"{services.entry(viewer.key).label}, level {level} ({lv.width} x {lv.height})",
    )
    bg = _canvas(layout)
    return state, {"editor": {"background": bg, "layers": [], "composite": bg}, **_layout_views(state)}


def _progress_reporter(progress):
    t0 = {"denoise": None, "decode": None}

    def report(done: int, total: int, stage: str) -> None:
        if progress is None:
            return
        now = time.time()
        if t0[stage] is None:
            t0[stage] = now
        rate = done / max(now - t0[stage], 1e-6)
        left = (total - done) / rate if done else float("nan")
        eta = f", about {left / 60:.1f} min left" if np.isfinite(left) else ""
        what = "denoising (all windows, every step)" if stage == "denoise" else "decoding"
        progress((done, total), desc=f"{what}: {done}/{total} windows{eta}", unit="windows")

    return report


def generate(
    services: Services,
    state: SlidesState,
    model_name: str,
    width: float,
    height: float,
    tile: float,
    overlap: float,
    steps: float,
    seed: float,
    style: str | None,
    progress=None,
) -> tuple[SlidesState, dict]:
    """Generate the slide, write it (OME-TIFF, thumbnail, layout, provenance) and show the thumbnail."""
    if state.layout is None:
        raise InputError(
            "make a layout first: draw it and press 'Use the drawing', upload one, or take the viewer's slide"
        )
    models = services.slide_models()
    if not models:
        raise InputError(
            "no tiled H&E model found: train one with `python -m core.training.train_he_tiles` and pass --models DIR"
        )
    if model_name not in models:
        raise InputError(f"unknown model {model_name!r}; choose one of {list(models)}")
    pipe = services.slide_pipeline(models[model_name])
    out_dir = services.work_dir / "slides" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    out = pipe(
        state.layout,
        height=int(height),
        width=int(width),
        tile_size=int(tile),
        overlap=int(overlap),
        num_inference_steps=int(steps),
        seed=int(seed),
        style=style or None,
        output_dir=out_dir,
        progress=_progress_reporter(progress),
    )
    state = replace(state, slide_path=str(out.files["slide"]), thumb_shape=tuple(out.thumbnail.shape[:2]))
    prov = out.provenance
    text = (
        f"{int(width)} x {int(height)} px, style {prov['style']}, tile {int(tile)} / overlap {int(overlap)} px, "
        f"{int(steps)} DDIM steps, seed {int(seed)}: {prov['counts']['windows_per_step']} windows per step, "
        f"{prov['time_s']['total']:.0f} s. Click the thumbnail to see full-resolution regions. Written to `{out_dir}`."
    )
    return state, {
        "thumb": out.thumbnail,
        "zoom": None,
        "files": [str(p) for p in out.files.values()],
        "provenance": text,
        "zoom_info": "",
    }


def zoom(
    services: Services, state: SlidesState, col: float, row: float, level: int = 0
) -> tuple[SlidesState, dict]:
    """A 512 x 512 region of the written slide at ``level``, centred where the thumbnail was clicked."""
    from core.io.slide import open_slide

    if not state.slide_path:
        raise InputError("generate a slide first")
    with open_slide(state.slide_path) as slide:
        level = min(max(int(level), 0), len(slide.levels) - 1)
        lv0, lv = slide.levels[0], slide.levels[level]
        th, tw = state.thumb_shape
        cx, cy = col / tw * lv0.width / lv.downsample, row / th * lv0.height / lv.downsample
        region = slide.read_region(
            level=level, x=int(cx - ZOOM / 2), y=int(cy - ZOOM / 2), width=ZOOM, height=ZOOM
        )
    where = f"Level {level} region centred at ({cx * lv.downsample:.0f}, {cy * lv.downsample:.0f}) px of level 0 (white = outside)."
    return state, {"zoom": region, "zoom_info": where}


def provenance_of(state: SlidesState) -> dict:
    """The provenance JSON of the last slide (for tests and the API)."""
    if not state.slide_path:
        raise InputError("generate a slide first")
    return json.loads((Path(state.slide_path).parent / "provenance.json").read_text())
