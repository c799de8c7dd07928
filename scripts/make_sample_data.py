"""Write the synthetic sample case shipped in ``sample_data/sample_case/`` (seeded, reproducible).

    python scripts/make_sample_data.py            # (re)writes sample_data/sample_case/
    python scripts/make_sample_data.py --check    # regenerates in memory and compares with the files

The case is one phantom (`napari_mriseg.core.phantom.make_phantom_case`) with seed `SEED` on a
`SPACING_MM` mm reference grid: the t1 grid covers the head with about 12 mm of air around it, so
the whole case takes under 4 MB. The script also writes ``sample_data/LICENSE-MNI152.txt``, the
notice of the MNI ICBM152 2009a template the anatomy is derived from. ``sample_data/README.md``
describes the files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_mriseg.core.io import read_volume  # noqa: E402
from napari_mriseg.core.phantom import (  # noqa: E402
    MNI152_NOTICE,
    SEQUENCES,
    make_phantom_case,
    write_phantom_case,
)

SEED = 42
SPACING_MM = 2.0
SAMPLE_DATA = ROOT / "sample_data"
CASE_DIR = SAMPLE_DATA / "sample_case"


def check(folder: Path) -> int:
    """0 if the files in ``folder`` are exactly what the generator makes now, else 1."""
    pc = make_phantom_case(SEED, spacing_mm=SPACING_MM)
    bad = []
    for name in SEQUENCES:
        vol = read_volume(folder / f"{name}.nii.gz")
        if vol.grid.mismatch(pc.case[name].grid) is not None or not np.array_equal(vol.array, pc.case[name].array):
            bad.append(name)
    labels = read_volume(folder / "labels.nii.gz", kind="label")
    if labels.grid.mismatch(pc.truth.grid) is not None or not np.array_equal(labels.array, pc.truth.array):
        bad.append("labels")
    if bad:
        print(f"differs from the generator: {', '.join(bad)}; rerun scripts/make_sample_data.py")
        return 1
    print(f"{folder} matches make_phantom_case({SEED}, spacing_mm={SPACING_MM})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped files with a fresh run")
    parser.add_argument("--out", type=Path, default=CASE_DIR, help=f"case folder (default {CASE_DIR})")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.out)
    pc = make_phantom_case(SEED, spacing_mm=SPACING_MM)
    write_phantom_case(pc, args.out, overwrite=True)
    (args.out.parent / "LICENSE-MNI152.txt").write_text(MNI152_NOTICE)
    total = sum(p.stat().st_size for p in args.out.parent.rglob("*") if p.is_file())
    for path in sorted(args.out.iterdir()):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1e6:.2f} MB")
    print(f"{args.out.parent.relative_to(ROOT)}: {total / 1e6:.2f} MB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
