"""Owner page logic: every action re-checks the study's owner password with crud.

``OwnerState`` only remembers *which* study is open; the password comes with every event
from the password box and is verified (scrypt) before anything is read or changed. A
wrong name and a wrong password get the same message, so the page cannot be used to
find out which study names exist.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from sqlmodel import Session

from core.errors import InputError
from reviewer_app import study_ops
from reviewer_app.study_backend import StudyBackend, list_studies
from studies import crud
from studies.design import StudyDesign
from studies.models import Study
from studies.stimuli import StimulusSpec

FIGURE_SLOTS = ("accuracy", "auc", "roc", "likert", "learning")
N_STRATUM_SLOTS = 4
WRONG = "Wrong study name or password."
PROGRESS_HEADERS = ["reader", "answered", "total", "finished"]


@dataclass
class OwnerState:
    """Which study this page has open (a pointer; the password authorises each action)."""

    study_id: int | None = None


def owner_safe(fn):
    """Engine refusals (a locked study, an unknown id) become messages for the owner."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PermissionError, LookupError) as err:
            raise InputError(str(err)) from None

    return wrapper


def _authorise(session: Session, state: OwnerState, password: str | None) -> Study:
    if state.study_id is None:
        raise InputError("Open a study first: its name and owner password.")
    if not password or not crud.verify_owner_password(session=session, study_id=state.study_id, password=password):
        raise InputError(WRONG)
    return crud.get_study(session=session, study_id=state.study_id)


def _overview(session: Session, study: Study) -> dict:
    info = study_ops.status(session, study)
    c = info["cases"]
    chain = info["audit_chain"]
    text = (f"### {study.name}\n{study.kind}, **{'locked' if study.locked else 'open'}**; {c['main']} main, "
            f"{c['training']} training, {c['catch']} catch cases, {c['duplicates']} hidden repeats; "
            f"TOST margin {study.tost_margin}; answers {'can' if study.allow_changes else 'cannot'} be changed. "
            f"Audit log: {'intact' if chain == 'intact' else 'BROKEN: ' + '; '.join(chain)}.")
    rows = [[r["name"], r["answered"], r["total"], "yes" if r["finished"] else ""] for r in info["readers"]]
    return {"overview": text, "progress_table": {"value": rows, "headers": PROGRESS_HEADERS}}


@owner_safe
def open_study(backend: StudyBackend, state: OwnerState, name: str, password: str) -> tuple[OwnerState, dict]:
    """Open a study by name after checking its owner password."""
    with backend.session() as session:
        match = [s for s in list_studies(session) if s.name == (name or "").strip()]
        if not match or not password or not crud.verify_owner_password(
                session=session, study_id=match[0].id, password=password):
            return OwnerState(), {"overview": "", "study_panel": {"visible": False}, "status": WRONG}
        study = match[0]
        return OwnerState(study.id), {**_overview(session, study), "study_panel": {"visible": True},
                                      "status": f"Opened **{study.name}**."}


@owner_safe
def refresh(backend: StudyBackend, state: OwnerState, password: str) -> tuple[OwnerState, dict]:
    with backend.session() as session:
        return state, _overview(session, _authorise(session, state, password))


@owner_safe
def add_reader(backend: StudyBackend, state: OwnerState, password: str, name: str, role: str, years,
               base_url: str) -> tuple[OwnerState, dict]:
    """Add a reader; the link is shown once (only a hash of its token is stored)."""
    if years is None:
        raise InputError("Enter the reader's years of experience.")
    if not base_url:
        raise InputError("No address for the link: start the server with --base-url.")
    with backend.session() as session:
        study = _authorise(session, state, password)
        reader, token = crud.add_reader(session=session, study_id=study.id, display_name=name or "", role=role,
                                        years_experience=float(years), actor="owner-web")
        link = study_ops.reader_link(base_url, token)
        return state, {**_overview(session, study), "link": link,
                       "status": f"Added **{reader.display_name}**. Copy the link now: it is not shown again."}


@owner_safe
def lock(backend: StudyBackend, state: OwnerState, password: str, confirm: bool) -> tuple[OwnerState, dict]:
    if not confirm:
        raise InputError("Tick the box to confirm: a locked study accepts no more answers.")
    with backend.session() as session:
        study = crud.lock_study(session=session, study_id=_authorise(session, state, password).id,
                                actor="owner-web")
        return state, {**_overview(session, study), "status": f"**{study.name}** is locked."}


@owner_safe
def audit(backend: StudyBackend, state: OwnerState, password: str) -> tuple[OwnerState, dict]:
    """Run the leakage audit on the stimuli as readers are served them."""
    with backend.session() as session:
        study = _authorise(session, state, password)
        report = study_ops.audit(session, backend, study)
    lines = "\n".join(f"- **{c.status.upper()}** {c.name}: {c.message}" for c in report.checks)
    verdict = "PASSED: safe to launch." if report.passed else "FAILED: fix the stimuli before readers start."
    return state, {"audit_report": f"### Audit {verdict}\n{lines}"}


@owner_safe
def exports(backend: StudyBackend, state: OwnerState, password: str) -> tuple[OwnerState, dict]:
    """Long CSV, per-rating records, .imrmc, summary JSON and the HTML report, as downloads."""
    out = Path(tempfile.mkdtemp(prefix="sdx-export-"))
    with backend.session() as session:
        study = _authorise(session, state, password)
        files = [study_ops.export_study(session, study, fmt=fmt, out=out / f"ratings.{ext}")
                 for fmt, ext in (("csv", "csv"), ("rows", "rows.csv"), ("imrmc", "imrmc"))]
        _, report = study_ops.analyze_study(session, study, out_dir=out)
    return state, {"files": [str(f) for f in files] + [str(report["summary"]), str(report["report"])],
                   "status": "Exports ready below."}


@owner_safe
def analysis(backend: StudyBackend, state: OwnerState, password: str) -> tuple[OwnerState, dict]:
    """Key numbers and the report's plotly figures."""
    with backend.session() as session:
        study = _authorise(session, state, password)
        summary, figs = study_ops.figures(session, study)
    out: dict = {f"plot_{k}": {"value": figs.get(k), "visible": k in figs} for k in FIGURE_SLOTS}
    strata = [k for k in figs if k.startswith("stratum:")]
    for i in range(N_STRATUM_SLOTS):
        key = strata[i] if i < len(strata) else None
        out[f"plot_stratum{i}"] = {"value": figs.get(key), "visible": key is not None}
    pooled = (summary.get("binary") or {}).get("pooled")
    text = f"{summary['counts']['readers']} readers, {summary['counts']['ratings']} ratings in the main analysis."
    if pooled:
        acc, tost = pooled["accuracy"], pooled["tost"]
        text += (f" Pooled accuracy **{acc['value']:.3f}** ({acc['ci_low']:.3f}-{acc['ci_high']:.3f}); "
                 f"equivalent to chance within ±{tost['margin']}: **{tost['equivalent']}**.")
    notes = "".join(f"\n- {n}" for n in summary["notes"])
    return state, {**out, "analysis_text": text + notes}


@owner_safe
def create(backend: StudyBackend, state: OwnerState, files_root: Path | None, manifest: str | None, name: str,
           password: str, seed, blocks, duplicates, gap, fraction_low, fraction_high, margin, allow_changes,
           levels, instructions, image_size, volume_slices, volume_size) -> tuple[OwnerState, dict]:
    """Create a study from an uploaded manifest whose paths are relative to the server's study-files folder."""
    if files_root is None:
        raise InputError("Creating studies here needs the server started with --study-files DIR (the folder the "
                         "manifest's paths are relative to); or use `synthdx study create`.")
    if not manifest:
        raise InputError("Upload a manifest CSV first.")
    fraction = None
    if fraction_low or fraction_high:
        fraction = (float(fraction_low or 0), float(fraction_high or 0))
    options = study_ops.StudyOptions(
        design=StudyDesign(seed=int(seed or 0), n_position_blocks=int(blocks or 1), n_duplicates=int(duplicates or 0),
                           duplicate_min_gap=int(gap or 1), synthetic_fraction_range=fraction),
        spec=StimulusSpec(image_size=(int(image_size), int(image_size)),
                          volume_shape=(int(volume_slices), int(volume_size), int(volume_size))),
        tost_margin=float(margin), allow_changes=bool(allow_changes), instructions=instructions or "",
        confidence_levels=int(levels))
    with backend.session() as session:
        study = study_ops.create_from_manifest(session, backend, manifest=manifest, name=name or "",
                                               password=password or "", options=options, root=files_root,
                                               manifest_name=Path(manifest).name)
        return replace(state, study_id=study.id), {
            **_overview(session, study), "study_panel": {"visible": True}, "study_name": study.name,
            "status": f"Created **{study.name}**. Enter its password above to manage it; run the audit next."}
