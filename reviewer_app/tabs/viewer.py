"""Viewer tab: layout and event wiring only (logic in ``reviewer_app.viewer_handlers``)."""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from core.render import PLANES
from core.windowing import PRESETS
from reviewer_app import viewer_handlers as h
from reviewer_app.components import SliceImage
from reviewer_app.services import Services
from reviewer_app.state import ViewerState
from reviewer_app.wiring import connector

UPLOAD_TYPES = [".zip", ".nii", ".gz", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs"]
KEY_HELP = """**Keyboard** (click an image first): ↑/↓ previous/next slice of the active view, PageUp/PageDown
by 10, Home/End first/last, 1-5 window presets (Soft tissue, Lung, Liver, Bone, Brain). **Mouse**: wheel
over a view scrolls it; click a pixel to read its value and move the other views there."""


def create_viewer_tab(services: Services) -> dict:
    """Lay out the viewer; returns its components by name (other tabs reuse the state)."""
    c: dict = {"state": gr.State(ViewerState())}
    choices = [(e.label, e.key) for e in services.catalog]
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            c["picker"] = gr.Dropdown(choices, value=None, label="Image", info="demo and --data images")
            c["upload"] = gr.File(label="Open your own (DICOM folder as .zip, NIfTI, slide)",
                                  file_types=UPLOAD_TYPES, height=120)
            c["info"] = gr.Markdown()
            with gr.Group(visible=True) as c["volume_controls"]:
                c["active"] = gr.Radio(list(PLANES), value="axial", label="Active view (keyboard and wheel)")
                c["preset"] = gr.Dropdown(list(PRESETS), value="Soft tissue", label="Window preset")
                c["width"] = gr.Slider(1, 4000, value=400, step=1, label="Window width (W)", elem_id="sdx-width")
                c["level"] = gr.Slider(-1500, 3000, value=40, step=1, label="Window level (L)", elem_id="sdx-level")
                c["overlay"] = gr.Checkbox(True, label="Show segmentation")
                c["opacity"] = gr.Slider(0.05, 1.0, value=0.35, step=0.05, label="Overlay opacity")
                c["labels_shown"] = gr.Dropdown([], value=[], multiselect=True, label="Labels drawn",
                                                info="tissue classes (fat, muscle, body) start hidden")
                c["legend"] = gr.HTML()
                c["cranial"] = gr.Checkbox(True, label="Up arrow / wheel up moves towards the head")
            gr.Markdown(KEY_HELP)
        with gr.Column(scale=3):
            with gr.Column(visible=True) as c["volume_panel"]:
                c["pixel"] = gr.Markdown("Click a pixel to read its value.", elem_id="sdx-pixel")
                c["position"] = gr.Markdown(elem_id="sdx-position")
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        _view(c, "axial", height=620)
                    with gr.Column(scale=1, min_width=240):
                        _view(c, "coronal", height=270)
                        _view(c, "sagittal", height=270)
            with gr.Column(visible=False) as c["slide_panel"]:
                with gr.Row():
                    c["slide_levels"] = gr.Dropdown([], label="Pyramid level for the zoomed region")
                    c["zoom_size"] = gr.Slider(128, 2048, value=512, step=64, label="Region size (px)")
                with gr.Row():
                    c["thumb"] = SliceImage(label="Slide overview (click to zoom)", format="png", interactive=False)
                    c["zoom"] = SliceImage(label="Zoomed region", format="png", interactive=False)
                c["zoom_info"] = gr.Markdown()
    with gr.Row(elem_classes=["sdx-hidden"]):
        for move in h.MOVES | {"home": 0, "end": 0}:
            c[f"key_{move}"] = gr.Button(move, elem_id=f"sdx-key-{move}", visible="hidden")
        for n, name in enumerate(PRESETS, start=1):
            c[f"key_preset{n}"] = gr.Button(name, elem_id=f"sdx-key-preset{n}", visible="hidden")
        for plane in PLANES:
            for move in ("up", "down"):
                c[f"wheel_{plane}_{move}"] = gr.Button(move, elem_id=f"sdx-wheel-{plane}-{move}", visible="hidden")
    _wire_events(services, c)
    return c


def _view(c: dict, plane: str, *, height: int) -> None:
    c[plane] = SliceImage(label=plane.capitalize(), format="png", interactive=False, height=height,
                          elem_id=f"sdx-view-{plane}", elem_classes=["sdx-view"], buttons=["download", "fullscreen"])
    c[f"{plane}_slider"] = gr.Slider(0, 1, value=0, step=1, label=f"{plane.capitalize()} slice (0-based)",
                                     elem_id=f"sdx-slider-{plane}")


def _wire_events(services: Services, c: dict) -> None:
    fast = {"concurrency_limit": None, "show_progress": "hidden"}
    st = c["state"]
    connect = connector(c)
    views = [c[p] for p in PLANES] + [c["thumb"]]
    connect(c["picker"].input, lambda s, key: h.open_image(services, s, key), [st, c["picker"]],
            api_name="open_image", concurrency_limit=2, show_progress_on=views)
    connect(c["upload"].upload, lambda s, f: h.open_upload(services, s, f), [st, c["upload"]],
            api_visibility="private", concurrency_limit=2, show_progress_on=views)
    for plane in PLANES:
        connect(c[f"{plane}_slider"].input, lambda s, v, p=plane: h.set_slice(services, s, p, v),
                [st, c[f"{plane}_slider"]], api_name=f"slice_{plane}", trigger_mode="always_last", **fast)
        connect(c[plane].select, lambda s, evt, p=plane: h.click(services, s, p, *evt.index), [st],
                select=True, api_visibility="private", **fast)
    for move in (*h.MOVES, "home", "end"):
        connect(c[f"key_{move}"].click, lambda s, m=move: h.step(services, s, m), [st],
                api_name=f"key_{move}", trigger_mode="multiple", **fast)
    for plane in PLANES:
        for move in ("up", "down"):
            connect(c[f"wheel_{plane}_{move}"].click,
                    lambda s, p=plane, m=move: h.step(services, replace(s, active=p), m), [st],
                    api_visibility="private", trigger_mode="multiple", **fast)
    for n, name in enumerate(PRESETS, start=1):
        connect(c[f"key_preset{n}"].click, lambda s, p=name: h.set_preset(services, s, p), [st],
                api_visibility="private", **fast)
    connect(c["preset"].input, lambda s, p: h.set_preset(services, s, p), [st, c["preset"]],
            api_name="preset", **fast)
    for name in ("width", "level"):
        connect(c[name].input, lambda s, w, lv: h.set_window(services, s, w, lv), [st, c["width"], c["level"]],
                api_visibility="private", trigger_mode="always_last", **fast)
    for name in ("overlay", "opacity"):
        connect(c[name].input, lambda s, show, op: h.set_overlay(services, s, show, op),
                [st, c["overlay"], c["opacity"]], api_visibility="private", trigger_mode="always_last", **fast)
    connect(c["labels_shown"].input, lambda s, names: h.set_labels_shown(services, s, names),
            [st, c["labels_shown"]], api_visibility="private", trigger_mode="always_last", **fast)
    # Only updates the state: also the benchmark's no-op event (bench/viewer.py).
    connect(c["active"].input, lambda s, p: (replace(s, active=p), {}), [st, c["active"]],
            api_name="set_active", **fast)
    connect(c["cranial"].input, lambda s, v: (replace(s, up_is_cranial=bool(v)), {}), [st, c["cranial"]],
            api_visibility="private", **fast)
    connect(c["thumb"].select, lambda s, lv, size, evt: h.slide_zoom(services, s, lv, int(size), *evt.index),
            [st, c["slide_levels"], c["zoom_size"]], select=True, api_visibility="private", concurrency_limit=4)
