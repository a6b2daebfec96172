"""Slides tab: layout and event wiring only (logic in ``reviewer_app.slides_handlers``)."""

from __future__ import annotations

import gradio as gr

from core.tissue import TISSUE_CLASSES
from reviewer_app import slides_handlers as h
from reviewer_app.components import SliceImage
from reviewer_app.services import Services
from reviewer_app.wiring import connector

HELP = """Draw a **tissue layout** (white glass, pink eosinophilic tissue, violet cellular, dark blue
nuclei-dense), upload one, or take the slide open in the **Viewer**; choose the size and press
**Generate**. Overlapping windows are fused at every denoising step (no stitched tiles); the result is
a pyramidal OME-TIFF. A 1024 x 1024 slide takes about a minute on a CPU, 4096 x 4096 minutes."""
LEGEND = " · ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in zip(TISSUE_CLASSES, h.BRUSH_COLOURS))


def create_slides_tab(services: Services, viewer_state: gr.State) -> dict:
    state, first = h.start(services, h.SlidesState())  # the example layout, so Generate works at once
    c: dict = {"state": gr.State(state)}
    models = list(services.slide_models())
    styles = _styles(services, models)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown(HELP)
            gr.Markdown(LEGEND)
            c["use_drawing"] = gr.Button("Use the drawing")
            c["upload"] = gr.File(
                label="Upload a layout (.png in the layout colours, or .npy of class ids)",
                file_types=[".png", ".npy"],
                type="filepath",
            )
            c["from_viewer"] = gr.Button("Layout of the viewer's slide")
            c["layout_info"] = gr.Markdown(first["layout_info"])
            with gr.Accordion("Generation", open=True):
                c["model"] = gr.Dropdown(models, value=models[0] if models else None, label="Model")
                c["style"] = gr.Dropdown(styles, value=styles[0] if styles else None, label="Stain style")
                with gr.Row():
                    c["width"] = gr.Number(1024, precision=0, label="Width (px)", minimum=32, step=32)
                    c["height"] = gr.Number(1024, precision=0, label="Height (px)", minimum=32, step=32)
                c["tile"] = gr.Slider(128, 512, value=256, step=32, label="Tile (px)")
                c["overlap"] = gr.Slider(0, 192, value=64, step=16, label="Overlap (px; 0 = naive tiling)")
                c["steps"] = gr.Slider(5, 50, value=20, step=1, label="Steps")
                c["seed"] = gr.Number(0, precision=0, label="Seed")
            c["generate"] = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):
            with gr.Row():
                c["editor"] = gr.ImageEditor(
                    label="Tissue layout (paint with the class colours)",
                    type="numpy",
                    image_mode="RGBA",
                    sources=(),
                    transforms=(),
                    layers=False,
                    fixed_canvas=True,
                    canvas_size=(h.CANVAS, h.CANVAS),
                    height=560,
                    format="png",
                    brush=gr.Brush(colors=h.BRUSH_COLOURS, color_mode="fixed", default_size=24),
                    elem_id="sdx-slide-editor",
                    value=first["editor"],
                )
                c["layout_view"] = SliceImage(
                    first["layout_view"], label="Layout used", format="png", interactive=False, height=420
                )
            with gr.Row():
                c["thumb"] = SliceImage(
                    label="Result (click to zoom to full resolution)",
                    format="png",
                    interactive=False,
                    height=560,
                    elem_id="sdx-slide-thumb",
                )
                with gr.Column():
                    c["zoom_level"] = gr.Radio(
                        [0, 1, 2], value=0, label="Pyramid level of the zoom (0 = full resolution)"
                    )
                    c["zoom"] = SliceImage(
                        label="Region (512 x 512 px)", format="png", interactive=False, height=512
                    )
                    c["zoom_info"] = gr.Markdown()
            c["provenance"] = gr.Markdown()
            c["files"] = gr.File(
                label="Outputs (slide.ome.tif, thumbnail, layout, provenance.json)",
                file_count="multiple",
                interactive=False,
            )
    _wire(services, c, viewer_state)
    return c


def _styles(services: Services, models: list[str]) -> list[str]:
    if not models:
        return []
    import json

    card = json.loads((services.slide_models()[models[0]] / "model_card.json").read_text())
    return list(card.get("styles", {}))


def _wire(services: Services, c: dict, viewer_state: gr.State) -> None:
    st = c["state"]
    connect = connector(c)
    connect(
        c["use_drawing"].click,
        lambda s, e: h.layout_from_editor(services, s, e),
        [st, c["editor"]],
        api_name="slide_layout_from_drawing",
    )
    connect(
        c["upload"].upload,
        lambda s, f: h.layout_from_upload(services, s, f),
        [st, c["upload"]],
        api_visibility="private",
    )
    connect(
        c["from_viewer"].click,
        lambda s, v: h.layout_from_viewer(services, s, v),
        [st, viewer_state],
        api_visibility="private",
    )
    connect(
        c["generate"].click,
        lambda s, m, w, hh, t, o, n, seed, style, progress: h.generate(
            services, s, m, w, hh, t, o, n, seed, style, progress
        ),
        [st, c["model"], c["width"], c["height"], c["tile"], c["overlap"], c["steps"], c["seed"], c["style"]],
        progress=True,
        api_name="generate_slide",
        concurrency_limit=1,
        concurrency_id="gpu",
        show_progress_on=[c["thumb"]],
    )
    connect(
        c["thumb"].select,
        lambda s, lv, evt: h.zoom(services, s, *evt.index, level=lv),
        [st, c["zoom_level"]],
        select=True,
        api_visibility="private",
    )
