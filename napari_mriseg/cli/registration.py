"""``mriseg register``: co-register the sequences of a case onto its reference grid."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DESCRIPTION = """co-register all sequences of a case onto the reference sequence's grid; writes the
resampled volumes ({name}.nii.gz), the transforms ({name}_to_{reference}.tfm, ITK format: 3D Slicer,
ITK-SNAP and ANTs read them) and registration.json (quality figures), the report last.

example:
  mriseg register case_folder/ --reference t1 --out registered/ --transform rigid"""


def add_commands(sub) -> None:
    """Add ``register`` to the ``mriseg`` sub-parsers."""
    p = sub.add_parser("register", help="co-register the sequences of a case onto the reference grid",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", help="case folder, 4D NIfTI or DICOM folder")
    p.add_argument("--reference", default=None, help="reference sequence (default: t1, else the first)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--transform", default="rigid", help="rigid (default), affine or bspline")
    p.add_argument("--mask", default="none",
                   help="where the metric samples the reference: none (head box, default), head, or a label "
                        "file on the reference grid (e.g. a brain mask)")
    p.add_argument("--init", default="moments", help="moments (default), geometry, search or none")
    p.add_argument("--interpolation", default="linear", help="linear (default) or bspline for the images")
    p.add_argument("--strict", action="store_true", help="fail (write nothing) if a result looks implausible")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=register)


def register(args: argparse.Namespace) -> int:
    """Handler of ``mriseg register``; returns the exit code (0 also when a result is flagged)."""
    from ..core.case import load_case
    from ..core.errors import check_choice
    from ..core.io import read_volume
    from ..core.registration import INITIALIZATIONS, TRANSFORMS, register_case, write_registration

    check_choice("--transform", args.transform, TRANSFORMS)
    check_choice("--init", args.init, INITIALIZATIONS)
    check_choice("--interpolation", args.interpolation, ("linear", "bspline"))
    case = load_case(args.case, reference=args.reference)
    mask = args.mask
    if mask not in ("none", "head"):
        mask = read_volume(Path(mask), kind="label")

    def progress(fraction: float, message: str) -> None:
        log.info("%3.0f%% %s", 100.0 * fraction, message)

    result = register_case(case, transform=args.transform, mask=mask, initialization=args.init,
                           interpolation=args.interpolation, progress=progress, strict=args.strict)
    out = write_registration(result, args.out, overwrite=args.overwrite)
    report = result.report()
    for name, q in report["sequences"].items():
        flag = "ok" if q["plausible"] else "CHECK: " + "; ".join(q["problems"])
        sys.stdout.write(f"{name}: rotation {q['rotation_deg']:.2f} deg, brain box moved up to "
                         f"{q['max_corner_shift_mm']:.1f} mm, metric {q['metric_final']:.4f}, {q['seconds']:.1f} s, {flag}\n")
    sys.stdout.write(f"wrote {out} ({json.dumps(sorted(p.name for p in out.iterdir()))})\n")
    return 0
