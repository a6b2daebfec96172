"""Inpainting tab: layout and event wiring only (logic in ``reviewer_app.inpaint_handlers``)."""

from __future__ import annotations

import gradio as gr

from core.pipelines.ct_inpaint import SAMPLERS
from core.windowing import PRESETS
from reviewer_app import inpaint_handlers as h
from reviewer_app.components import SliceImage
from reviewer_app.services import Services
from reviewer_app.state import InpaintState
from reviewer_app.wiring import connector

HELP = """Open a CT in the **Viewer**, scroll to the slice, then **Use the viewer's slice**. Make a mask
(paint it, take an organ or its box plus a margin for a healthy negative, or click the preview to
place a lesion outline), choose what to **Paint** in it (a lesion, or healthy tissue for a negative),
then **Generate**. Voxels outside the mask stay bit-identical; several
samples give a per-pixel standard deviation (the uncertainty map)."""
MASK_MODES = ("Paint", "Organ", "Organ box + margin", "Lesion shape")
CONTENTS = [("lesion", "lesion"), ("healthy tissue", "tissue")]  # (label, value): the model's content classes


def create_inpaint_tab(services: Services, viewer_state: gr.State) -> dict:
    c: dict = {"state": gr.State(InpaintState())}
    models = list(services.inpaint_models())
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown(HELP)
            c["take"] = gr.Button("Use the viewer's slice", variant="secondary")
            c["slice_info"] = gr.Markdown()
            c["mode"] = gr.Radio(list(MASK_MODES), value="Paint", label="Mask from")
            with gr.Group():
                c["use_paint"] = gr.Button("Use painted mask")
                c["organ"] = gr.Dropdown([], label="Organ on this slice")
                c["margin"] = gr.Slider(0, 50, value=10, step=1, label="Box margin (mm)")
                c["use_organ"] = gr.Button("Use organ mask")
                names = list(services.shape_library())
                c["shape"] = gr.Dropdown(names, value=names[0], label="Lesion outline (then click the preview)")
                c["diameter"] = gr.Slider(5, 120, value=25, step=1, label="Lesion diameter (mm)")
                c["angle"] = gr.Slider(0, 359, value=0, step=1, label="Rotation (degrees)")
            c["preset"] = gr.Dropdown(list(PRESETS), value="Soft tissue", label="Display window")
            with gr.Accordion("Generation", open=True):
                c["model"] = gr.Dropdown(models, value=models[0] if models else None, label="Model",
                                         info="shipped and --models checkpoints")
                c["content"] = gr.Radio(CONTENTS, value="lesion", label="Paint",
                                        info="what goes in the mask; organ masks and boxes set healthy tissue, "
                                        "lesion outlines a lesion")
                c["sampler"] = gr.Radio(list(SAMPLERS), value="dpmsolver++", label="Sampler")
                c["steps"] = gr.Slider(10, 50, value=25, step=1, label="Steps")
                c["seed"] = gr.Number(0, precision=0, label="Seed")
                c["samples"] = gr.Slider(1, 8, value=4, step=1, label="Samples (for the uncertainty map)")
            c["generate"] = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):
            c["editor"] = gr.ImageEditor(label="Paint the region to repaint", type="numpy", image_mode="RGBA",
                                         sources=(), transforms=(), layers=False, fixed_canvas=True,
                                         canvas_size=(512, 512), height=560, format="png",
                                         brush=gr.Brush(colors=["#3ce63c"], color_mode="fixed", default_size=8),
                                         eraser=gr.Eraser(default_size=12), elem_id="sdx-editor")
            with gr.Row():
                c["preview"] = SliceImage(label="Mask on the slice (click to place a lesion outline)",
                                          format="png", interactive=False, height=420, elem_id="sdx-mask-preview")
                c["mask_view"] = SliceImage(label="Mask (white = repainted)", format="png", interactive=False,
                                            height=420, elem_id="sdx-mask")
            c["mask_info"] = gr.Markdown()
            with gr.Row():
                c["result"] = SliceImage(label="Result", format="png", interactive=False, height=420,
                                         elem_id="sdx-result")
                c["uncertainty"] = SliceImage(label="Uncertainty: per-pixel std over samples", format="png",
                                              interactive=False, height=420)
            c["before_after"] = gr.Radio(["after", "before"], value="after", label="Show")
            c["provenance"] = gr.Markdown()
            c["files"] = gr.File(label="Outputs (edited volume, mask, previews, provenance.json)",
                                 file_count="multiple", interactive=False)
    _wire(services, c, viewer_state)
    return c


def _wire(services: Services, c: dict, viewer_state: gr.State) -> None:
    st = c["state"]
    connect = connector(c)
    connect(c["take"].click, lambda s, v: h.take_slice(services, s, v), [st, viewer_state], api_name="take_slice")
    connect(c["use_paint"].click, lambda s, e: h.mask_from_editor(services, s, e), [st, c["editor"]],
            api_name="mask_from_editor")
    connect(c["use_organ"].click,
            lambda s, mode, organ, margin: h.mask_from_organ(services, s, organ, margin, mode == "Organ box + margin"),
            [st, c["mode"], c["organ"], c["margin"]], api_visibility="private")
    connect(c["preview"].select,
            lambda s, name, d, a, evt: h.place_shape(services, s, name, d, a, *evt.index),
            [st, c["shape"], c["diameter"], c["angle"]], select=True, api_visibility="private")
    connect(c["preset"].input, lambda s, p: h.set_preset(services, s, p), [st, c["preset"]], api_visibility="private")
    connect(c["before_after"].input, lambda s, w: h.toggle(services, s, w), [st, c["before_after"]],
            api_visibility="private")
    connect(c["generate"].click,
            lambda s, m, smp, n, seed, k, what, progress: h.generate(services, s, m, smp, n, seed, k, what, progress),
            [st, c["model"], c["sampler"], c["steps"], c["seed"], c["samples"], c["content"]], progress=True,
            api_visibility="private", concurrency_limit=1, concurrency_id="gpu",
            show_progress_on=[c["result"]])
