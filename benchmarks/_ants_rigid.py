"""Child of bench_registration.py: ANTsPy ``Rigid`` on pairs of NIfTI files, in its own interpreter.

antspyx pins numpy<2.4 and scipy<1.16, so it lives in a separate environment; this script imports
nothing of napari-mriseg. Reads a JSON list of ``[fixed.nii.gz, moving.nii.gz]`` on stdin, writes
one JSON line per pair: seconds spent in ``ants.registration`` (images already loaded) and the
path of the forward transform (ITK .mat: reference world -> moving world, as SimpleITK reads it).
"""

import json
import os
import shutil
import sys
import time

import ants


def main() -> None:
    pairs = json.load(sys.stdin)
    for fixed_path, moving_path in pairs:
        fixed, moving = ants.image_read(fixed_path), ants.image_read(moving_path)
        t0 = time.perf_counter()
        reg = ants.registration(fixed, moving, type_of_transform="Rigid")
        seconds = time.perf_counter() - t0
        out = moving_path.replace(".nii.gz", "_ants.mat")
        shutil.copy(reg["fwdtransforms"][0], out)
        print(json.dumps({"seconds": seconds, "transform": out,
                          "threads": os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}), flush=True)


if __name__ == "__main__":
    main()
