"""Owner operations on a study database as plain functions: the CLI and the owner page share them.

Each takes an open session (one per command or UI event) and returns plain data or the
paths it wrote; nothing here prints or knows about gradio.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session

from core.errors import InputError
from reviewer_app.study_backend import StudyBackend, audit_renderer, list_studies
from reviewer_app.study_cases import load_manifest
from studies import crud
from studies.design import StudyDesign
from studies.models import Study
from studies.security import MIN_PASSWORD_LENGTH
from studies.stimuli import StimulusSpec, stimulus_path

EXPORT_FORMATS = ("csv", "imrmc", "mrmcaov", "rows")  # described in reviewer_app.commands.study
AUDIT_FAILED = 3  # exit status of `synthdx study audit` when a check fails


@dataclass(frozen=True)
class StudyOptions:
    """Owner settings of a new study (see :func:`studies.crud.create_study`)."""

    design: StudyDesign
    spec: StimulusSpec = field(default_factory=StimulusSpec)
    tost_margin: float = 0.05
    allow_changes: bool = False
    instructions: str = ""
    confidence_levels: int = 3


def create_from_manifest(session: Session, backend: StudyBackend, *, manifest: str | Path, name: str,
                         password: str, options: StudyOptions, root: str | Path | None = None,
                         manifest_name: str | None = None,
                         progress: Callable[[int, int], None] | None = None) -> Study:
    """Decode a manifest's files and store them as a new study.

    Cheap checks (name, password, manifest columns and paths) come first so a typo does
    not cost a decode of every volume.
    """
    name = name.strip()
    if not name:
        raise InputError("the study needs a name")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"the owner password needs at least {MIN_PASSWORD_LENGTH} characters")
    if any(s.name == name for s in list_studies(session)):
        raise InputError(f"a study named {name!r} exists already in this database; choose another name")
    cases = load_manifest(manifest, options.spec, root=root, name=manifest_name, progress=progress)
    return crud.create_study(session=session, name=name, cases=cases, design=options.design,
                             owner_password=password, media_dir=backend.media_dir, spec=options.spec,
                             tost_margin=options.tost_margin, allow_changes=options.allow_changes,
                             instructions=options.instructions, confidence_levels=options.confidence_levels)


def reader_link(base_url: str, token: str) -> str:
    """A reader's personal link. The token is in the fragment (after ``#``): browsers never
    send fragments to a server, so it stays out of access logs, proxies and Referer headers."""
    return f"{base_url.rstrip('/')}/study#token={token}"


def status(session: Session, study: Study) -> dict[str, Any]:
    """Counts and per-reader progress of a study, plus the audit-chain check."""
    cases = crud.list_cases(session=session, study_id=study.id)
    progress = crud.reader_progress(session=session, study_id=study.id)
    return {
        "id": study.id, "name": study.name, "kind": study.kind, "locked": study.locked,
        "allow_changes": study.allow_changes, "tost_margin": study.tost_margin,
        "cases": {"main": sum(not (c.is_training or c.is_catch or c.duplicate_of) for c in cases),
                  "training": sum(c.is_training for c in cases), "catch": sum(c.is_catch for c in cases),
                  "duplicates": sum(c.duplicate_of is not None for c in cases)},
        "readers": [{"name": p.display_name, "answered": p.answered, "total": p.total, "finished": p.finished}
                    for p in progress],
        "audit_chain": crud.verify_audit_chain(session=session) or "intact",
    }


def _ratings(session: Session, study: Study):
    ratings = crud.build_ratings(session=session, study_id=study.id)
    if len(ratings) == 0:
        raise InputError(f"study {study.name!r} has no ratings yet; nothing to export or analyse")
    return ratings


def export_study(session: Session, study: Study, *, fmt: str, out: str | Path) -> Path:
    """Write the study's ratings in one of :data:`EXPORT_FORMATS`."""
    from studies import export, formats

    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "rows":
        rows = crud.export_rows(session=session, study_id=study.id)
        if not rows:
            raise InputError(f"study {study.name!r} has no ratings yet; nothing to export")
        return export.write_rows_csv(rows, out)
    ratings = _ratings(session, study)
    if fmt == "csv":
        return formats.write_long_csv(ratings, out)
    main = ratings.main_analysis()
    if fmt == "imrmc":
        return formats.write_imrmc(main, out, description=f"synthdx reader study {study.name}")
    return formats.write_mrmcaov_csv(main, out)


def read_ratings_file(path: str | Path):
    """Ratings from a long CSV, an ``.imrmc`` or an MRMCaov CSV (told apart by suffix and header)."""
    from studies import formats

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file {path} not found")
    if path.suffix.lower() == ".imrmc":
        return formats.read_imrmc(path)
    with path.open(encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    if header[:2] == ["reader", "treatment"]:
        return formats.read_mrmcaov_csv(path)
    return formats.read_long_csv(path)


def analyze_ratings(ratings, *, out_dir: str | Path, tost_margin: float, n_boot: int = 1000
                    ) -> tuple[dict, dict[str, Path]]:
    """Analyse and write ``summary.json`` + ``report.html`` into ``out_dir``."""
    from studies.analysis.summary import analyze
    from studies.report import write_report

    summary = analyze(ratings, tost_margin=tost_margin, n_boot=n_boot)
    return summary, write_report(summary=summary, ratings=ratings, out_dir=out_dir)


def analyze_study(session: Session, study: Study, *, out_dir: str | Path, n_boot: int = 1000
                  ) -> tuple[dict, dict[str, Path]]:
    """:func:`analyze_ratings` on a stored study with its pre-registered TOST margin."""
    return analyze_ratings(_ratings(session, study), out_dir=out_dir, tost_margin=study.tost_margin,
                           n_boot=n_boot)


def figures(session: Session, study: Study, *, n_boot: int = 1000) -> tuple[dict, dict]:
    """The analysis summary and its plotly figures (``studies.report.build_figures``)."""
    from studies.analysis.summary import analyze
    from studies.report import build_figures

    ratings = _ratings(session, study)
    summary = analyze(ratings, tost_margin=study.tost_margin, n_boot=n_boot)
    return summary, build_figures(summary=summary, ratings=ratings)


def audit(session: Session, backend: StudyBackend, study: Study, *, seed: int = 0, auc_threshold: float = 0.7):
    """The pre-launch leakage audit on what readers are served.

    Volumes are rendered slice by slice with the study's first window preset through the
    app's own renderer and PNG encoder; 2D stimuli are audited as stored (the app decodes
    and re-encodes both classes identically). Every stimulus is served as ``view.png``
    under a keyed-hash folder, which is the name checked.
    """
    from studies.audit import audit_study

    cases = crud.list_cases(session=session, study_id=study.id)
    missing = [c.public_id for c in cases if not stimulus_path(backend.media_dir, c.public_id, c.kind).is_file()]
    if missing:
        raise InputError(f"{len(missing)} stimulus files are missing from {backend.media_dir} "
                         f"(e.g. {missing[0]}); pass the right folder with --media")
    renderer = audit_renderer(study) if study.kind == "volume" else None
    return audit_study(session=session, study_id=study.id, media_dir=backend.media_dir, renderer=renderer,
                       served_names={c.public_id: "view.png" for c in cases}, seed=seed,
                       auc_threshold=auc_threshold)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
