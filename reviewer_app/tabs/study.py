"""The reader-study pages of the app: ``/study`` (readers) and ``/owner`` (study owners).

Gradio multipage routes: each page's config carries only its own components and events,
so a reader's browser is never sent the owner page's layout. ``build_study_app`` is the
study-only server (``synthdx study serve`` / ``synthdx app --study-only``): its home page is
a neutral notice and no research tool is served at all, so a reader who edits the URL
still finds nothing but the study.
"""

from __future__ import annotations

import gradio as gr

from reviewer_app.study_backend import StudyServing, open_backend
from reviewer_app.tabs.owner import create_owner_page, wire_owner_page
from reviewer_app.tabs.reader import create_reader_page, wire_reader_page

STUDY_HOME = """### Reader study
Open the personal link you were sent to take part. Study owners manage studies at `/owner`."""


def add_study_pages(demo: gr.Blocks, serving: StudyServing) -> None:
    """Add the reader and owner pages to ``demo`` (call outside its ``with`` block)."""
    backend = open_backend(serving.db, serving.media, create=True)
    with demo.route("Reader", "/study", show_in_navbar=False):
        reader = create_reader_page(backend)
        wire_reader_page(demo, backend, reader)
    with demo.route("Study owner", "/owner", show_in_navbar=not serving.study_only):
        owner = create_owner_page(backend, files_root=serving.study_files, base_url=serving.base_url)
        wire_owner_page(demo, backend, owner, files_root=serving.study_files, base_url=serving.base_url)


def build_study_app(serving: StudyServing) -> gr.Blocks:
    """Reader and owner pages only, for real studies with clinicians."""
    with gr.Blocks(title="Reader study", fill_width=True) as demo:
        gr.Markdown(STUDY_HOME)
    add_study_pages(demo, serving)
    return demo
