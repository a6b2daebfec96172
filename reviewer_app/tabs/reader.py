"""Reader page (``/study#token=...``): layout and event wiring only (logic in ``study_handlers``).

Every event is ``api_visibility="private"``: no API page entry, not callable through the
Gradio clients. The token arrives once, from the URL fragment, through a hidden textbox
that the load event clears; afterwards it lives only in server-side ``gr.State``.
"""

from __future__ import annotations

import gradio as gr

from reviewer_app import study_handlers as h
from reviewer_app import study_view as v
from reviewer_app.study_backend import ZOOMS, StudyBackend
from reviewer_app.study_image import StudyImage
from reviewer_app.wiring import connector

# Inputs are (state, token box); JS sees the state as null and the server ignores it.
READ_TOKEN_JS = "(s, t) => [s, new URLSearchParams(window.location.hash.slice(1)).get('token') || '']"
KEY_HELP = """**Keys** (not while typing a comment): **R** real · **S** synthetic · **Shift+1..** confidence ·
**Z X C V B** realism 1-5 · **Enter** submit · **N** next after training feedback.
CT: **↑/↓** or mouse wheel slice · **PageUp/PageDown** 10 slices · **Home/End** · **1-5** window presets.
Images: **+/-** zoom, click the image to zoom in there."""


def create_reader_page(backend: StudyBackend) -> dict:
    """Lay out the reader page inside the current route; returns its components by name."""
    c: dict = {"state": gr.State(h.ReaderState())}
    c["token_in"] = gr.Textbox(visible=False)
    c["position"] = gr.Number(visible=False, precision=0)
    with gr.Column(elem_id="sdx-reader"):
        c["notice"] = gr.Markdown(elem_id="sdx-notice")
        with gr.Column(visible=False) as c["intro"]:
            c["instructions"] = gr.Markdown(elem_id="sdx-instructions")
            c["start"] = gr.Button("Start", variant="primary", elem_id="sdx-start")
        with gr.Column(visible=False) as c["case_panel"]:
            c["progress"] = gr.HTML(elem_id="sdx-progress")
            with gr.Row():
                with gr.Column(scale=3, min_width=420):
                    c["image"] = StudyImage(show_label=False, format="png", interactive=False, height=640,
                                            elem_id="sdx-stimulus", elem_classes=["sdx-stimulus"],
                                            buttons=["fullscreen"])
                    with gr.Group(visible=False) as c["volume_controls"]:
                        c["slice_text"] = gr.Markdown(elem_id="sdx-slice-text")
                        c["slice"] = gr.Slider(0, 1000, step=1, label="Slice", elem_id="sdx-r-slice")
                        c["preset"] = gr.Radio([], label="Window preset (keys 1-5)", elem_id="sdx-r-preset")
                        with gr.Row():
                            c["width"] = gr.Slider(1, 4000, step=1, label="Window width (HU)", elem_id="sdx-r-width")
                            c["level"] = gr.Slider(-1500, 3000, step=1, label="Window level (HU)",
                                                   elem_id="sdx-r-level")
                    with gr.Group(visible=False) as c["image_controls"]:
                        c["zoom"] = gr.Radio([(f"{z}x", z) for z in ZOOMS], value=1, elem_id="sdx-r-zoom",
                                             label="Zoom (+/-; click the image to zoom in there)")
                with gr.Column(scale=2, min_width=320):
                    c["call"] = gr.Radio([("Real", "real"), ("Synthetic", "synthetic")], elem_id="sdx-call",
                                         label="This image is (R / S)")
                    c["confidence"] = gr.Radio([], label="Confidence", elem_id="sdx-confidence")
                    c["likert"] = gr.Radio([(str(i), i) for i in range(1, 6)], elem_id="sdx-likert",
                                           label="Realism: 1 clearly artificial ... 5 fully realistic (Z X C V B)")
                    c["comment"] = gr.Textbox(label="Comment (optional)", lines=2, max_length=4000,
                                              elem_id="sdx-comment")
                    c["submit"] = gr.Button("Submit answer (Enter)", variant="primary", elem_id="sdx-submit")
                    c["feedback"] = gr.Markdown(visible=False, elem_id="sdx-feedback")
                    c["next"] = gr.Button("Next case (N)", visible=False, variant="primary", elem_id="sdx-next")
                    c["back"] = gr.Button("Change my previous answer", visible=False, size="sm", elem_id="sdx-back")
                    gr.Markdown(KEY_HELP)
    with gr.Row(elem_classes=["sdx-hidden"]):
        for move in (*v.MOVES, "home", "end"):
            c[f"key_{move}"] = gr.Button(move, elem_id=f"sdx-r-key-{move}", visible="hidden")
        for n in range(1, 6):
            c[f"key_preset{n}"] = gr.Button(str(n), elem_id=f"sdx-r-key-preset{n}", visible="hidden")
        for step in ("in", "out"):
            c[f"key_zoom_{step}"] = gr.Button(step, elem_id=f"sdx-r-key-zoom-{step}", visible="hidden")
    return c


def wire_reader_page(demo: gr.Blocks, backend: StudyBackend, c: dict) -> None:
    """Events of the reader page; call inside the same route as :func:`create_reader_page`."""
    connect = connector(c)
    st = c["state"]
    private = {"api_visibility": "private"}
    fast = {**private, "concurrency_limit": None, "show_progress": "hidden"}
    connect(demo.load, lambda s, t: h.open_link(backend, s, t), [st, c["token_in"]], js=READ_TOKEN_JS, **private)
    connect(c["start"].click, lambda s: h.start(backend, s), [st], **private)
    answer = [st, c["position"], c["call"], c["confidence"], c["likert"], c["comment"]]
    # trigger_mode="once": no second submission while one is pending (the position check covers the rest).
    connect(c["submit"].click, lambda s, *a: h.submit(backend, s, *a), answer, trigger_mode="once", **private)
    connect(c["next"].click, lambda s: h.next_case(backend, s), [st], trigger_mode="once", **private)
    connect(c["back"].click, lambda s: h.back(backend, s), [st], trigger_mode="once", **private)
    for move in (*v.MOVES, "home", "end"):
        connect(c[f"key_{move}"].click, lambda s, m=move: v.move(backend, s, m), [st], trigger_mode="multiple",
                **fast)
    connect(c["slice"].input, lambda s, i: v.set_slice(backend, s, i), [st, c["slice"]],
            trigger_mode="always_last", **fast)
    for n in range(1, 6):
        connect(c[f"key_preset{n}"].click, lambda s, k=n: v.set_preset(backend, s, k), [st], **fast)
    connect(c["preset"].input, lambda s, p: v.set_preset(backend, s, p), [st, c["preset"]], **fast)
    for name in ("width", "level"):
        connect(c[name].release, lambda s, w, lv: v.set_window(backend, s, w, lv), [st, c["width"], c["level"]],
                trigger_mode="always_last", **fast)
    connect(c["zoom"].input, lambda s, z: v.set_zoom(backend, s, z), [st, c["zoom"]], **fast)
    for step, delta in (("in", 1), ("out", -1)):
        connect(c[f"key_zoom_{step}"].click, lambda s, d=delta: v.zoom_step(backend, s, d), [st], **fast)
    connect(c["image"].select, lambda s, evt: v.click(backend, s, *evt.index), [st], select=True, **fast)
