"""``mriseg``: batch use of the napari-mriseg core.

Each command group lives in a module of this package that defines ``add_commands(subparsers)``;
a handler takes the parsed arguments and returns an exit code. User errors (the project's own
exceptions) end the program with one clear line on stderr and exit code 1; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from .. import __version__
from ..core.errors import MriSegError

COMMAND_MODULES = ("napari_mriseg.cli.data", "napari_mriseg.cli.registration", "napari_mriseg.cli.ml",
                   "napari_mriseg.cli.export")

EPILOG = """examples:
  mriseg demo                                   open napari with the sample case
  mriseg info case_folder/                      sequences, shape, spacing, orientation
  mriseg convert dicom_folder/ t1.nii.gz        DICOM series to NIfTI, geometry intact
  mriseg phantom --out phantoms/ --cases 5      synthetic cases with known labels
  mriseg export registered/ labels.nii.gz --dataset DS   add a corrected case to a training dataset
run `mriseg COMMAND --help` for the options and an example of each command."""


def build_parser() -> argparse.ArgumentParser:
    """The ``mriseg`` argument parser with every available command."""
    parser = argparse.ArgumentParser(
        prog="mriseg",
        description="Multi-sequence MRI segmentation: load, co-register, segment, correct, export.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-mriseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != name:
                raise
            continue
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mriseg`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MriSegError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"mriseg {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"mriseg {args.command}: interrupted\n")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"mriseg {args.command}: unexpected error: {type(exc).__name__}: {exc} "
                         "(run with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
