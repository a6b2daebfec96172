"""``synthdx app``: launch the Gradio app."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "app",
        help="launch the web app (viewer, generation, reader studies)",
        description="Launch the web app. With --demo it opens on an embedded procedural abdominal CT "
        "phantom and real sample images that installed packages carry; --data adds your own images.",
    )
    p.add_argument("--demo", action="store_true", help="include the embedded demo images (default when no --data)")
    p.add_argument("--data", metavar="DIR", help="folder of DICOM series, NIfTI files, TotalSegmentator/KiTS case "
                   "folders and slide/tile images")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all; default %(default)s)")
    p.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    p.add_argument("--db", metavar="PATH", help="reader-study database (SQLite file or SQLAlchemy URL): adds the "
                   "reader pages (/study#token=...) and the owner page (/owner)")
    p.add_argument("--media", metavar="DIR", help="stimulus folder of --db (default: <db stem>-media beside a SQLite file)")
    p.add_argument("--study-only", action="store_true", help="serve only the reader and owner pages, none of the "
                   "research tools: the mode for real studies with clinicians (= `synthdx study serve`)")
    p.add_argument("--study-files", metavar="DIR", help="folder that manifests uploaded on /owner may reference")
    p.add_argument("--base-url", help="address put in readers' links (default: the one the owner's browser uses)")
    p.add_argument("--models", metavar="DIR", help="folder of your own model folders (inpainting, ControlNet or tiled "
                   "H&E, as `synthdx train ...` writes them), offered besides the shipped ones")
    p.add_argument("--work-dir", metavar="DIR", help="where uploads and outputs are written (default ./synthdx-work)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reviewer_app.app import build_app, launch
    from reviewer_app.services import build_services
    from reviewer_app.study_backend import StudyServing

    study = None
    if args.db:
        study = StudyServing(db=args.db, media=args.media, study_only=args.study_only,
                             study_files=Path(args.study_files) if args.study_files else None, base_url=args.base_url)
    elif args.study_only or args.media:
        raise ValueError("--study-only and --media need --db")
    if args.study_only:
        from reviewer_app.commands.study import serve_study

        return serve_study(study, host=args.host, port=args.port)
    services = build_services(
        demo=args.demo, data_dir=args.data, db=args.db, work_dir=Path(args.work_dir) if args.work_dir else None,
        models_dir=args.models,
    )
    print(f"synthdx: {len(services.catalog)} images available; open http://{args.host}:{args.port}")
    if services.catalog:
        services.prefetch(services.catalog[0].key)  # ready by the time the first page loads
    launch(build_app(services, study), host=args.host, port=args.port)
    return 0
