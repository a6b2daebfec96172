"""``synthdx``: one console script, one thin module per subcommand.

Each module in ``reviewer_app.commands`` named in ``COMMANDS`` exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function
``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so that
``synthdx --help`` stays fast.

Errors: ``core.errors.InputError`` / ``ValueError`` / ``FileNotFoundError`` (bad input)
are printed as one line, ``synthdx: error: ...``, with exit status 2 and no traceback.
Anything else is a bug: one line plus exit status 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("app", "info", "train", "inpaint", "study", "slide", "generate")

DESCRIPTION = """\
Synthetic CT and histopathology with diffusion models, and blinded expert review.

Start with `synthdx app --demo` (no data needed), or `synthdx app --data DIR` for your own
volumes. `synthdx info PATH` describes a DICOM series, NIfTI file or slide image.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthdx", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"reviewer_app.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("synthdx: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if args.debug:
            raise
        print(f"synthdx: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not bad input: still no wall of text unless asked
        if args.debug:
            raise
        print(
            f"synthdx: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
