"""``synthdx info PATH``: describe a DICOM series, NIfTI file, case folder or slide."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from core.io.info import __doc__ as keys_doc

    p = sub.add_parser(
        "info",
        help="describe an image: modality, shape, spacing, orientation, HU range, series",
        description="Describe a DICOM file or series folder, NIfTI file, TotalSegmentator/KiTS case "
        "folder, or slide image (SVS/TIFF/PNG).\n\nJSON output (--json): " + keys_doc.split("Keys", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="file or folder to describe")
    p.add_argument("--series", metavar="UID", help="DICOM series to describe when a folder holds several")
    p.add_argument("--json", action="store_true", help="print JSON (keys above) instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.io.info import describe

    info = describe(args.path, series_uid=args.series)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if value is None:
            continue
        if key == "series":
            print("series:")
            for s in value:
                print(f"  {s['series_uid'] or '(no series UID)'}  {s['modality']:3s} {s['n_files']:5d} files  {s['description']}")
        elif key == "labels":
            print(f"labels: {len(value)} present: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        elif key == "warnings":
            for w in value:
                print(f"warning: {w}")
        else:
            print(f"{key}: {value}")
    return 0
