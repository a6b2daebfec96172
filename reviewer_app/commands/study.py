"""``synthdx study``: create and run blinded reader studies (visual Turing tests) from the shell.

Thin wrappers over :mod:`reviewer_app.study_ops`; see ``synthdx study COMMAND --help``.
The command line trusts whoever can write the database file: only the web owner page
asks for the owner password on every action.
"""

from __future__ import annotations

import argparse
import os
import sys

PASSWORD_ENV = "SYNTHDX_OWNER_PASSWORD"
# Mirrors reviewer_app.study_ops.EXPORT_FORMATS (kept here so `synthdx --help` imports no database code).
EXPORT_FORMATS = {
    "csv": "long CSV, one row per rating (studies.formats.read_long_csv reads it back)",
    "imrmc": "iMRMC .imrmc (DIDSR/iMRMC, RJafroc); main analysis only, scores 1..2K",
    "mrmcaov": "MRMCaov CSV (reader,treatment,case,truth,rating); main analysis only",
    "rows": "every rating with timings, slices visited and windows used (owner records)",
}

DESCRIPTION = """\
Blinded reader studies: clinicians rate images as real or synthetic, one case at a time.

  synthdx study create --db runs/vtt.sqlite --manifest cases.csv --name liver-vtt
  synthdx study add-reader --db runs/vtt.sqlite --name "Dr A" --role radiologist --years 8
  synthdx study serve --db runs/vtt.sqlite --host 0.0.0.0     # readers' links + /owner only
  synthdx study status --db runs/vtt.sqlite
  synthdx study export --db runs/vtt.sqlite --format imrmc --out vtt.imrmc
  synthdx study analyze --db runs/vtt.sqlite --out report/

Stimuli are stored beside a SQLite database in <name>-media/ (runs/vtt.sqlite ->
runs/vtt-media/); give --media DIR for a database URL. --study ID|NAME picks a study when a
database holds several.
"""

MANIFEST_HELP = """\
Manifest: CSV with a header; paths relative to the manifest's folder.
  path        (required) 2D image (PNG/JPEG/TIFF/SVS) or CT volume (NIfTI, DICOM file or folder, .zip)
  truth       (required) real | synthetic
  role        main (default) | training (shown first, with feedback) | catch (obvious fake, attention check)
  stratum_<name> or organ/region/tissue/site/body_part/stain: strata for per-stratum results
  prov_<name> or generator/model_version/generator_version/seed/mask_hash/source/...: provenance
Provenance and truth stay on the server; readers see only the standardised images.
"""


def _common(p: argparse.ArgumentParser, *, db_required: bool = True, study: bool = True) -> None:
    p.add_argument("--db", required=db_required, metavar="PATH",
                   help="study database: SQLite file or SQLAlchemy URL")
    p.add_argument("--media", metavar="DIR", help="stimulus folder (default: <db stem>-media beside a SQLite file)")
    if study:
        p.add_argument("--study", metavar="ID|NAME", help="which study, when the database holds several")


def register(sub) -> None:
    p = sub.add_parser("study", help="blinded reader studies: create, add readers, serve, export, analyse, audit",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="study_command", metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    c = ss.add_parser("create", help="create a study from a manifest of image files",
                      description="Create a study: decode every file of the manifest, put it on one grid, "
                      "store it under a random id.\n\n" + MANIFEST_HELP, formatter_class=raw)
    _common(c, study=False)
    c.add_argument("--manifest", required=True, metavar="CSV", help="the manifest (columns above)")
    c.add_argument("--name", required=True, help="unique study name (readers never see it)")
    c.add_argument("--password", help=f"owner password for the web owner page (>= 8 characters); else ${PASSWORD_ENV}, "
                   "else a prompt")
    c.add_argument("--seed", type=int, default=0, help="seed of every reading order (default %(default)s)")
    c.add_argument("--blocks", type=int, default=4, help="position blocks balanced by a Williams square (default %(default)s)")
    c.add_argument("--duplicates", type=int, default=0, help="main cases shown twice, as hidden repeats (default 0)")
    c.add_argument("--duplicate-gap", type=int, default=10, help="least presentations between repeats (default %(default)s)")
    c.add_argument("--synthetic-fraction", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="each reader sees a synthetic share drawn from [LOW, HIGH] (hidden ratio); default: all cases")
    c.add_argument("--tost-margin", type=float, default=0.05, help="pre-registered equivalence margin around 0.5 "
                   "(default %(default)s)")
    c.add_argument("--allow-changes", action="store_true", help="let readers change a submitted answer")
    c.add_argument("--confidence-levels", type=int, default=3, help="confidence asked on 1..K, 2-7 (default %(default)s)")
    c.add_argument("--instructions", default="", help="text shown to readers before the first case (Markdown)")
    c.add_argument("--instructions-file", metavar="FILE", help="read the instructions from a file")
    c.add_argument("--image-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"),
                   help="2D stimulus grid in pixels (default 512 512)")
    c.add_argument("--volume-shape", type=int, nargs=3, default=(32, 256, 256), metavar=("Z", "Y", "X"),
                   help="volume stimulus grid: central slices and in-plane size (default 32 256 256)")

    a = ss.add_parser("add-reader", help="add a reader and print their personal link")
    _common(a)
    a.add_argument("--name", required=True, help="reader's display name, unique in the study")
    a.add_argument("--role", required=True, choices=("radiologist", "pathologist", "other"))
    a.add_argument("--years", type=float, required=True, help="years of experience")
    a.add_argument("--base-url", default="http://127.0.0.1:7860", help="address readers open (default %(default)s)")

    s = ss.add_parser("status", help="studies, cases, readers' progress and the audit-chain check")
    _common(s)
    s.add_argument("--json", action="store_true", help="print JSON")

    lk = ss.add_parser("lock", help="close a study: no more ratings or readers")
    _common(lk)

    sim = ss.add_parser("simulate", help="add simulated readers of known accuracy (rehearse the analysis)")
    _common(sim)
    sim.add_argument("--readers", type=int, default=5, help="number of simulated readers (default %(default)s)")
    sim.add_argument("--accuracy", type=float, default=0.6, help="probability of a correct call (default %(default)s)")
    sim.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")

    e = ss.add_parser("export", help="write the ratings: " + ", ".join(EXPORT_FORMATS),
                      description="Formats:\n" + "\n".join(f"  {k:8} {v}" for k, v in EXPORT_FORMATS.items()),
                      formatter_class=raw)
    _common(e)
    e.add_argument("--format", required=True, choices=tuple(EXPORT_FORMATS))
    e.add_argument("--out", required=True, metavar="PATH", help="file to write")

    an = ss.add_parser("analyze", help="accuracy, AUC (MRMC), equivalence, agreement: summary.json + report.html",
                       description="Analyse a stored study (--db) or a ratings file (--ratings: long CSV, .imrmc "
                       "or MRMCaov CSV). Writes summary.json and a self-contained report.html into --out.")
    _common(an, db_required=False)
    an.add_argument("--ratings", metavar="FILE", help="a long CSV, .imrmc or MRMCaov CSV instead of --db")
    an.add_argument("--out", required=True, metavar="DIR", help="folder for summary.json and report.html")
    an.add_argument("--tost-margin", type=float, help="equivalence margin (default: the study's; 0.1 for --ratings)")
    an.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for kappa CIs (default %(default)s)")

    au = ss.add_parser("audit", help="pre-launch leakage audit of what readers are served",
                       description="Checks served names, PNG format parity, identical files and a cross-validated "
                       "classifier on low-level image statistics (volumes rendered as readers see them). "
                       "Exit status 0 when every check passes, 3 when one fails.")
    _common(au)
    au.add_argument("--seed", type=int, default=0, help="classifier fold seed (default %(default)s)")
    au.add_argument("--auc-threshold", type=float, default=0.7, help="fail above this AUC (default %(default)s)")

    sv = ss.add_parser("serve", help="serve only the reader pages and /owner (no research tools)",
                       description="Same as `synthdx app --study-only`: readers' links (/study#token=...) and the "
                       "password-protected owner page (/owner); the viewer and generation tools are not served.")
    _common(sv, study=False)
    sv.add_argument("--host", default="127.0.0.1", help="interface (0.0.0.0 for all; default %(default)s)")
    sv.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    sv.add_argument("--study-files", metavar="DIR", help="folder the owner page may read manifests' files from")
    sv.add_argument("--base-url", help="address in the readers' links (default: what the owner's browser used)")
    p.set_defaults(func=run)


def _password(args) -> str:
    if args.password:
        return args.password
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ValueError(f"no owner password: pass --password, set ${PASSWORD_ENV}, or run in a terminal")
    import getpass

    first = getpass.getpass("owner password (>= 8 characters): ")
    if getpass.getpass("repeat it: ") != first:
        raise ValueError("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    if not args.study_command:
        raise ValueError("choose a study command; see `synthdx study --help`")
    if args.study_command == "serve":
        from pathlib import Path

        from reviewer_app.study_backend import StudyServing

        return serve_study(StudyServing(db=args.db, media=args.media, study_only=True, base_url=args.base_url,
                                        study_files=Path(args.study_files) if args.study_files else None),
                           host=args.host, port=args.port)
    if args.study_command == "analyze" and args.ratings:
        return _analyze_file(args)
    if args.db is None:
        raise ValueError("--db is required (or --ratings FILE for analyze)")

    from reviewer_app.study_backend import open_backend, resolve_study

    backend = open_backend(args.db, args.media, create=args.study_command == "create")
    with backend.session() as session:
        if args.study_command == "create":
            return _create(args, session, backend)
        study = resolve_study(session, args.study)
        return COMMANDS[args.study_command](args, session, backend, study)


def serve_study(serving, *, host: str, port: int) -> int:
    """Serve the reader and owner pages only (``synthdx study serve``, ``synthdx app --study-only``)."""
    from reviewer_app.app import build_app, launch
    from reviewer_app.services import Services
    from reviewer_app.study_backend import open_backend

    open_backend(serving.db, serving.media, create=True)  # fail here, with the path, not in the first event
    print(f"synthdx: reader study server on http://{host}:{port}: readers open their personal links "
          f"(/study#token=...), owners /owner")
    launch(build_app(Services(catalog=[], db=serving.db), serving), host=host, port=port)
    return 0


def _create(args, session, backend) -> int:
    from pathlib import Path

    from reviewer_app.study_ops import StudyOptions, create_from_manifest
    from studies.design import StudyDesign
    from studies.stimuli import StimulusSpec

    instructions = args.instructions
    if args.instructions_file:
        instructions = Path(args.instructions_file).read_text(encoding="utf-8")
    password = _password(args)
    options = StudyOptions(
        design=StudyDesign(seed=args.seed, n_position_blocks=args.blocks, n_duplicates=args.duplicates,
                           duplicate_min_gap=args.duplicate_gap,
                           synthetic_fraction_range=tuple(args.synthetic_fraction) if args.synthetic_fraction else None),
        spec=StimulusSpec(image_size=tuple(args.image_size), volume_shape=tuple(args.volume_shape)),
        tost_margin=args.tost_margin, allow_changes=args.allow_changes, instructions=instructions,
        confidence_levels=args.confidence_levels)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():  # a counter for people; logs get only the result line
            print(f"\rdecoding {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    study = create_from_manifest(session, backend, manifest=args.manifest, name=args.name, password=password,
                                 options=options, progress=progress)
    print(f"created study {study.id} {study.name!r} ({study.kind}); stimuli in {backend.media_dir}")
    print("next: synthdx study audit, then add-reader")
    return 0


def _add_reader(args, session, backend, study) -> int:
    from reviewer_app.study_ops import reader_link
    from studies import crud

    reader, token = crud.add_reader(session=session, study_id=study.id, display_name=args.name, role=args.role,
                                    years_experience=args.years, actor="cli")
    print(f"reader {reader.display_name!r} added to {study.name!r}; personal link (shown once, keep it private):")
    print(reader_link(args.base_url, token))
    return 0


def _status(args, session, backend, study) -> int:
    from reviewer_app.study_ops import status, to_json

    info = status(session, study)
    if args.json:
        print(to_json(info))
        return 0
    c = info["cases"]
    print(f"study {info['id']} {info['name']!r}: {info['kind']}, {'LOCKED' if info['locked'] else 'open'}, "
          f"{c['main']} main + {c['training']} training + {c['catch']} catch cases, {c['duplicates']} hidden repeats")
    for r in info["readers"]:
        print(f"  {r['name']:24} {r['answered']:4d}/{r['total']:<4d} {'done' if r['finished'] else ''}")
    if not info["readers"]:
        print("  no readers yet: synthdx study add-reader")
    chain = info["audit_chain"]
    print("audit log: " + (chain if chain == "intact" else f"BROKEN: {'; '.join(chain)}"))
    return 0 if chain == "intact" else 1


def _lock(args, session, backend, study) -> int:
    from studies import crud

    crud.lock_study(session=session, study_id=study.id, actor="cli")
    print(f"study {study.name!r} locked: no more ratings or readers")
    return 0


def _simulate(args, session, backend, study) -> int:
    from studies.simulate import simulate

    ids = simulate(session=session, study_id=study.id, readers=args.readers, accuracy=args.accuracy, seed=args.seed)
    print(f"{len(ids)} simulated readers rated every case of {study.name!r} (accuracy {args.accuracy})")
    return 0


def _export(args, session, backend, study) -> int:
    from reviewer_app.study_ops import export_study

    print(f"wrote {export_study(session, study, fmt=args.format, out=args.out)}")
    return 0


def _print_summary(summary: dict, paths: dict) -> None:
    pooled = (summary.get("binary") or {}).get("pooled")
    if pooled:
        acc, tost = pooled["accuracy"], pooled["tost"]
        print(f"pooled accuracy {acc['value']:.3f} ({acc['ci_low']:.3f}-{acc['ci_high']:.3f}); equivalent to "
              f"chance within +-{tost['margin']}: {tost['equivalent']}")
    for note in summary["notes"]:
        print(f"note: {note}")
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")


def _analyze(args, session, backend, study) -> int:
    from reviewer_app.study_ops import analyze_ratings, analyze_study
    from studies import crud

    if args.tost_margin is None:
        summary, paths = analyze_study(session, study, out_dir=args.out, n_boot=args.n_boot)
    else:
        summary, paths = analyze_ratings(crud.build_ratings(session=session, study_id=study.id), out_dir=args.out,
                                         tost_margin=args.tost_margin, n_boot=args.n_boot)
    _print_summary(summary, paths)
    return 0


def _analyze_file(args) -> int:
    from reviewer_app.study_ops import analyze_ratings, read_ratings_file

    if args.db:
        raise ValueError("give either --db or --ratings, not both")
    margin = 0.1 if args.tost_margin is None else args.tost_margin
    summary, paths = analyze_ratings(read_ratings_file(args.ratings), out_dir=args.out, tost_margin=margin,
                                     n_boot=args.n_boot)
    _print_summary(summary, paths)
    return 0


def _audit(args, session, backend, study) -> int:
    from reviewer_app.study_ops import AUDIT_FAILED, audit

    report = audit(session, backend, study, seed=args.seed, auc_threshold=args.auc_threshold)
    print(report.summary())
    print(f"audit {'PASSED' if report.passed else 'FAILED'} for study {study.name!r}")
    return 0 if report.passed else AUDIT_FAILED


COMMANDS = {"add-reader": _add_reader, "status": _status, "lock": _lock, "simulate": _simulate,
            "export": _export, "analyze": _analyze, "audit": _audit}
