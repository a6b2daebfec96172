"""ControlNet tab: layout and event wiring only (logic in ``reviewer_app.controlnet_handlers``)."""

from __future__ import annotations

import gradio as gr

from core.errors import InputError
from core.pipelines.label_condition import palette
from reviewer_app import controlnet_handlers as h
from reviewer_app.components import SliceImage
from reviewer_app.services import Services
from reviewer_app.wiring import connector

HELP = """Generate a CT slice from a **label map**. Open a CT with a segmentation in the **Viewer**, scroll to a
slice and press **Use the viewer's slice**, or start from a blank map. Edit it: paint with the class colours
(then **Use painted map**), erase an organ, grow or shrink a label (e.g. a lesion). Then **Generate**. The
result sits next to its condition; the model works on a small canvas (e.g. 64 x 64 px of 6 mm), shown enlarged.
Synthetic images: not for diagnosis."""


def _spec(services: Services, model: str | None):
    try:
        return h._model(services, model) if model else None
    except InputError:  # no model yet
        return None


def _colours(services: Services, model: str | None) -> list[str]:
    """Brush colours: the palette of the model's classes (black = free)."""
    spec = _spec(services, model)
    if spec is None:
        return ["#000000"]
    return ["#" + "".join(f"{c:02x}" for c in rgb) for rgb in palette(spec.classes)]


def _legend(services: Services, model: str | None) -> str:
    spec = _spec(services, model)
    if spec is None:
        return ""
    cells = [
        f"<span style='background:{c};padding:0 .6em;margin-right:.3em'></span>{n}"
        for c, n in zip(_colours(services, model), ("free", *spec.classes))
    ]
    return "<div style='line-height:1.8'>" + " &nbsp; ".join(cells) + "</div>"


def create_controlnet_tab(services: Services, viewer_state: gr.State) -> dict:
    c: dict = {"state": gr.State(h.ControlNetState())}
    models = list(services.controlnet_models())
    first = models[0] if models else None
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown(HELP)
            c["model"] = gr.Dropdown(
                models, value=first, label="Model", info="shipped and --models ControlNets"
            )
            with gr.Row():
                c["take"] = gr.Button("Use the viewer's slice", variant="secondary")
                c["blank"] = gr.Button("Blank map")
            c["map_info"] = gr.Markdown()
            with gr.Group():
                c["use_paint"] = gr.Button("Use painted map")
                c["edit_class"] = gr.Dropdown([], label="Class on the map")
                c["fill"] = gr.Radio(list(h.FILL_CHOICES), value="body", label="Erase to")
                c["erase"] = gr.Button("Erase class")
                c["grow_px"] = gr.Slider(-5, 5, value=1, step=1, label="Grow (+) / shrink (-) by pixels")
                c["grow"] = gr.Button("Grow / shrink class")
                c["undo"] = gr.Button("Undo edit")
            with gr.Accordion("Generation", open=True):
                c["steps"] = gr.Slider(10, 50, value=25, step=1, label="Steps")
                c["seed"] = gr.Number(0, precision=0, label="Seed")
                c["scale"] = gr.Slider(
                    0.0, 2.0, value=1.0, step=0.05, label="Conditioning scale (0 = base model alone)"
                )
                c["samples"] = gr.Slider(1, 4, value=1, step=1, label="Samples")
            c["generate"] = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):
            c["legend"] = gr.HTML(_legend(services, first))
            c["editor"] = gr.ImageEditor(label="Paint classes (black = free)", type="numpy", image_mode="RGB", sources=(),
                                         transforms=(), layers=False, fixed_canvas=True, canvas_size=(h.VIEW, h.VIEW), height=560,
                                         format="png", brush=gr.Brush(colors=_colours(services, first), color_mode="fixed", default_size=12),
                                         eraser=False, elem_id="sdx-cn-editor")  # fmt: skip
            with gr.Row():
                c["condition"] = SliceImage(
                    label="Condition (label map)",
                    format="png",
                    interactive=False,
                    height=420,
                    elem_id="sdx-cn-condition",
                )
                c["result"] = SliceImage(
                    label="Result", format="png", interactive=False, height=420, elem_id="sdx-cn-result"
                )
            c["samples_view"] = gr.Gallery(label="All samples", columns=4, height=280)
            c["provenance"] = gr.Markdown()
            c["files"] = gr.File(
                label="Outputs (condition, result in HU, preview, provenance.json)",
                file_count="multiple",
                interactive=False,
            )
            with gr.Accordion(
                "Training regimes compared (ControlNet on a barely trained vs a domain-trained base)",
                open=False,
            ):
                c["show_regimes"] = gr.Button("Show the comparison for this model")
                c["regime_grid"] = gr.Image(
                    label="condition | barely trained base | domain-trained base | real", interactive=False
                )
                c["regime_info"] = gr.Markdown()
    _wire(services, c, viewer_state)
    return c


def _wire(services: Services, c: dict, viewer_state: gr.State) -> None:
    st, m = c["state"], c["model"]
    connect = connector(c)
    connect(
        c["take"].click,
        lambda s, v, model: h.take_slice(services, s, v, model),
        [st, viewer_state, m],
        api_name="controlnet_take_slice",
    )
    connect(c["blank"].click, lambda s, model: h.blank(services, s, model), [st, m], api_visibility="private")
    connect(
        c["use_paint"].click,
        lambda s, e, model: h.from_painting(services, s, e, model),
        [st, c["editor"], m],
        api_visibility="private",
    )
    connect(
        c["erase"].click,
        lambda s, k, fill, model: h.erase(services, s, k, fill, model),
        [st, c["edit_class"], c["fill"], m],
        api_visibility="private",
    )
    connect(
        c["grow"].click,
        lambda s, k, px, model: h.grow(services, s, k, px, model),
        [st, c["edit_class"], c["grow_px"], m],
        api_visibility="private",
    )
    connect(c["undo"].click, lambda s: h.undo(services, s), [st], api_visibility="private")
    connect(
        c["show_regimes"].click,
        lambda s, model: h.regimes(services, s, model),
        [st, m],
        api_visibility="private",
    )
    m.change(lambda model: _legend(services, model), [m], [c["legend"]], api_visibility="private")
    connect(c["generate"].click,
            lambda s, model, n, seed, scale, k, progress: h.generate(services, s, model, n, seed, scale, k, progress),
            [st, m, c["steps"], c["seed"], c["scale"], c["samples"]], progress=True, api_visibility="private",
            concurrency_limit=1, concurrency_id="gpu", show_progress_on=[c["result"]])  # fmt: skip
