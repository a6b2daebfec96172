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
    p.add_argument("--db", metavar="PATH", help="reader-study database (SQLite file or SQLAlchemy URL)")
    p.add_argument("--models", metavar="DIR", help="folder of your own inpainting model folders (diffusers "
                   "save_pretrained layout, e.g. written by `synthdx train inpaint`), besides the shipped ones")
    p.add_argument("--work-dir", metavar="DIR", help="where uploads and outputs are written (default ./synthdx-work)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reviewer_app.app import build_app, launch
    from reviewer_app.services import build_services

    services = build_services(
        demo=args.demo, data_dir=args.data, db=args.db, work_dir=Path(args.work_dir) if args.work_dir else None,
        models_dir=args.models,
    )
    print(f"synthdx: {len(services.catalog)} images available; open http://{args.host}:{args.port}")
    if services.catalog:
        services.prefetch(services.catalog[0].key)  # ready by the time the first page loads
    launch(build_app(services), host=args.host, port=args.port)
    return 0
