"""Owner page (``/owner``): layout and event wiring only (logic in ``owner_handlers``).

Each study has its own owner password, asked with every action; all events are private.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from reviewer_app import owner_handlers as h
from reviewer_app.study_backend import StudyBackend
from reviewer_app.wiring import connector

ORIGIN_JS = "() => window.location.origin + window.location.pathname.replace(/\\/owner\\/?$/, '')"


def create_owner_page(backend: StudyBackend, *, files_root: Path | None, base_url: str | None) -> dict:
    """Lay out the owner page inside the current route and wire it; returns its components."""
    c: dict = {"state": gr.State(h.OwnerState())}
    c["origin"] = gr.Textbox(base_url or "", visible=False)
    gr.Markdown("## Reader study owner\nOpen a study with its name and owner password. The password is "
                "checked again for every action below.")
    with gr.Row():
        c["study_name"] = gr.Textbox(label="Study name", elem_id="sdx-o-name", scale=2)
        c["password"] = gr.Textbox(label="Owner password", type="password", elem_id="sdx-o-password", scale=2)
        c["open"] = gr.Button("Open", variant="primary", elem_id="sdx-o-open", scale=1)
    c["status"] = gr.Markdown(elem_id="sdx-o-status")
    with gr.Column(visible=False) as c["study_panel"]:
        c["overview"] = gr.Markdown(elem_id="sdx-o-overview")
        with gr.Tabs():
            with gr.Tab("Readers"):
                c["progress_table"] = gr.Dataframe(headers=h.PROGRESS_HEADERS, interactive=False,
                                                   elem_id="sdx-o-progress")
                c["refresh"] = gr.Button("Refresh progress", size="sm", elem_id="sdx-o-refresh")
                with gr.Row():
                    c["reader_name"] = gr.Textbox(label="Reader name", elem_id="sdx-o-reader-name")
                    c["reader_role"] = gr.Dropdown(["radiologist", "pathologist", "other"], value="radiologist",
                                                   label="Role")
                    c["reader_years"] = gr.Number(label="Years of experience", precision=1, minimum=0)
                c["add_reader"] = gr.Button("Add reader", elem_id="sdx-o-add")
                c["link"] = gr.Textbox(label="Personal link (shown once; send it privately)", buttons=["copy"],
                                       elem_id="sdx-o-link", interactive=False)
                with gr.Row():
                    c["lock_confirm"] = gr.Checkbox(label="I want to lock this study: no more answers or readers")
                    c["lock"] = gr.Button("Lock study", variant="stop", size="sm")
            with gr.Tab("Leakage audit"):
                c["run_audit"] = gr.Button("Run the audit", elem_id="sdx-o-audit")
                c["audit_report"] = gr.Markdown(elem_id="sdx-o-audit-report")
            with gr.Tab("Exports"):
                c["run_exports"] = gr.Button("Prepare exports (CSV, .imrmc, summary JSON, HTML report)",
                                             elem_id="sdx-o-exports")
                c["files"] = gr.File(label="Downloads", file_count="multiple", interactive=False)
            with gr.Tab("Analysis"):
                c["run_analysis"] = gr.Button("Analyse the ratings", elem_id="sdx-o-analyse")
                c["analysis_text"] = gr.Markdown(elem_id="sdx-o-analysis")
                for key in h.FIGURE_SLOTS:
                    c[f"plot_{key}"] = gr.Plot(visible=False, elem_id=f"sdx-o-plot-{key}")
                for i in range(h.N_STRATUM_SLOTS):
                    c[f"plot_stratum{i}"] = gr.Plot(visible=False, elem_id=f"sdx-o-plot-stratum{i}")
    with gr.Accordion("Create a new study from a manifest", open=False):
        gr.Markdown("Paths in the manifest are relative to the server's study-files folder "
                    f"({'`' + str(files_root) + '`' if files_root else 'not set: start with --study-files DIR'}). "
                    "Columns: `path,truth[,role][,stratum_<name>...][,generator,model_version,seed,mask_hash,...]`.")
        c["manifest"] = gr.File(label="Manifest CSV", file_types=[".csv"], type="filepath")
        with gr.Row():
            c["new_name"] = gr.Textbox(label="Study name")
            c["new_password"] = gr.Textbox(label="Owner password (>= 8 characters)", type="password")
        with gr.Row():
            c["seed"] = gr.Number(0, label="Seed", precision=0)
            c["blocks"] = gr.Number(4, label="Position blocks", precision=0, minimum=1)
            c["duplicates"] = gr.Number(0, label="Hidden repeats", precision=0, minimum=0)
            c["gap"] = gr.Number(10, label="Least gap between repeats", precision=0, minimum=1)
        with gr.Row():
            c["fraction_low"] = gr.Number(0, label="Synthetic share from (0 = all cases)", minimum=0, maximum=0.99)
            c["fraction_high"] = gr.Number(0, label="to", minimum=0, maximum=0.99)
            c["margin"] = gr.Number(0.05, label="TOST margin", minimum=0.01, maximum=0.49)
            c["levels"] = gr.Number(3, label="Confidence levels", precision=0, minimum=2, maximum=7)
        with gr.Row():
            c["image_size"] = gr.Number(512, label="2D grid (px)", precision=0, minimum=8)
            c["volume_slices"] = gr.Number(32, label="Volume slices", precision=0, minimum=1)
            c["volume_size"] = gr.Number(256, label="Volume in-plane (px)", precision=0, minimum=8)
            c["allow_changes"] = gr.Checkbox(label="Readers may change answers")
        c["instructions"] = gr.Textbox(label="Instructions for readers (Markdown)", lines=4)
        c["create"] = gr.Button("Create study", variant="primary")
    return c


def wire_owner_page(demo: gr.Blocks, backend: StudyBackend, c: dict, *, files_root: Path | None,
                    base_url: str | None) -> None:
    """Events of the owner page; call inside the same route as :func:`create_owner_page`."""
    connect = connector(c)
    st, pw = c["state"], c["password"]
    private = {"api_visibility": "private"}
    if not base_url:  # the link address is the one the owner's browser uses
        demo.load(None, None, [c["origin"]], js=ORIGIN_JS, **private)
    connect(c["open"].click, lambda s, n, p: h.open_study(backend, s, n, p), [st, c["study_name"], pw], **private)
    connect(c["password"].submit, lambda s, n, p: h.open_study(backend, s, n, p), [st, c["study_name"], pw],
            **private)
    connect(c["refresh"].click, lambda s, p: h.refresh(backend, s, p), [st, pw], **private)
    connect(c["add_reader"].click, lambda s, p, *a: h.add_reader(backend, s, p, *a),
            [st, pw, c["reader_name"], c["reader_role"], c["reader_years"], c["origin"]], **private)
    connect(c["lock"].click, lambda s, p, ok: h.lock(backend, s, p, ok), [st, pw, c["lock_confirm"]], **private)
    connect(c["run_audit"].click, lambda s, p: h.audit(backend, s, p), [st, pw], **private)
    connect(c["run_exports"].click, lambda s, p: h.exports(backend, s, p), [st, pw], **private)
    connect(c["run_analysis"].click, lambda s, p: h.analysis(backend, s, p), [st, pw], **private)
    create_inputs = [c[k] for k in ("manifest", "new_name", "new_password", "seed", "blocks", "duplicates", "gap",
                                    "fraction_low", "fraction_high", "margin", "allow_changes", "levels",
                                    "instructions", "image_size", "volume_slices", "volume_size")]
    connect(c["create"].click, lambda s, *a: h.create(backend, s, files_root, *a), [st, *create_inputs],
            concurrency_limit=1, **private)
