"""``mriseg info``, ``convert``, ``phantom`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ..core.errors import InvalidImageError, MriSegError
from ._common import add_command


def add_commands(sub) -> None:
    """Add the data commands to the ``mriseg`` sub-parsers."""
    p = add_command(sub, "info", "sequences, shape, spacing, orientation codes and value range",
             "mriseg info sample_data/sample_case")
    p.add_argument("path", help="a volume file, a case folder or a DICOM folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=info)

    p = add_command(sub, "convert", "write a volume (DICOM folder, NIfTI, NRRD, MHA) to NIfTI/NRRD/MHA, geometry intact",
             "mriseg convert dicom/ t1.nii.gz --series 3")
    p.add_argument("input", help="volume file or DICOM folder")
    p.add_argument("output", help="output file: .nii.gz, .nii, .nrrd or .mha")
    p.add_argument("--series", help="DICOM series to convert (UID, number or description)")
    p.add_argument("--labels", action="store_true", help="the input is a label map (kept integer)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=convert)

    p = add_command(sub, "phantom", "write synthetic multi-sequence brain tumour cases with known labels and misalignments",
             "mriseg phantom --out phantoms/ --cases 3 --seed 7")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per case)")
    p.add_argument("--cases", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    p.add_argument("--spacing", type=float, default=1.0, help="reference grid spacing in mm (default 1.0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing case folders")
    p.set_defaults(func=phantom)

    p = add_command(sub, "demo", "open napari with the bundled sample case and the plugin docked",
             "mriseg demo --headless --out demo_out/")
    p.add_argument("--headless", action="store_true",
                   help="run the pipeline on the sample case without a window; write outputs and screenshots")
    p.add_argument("--out", default="mriseg_demo", help="output folder for --headless (default mriseg_demo)")
    p.set_defaults(func=demo)


def info(args: argparse.Namespace) -> int:
    from ..core.info import format_summary, path_summary

    summary = path_summary(args.path)
    sys.stdout.write((json.dumps(summary, indent=2) if args.json else format_summary(summary)) + "\n")
    return 0


def convert(args: argparse.Namespace) -> int:
    from ..core.io import read_volumes, write_volume

    series = int(args.series) if args.series and args.series.isdigit() else args.series
    volumes = read_volumes(args.input, kind="label" if args.labels else "image", series=series)
    if len(volumes) != 1:
        raise InvalidImageError(f"holds {len(volumes)} volumes; convert writes one (choose a series, "
                                "or split a 4D file with `mriseg info` first)", path=args.input)
    out = write_volume(volumes[0], args.output, overwrite=args.overwrite)
    sys.stdout.write(f"wrote {out}\n")
    return 0


def phantom(args: argparse.Namespace) -> int:
    from ..core.phantom import make_phantom

    if args.cases < 1:
        raise InvalidImageError(f"--cases must be at least 1; got {args.cases}")
    folders = make_phantom(Path(args.out), cases=args.cases, seed=args.seed, spacing_mm=args.spacing,
                           overwrite=args.overwrite)
    for folder in folders:
        sys.stdout.write(f"wrote {folder}\n")
    return 0


def _ensure_display() -> None:
    """On Linux without a display, run this command again under a virtual X server (Xvfb)."""
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        raise MriSegError("no display: run on a desktop, or install Xvfb (apt-get install xvfb) "
                          "so that the demo can use a virtual one")
    argv = sys.argv[1:]
    if "--headless" not in argv:  # nobody could see a window: write what it would show instead
        sys.stderr.write("mriseg demo: no display; running --headless under Xvfb instead\n")
        argv.append("--headless")
    os.execv(xvfb, [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "napari_mriseg", *argv])


def demo(args: argparse.Namespace) -> int:
    _ensure_display()
    from .._napari.demo import run_demo, run_headless

    if args.headless:
        for path in run_headless(Path(args.out)):
            sys.stdout.write(f"wrote {path}\n")
        return 0
    run_demo()
    return 0
