"""``build_app(services) -> gr.Blocks`` assembles the tabs; ``launch`` serves it."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from reviewer_app import viewer_handlers as h
from reviewer_app.services import Services
from reviewer_app.tabs.controlnet import create_controlnet_tab
from reviewer_app.tabs.inpaint import create_inpaint_tab
from reviewer_app.tabs.slides import create_slides_tab
from reviewer_app.tabs.viewer import create_viewer_tab
from reviewer_app.wiring import connector

STATIC = Path(__file__).parent / "static"
HEADER = """### synthdx: synthetic CT and histopathology, and their blinded expert review
Scroll a CT with HU windows and organ overlays, or open a slide and zoom in; paint a mask on a CT
slice and inpaint a lesion or organ into it."""


def build_app(services: Services, study=None) -> gr.Blocks:
    """The whole app for the given services (no launch, nothing global).

    ``study`` (a ``reviewer_app.study_backend.StudyServing``; by default made from
    ``services.db``) adds the reader-study pages ``/study`` and ``/owner``; with
    ``study_only`` those pages are all that is served.
    """
    from reviewer_app.tabs import study as study_pages

    if study is None and services.db:
        study = study_pages.StudyServing(db=services.db)
    if study is not None and study.study_only:
        return study_pages.build_study_app(study)
    with gr.Blocks(title="synthdx", fill_width=True) as demo:
        gr.Markdown(HEADER)
        with gr.Tabs():
            with gr.Tab("Viewer", id="viewer"):
                viewer = create_viewer_tab(services)
            with gr.Tab("Inpainting", id="inpaint"):
                create_inpaint_tab(services, viewer["state"])
            with gr.Tab("ControlNet", id="controlnet"):
                create_controlnet_tab(services, viewer["state"])
            with gr.Tab("Slides", id="slides"):
                create_slides_tab(services, viewer["state"])
        if services.catalog:
            first = services.catalog[0].key

            def open_first(state):
                state, out = h.open_image(services, state, first)
                return state, {**out, "picker": first}

            connector(viewer)(demo.load, open_first, [viewer["state"]], api_visibility="private",
                              show_progress_on=[viewer["axial"], viewer["coronal"], viewer["sagittal"]])
    if study is not None:
        study_pages.add_study_pages(demo, study)
    return demo


def head_html() -> str:
    # no-referrer: no address of these pages (readers' links included) is passed on to another site.
    scripts = "".join(f"<script>{(STATIC / name).read_text()}</script>" for name in ("viewer.js", "reader.js"))
    return "<meta name='referrer' content='no-referrer'>" + scripts


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, **kwargs):
    """Serve the app; returns Gradio's ``(app, local_url, share_url)``."""
    demo.queue(default_concurrency_limit=4)
    # Run history would keep event inputs and outputs in the browser's storage, where the next
    # reader at a shared reading-room workstation could find them.
    kwargs.setdefault("run_history", False)
    return demo.launch(
        server_name=host,
        server_port=port,
        head=head_html(),
        css=(STATIC / "app.css").read_text() + (STATIC / "reader.css").read_text(),
        footer_links=["gradio", "settings"],
        max_file_size="4gb",
        show_error=True,
        **kwargs,
    )
