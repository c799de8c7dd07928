"""Registration accuracy sweep and speed benchmark (MNI152 template, known rigid transforms).

Fixed: the MNI T1 at 1 mm. Moving: a T2- or FLAIR-like image made from the template's tissue maps,
on a 1x1x3 mm grid, misaligned by a random rigid transform (<= 10 deg about each axis, <= 15 mm
along each), with Rician noise. TRE = mean distance over brain voxels between the points mapped by
the estimated and by the true transform.

Methods: (a) ours, `napari_mriseg.core.registration.register`; (b) the textbook setup of
SimpleITK's registration notebooks (Mattes MI 50 bins, 1 % random sampling, gradient descent,
shrink 4/2/1, smoothing 2/1/0 mm, geometry-centred start); (c) ANTsPy ``Rigid`` (its defaults:
Mattes MI, 4 levels) when a Python with antspyx is given. antspyx pins numpy<2.4 and scipy<1.16, so
it gets its own environment and runs in a child process (``_ants_rigid.py``) on the same pairs
written as NIfTI; its time is that of ``ants.registration`` alone, with the images loaded.

Times: ours includes the head masks, the pyramid and resampling the moving image onto the
reference grid; (b) and (c) only estimate the transform.

    .venv/bin/python benchmarks/bench_registration.py --n 20 --threads 2
    python3.11 -m venv /tmp/antsenv && /tmp/antsenv/bin/pip install antspyx
    .venv/bin/python benchmarks/bench_registration.py --n 20 --threads 2 --ants-python /tmp/antsenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_mriseg.core.convert import to_sitk
from napari_mriseg.core.io import write_volume
from napari_mriseg.core.registration import RegistrationSettings, register
from napari_mriseg.core.registration_quality import mask_points, mni_pair, target_registration_error


def textbook(fixed, moving) -> sitk.Transform:
    f, m = to_sitk(fixed), sitk.Cast(to_sitk(moving), sitk.sitkFloat32)
    f = sitk.Cast(f, sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(0.01)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6,
                                    convergenceWindowSize=10)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([4, 2, 1])
    r.SetSmoothingSigmasPerLevel([2, 1, 0])
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    r.SetInitialTransform(init, inPlace=False)
    return r.Execute(f, m)


def ants_rigid(python: str, pairs: list[tuple[Path, Path]], threads: int) -> list[tuple[float, sitk.Transform]]:
    """ANTsPy Rigid on each (fixed, moving) NIfTI pair, in ``python``: (seconds, transform) each."""
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([python, str(Path(__file__).with_name("_ants_rigid.py"))], check=True, env=env,
                          input=json.dumps([[str(f), str(m)] for f, m in pairs]), capture_output=True, text=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [(r["seconds"], sitk.ReadTransform(r["transform"])) for r in rows]


def _summary(label: str, t: np.ndarray, e: np.ndarray) -> None:
    print(f"{label:13s} time median {np.median(t):.2f} s, total {t.sum():.1f} s | TRE median "
          f"{np.median(e):.3f} mm, 95th {np.percentile(e, 95):.3f} mm, worst {e.max():.3f} mm, "
          f"failures (>0.5 mm) {int((e > 0.5).sum())}/{len(e)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="number of random transforms (default 20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-textbook", action="store_true")
    p.add_argument("--ants-python", default=os.environ.get("MRISEG_ANTS_PYTHON"),
                   help="a Python interpreter with antspyx installed (or $MRISEG_ANTS_PYTHON): runs (c)")
    args = p.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    settings = RegistrationSettings(threads=args.threads)
    rows, truths, point_sets = [], [], []
    tmp = tempfile.TemporaryDirectory()
    files: list[tuple[Path, Path]] = []
    for seed in range(args.n):
        contrast = ("t2", "flair")[seed % 2]
        fixed, moving, truth, brain = mni_pair(100 + seed, contrast=contrast)
        points = mask_points(brain, max_points=20000)
        truths.append(truth)
        point_sets.append(points)
        if args.ants_python:
            files.append((write_volume(fixed, Path(tmp.name) / f"{seed}_fixed.nii.gz"),
                           write_volume(moving, Path(tmp.name) / f"{seed}_moving.nii.gz")))
        t0 = time.perf_counter()
        ours = register(fixed, moving, settings=settings)
        t_ours = time.perf_counter() - t0
        tre_ours = float(target_registration_error(ours.transform, truth, points).mean())
        t_tb = tre_tb = float("nan")
        if not args.no_textbook:
            t0 = time.perf_counter()
            tb = textbook(fixed, moving)
            t_tb = time.perf_counter() - t0
            tre_tb = float(target_registration_error(tb, truth, points).mean())
        rows.append([t_ours, tre_ours, t_tb, tre_tb, np.nan, np.nan])
        print(f"{seed:2d} {contrast:5s} ours {t_ours:5.2f} s TRE {tre_ours:5.3f} mm | textbook {t_tb:5.2f} s "
              f"TRE {tre_tb:6.3f} mm | ratio {t_tb / t_ours:4.1f}x", flush=True)
    if args.ants_python:
        for k, (seconds, tx) in enumerate(ants_rigid(args.ants_python, files, args.threads)):
            rows[k][4] = seconds
            rows[k][5] = float(target_registration_error(tx, truths[k], point_sets[k]).mean())
            print(f"{k:2d} ANTsPy Rigid {seconds:5.2f} s TRE {rows[k][5]:5.3f} mm | ratio {seconds / rows[k][0]:4.1f}x",
                  flush=True)
    tmp.cleanup()
    a = np.asarray(rows)
    _summary("ours", a[:, 0], a[:, 1])
    if not args.no_textbook:
        _summary("textbook (b)", a[:, 2], a[:, 3])
        print(f"speed ratio (b)/(a): median {np.median(a[:, 2] / a[:, 0]):.1f}x, "
              f"total {a[:, 2].sum() / a[:, 0].sum():.1f}x")
    if args.ants_python:
        _summary("ANTsPy (c)", a[:, 4], a[:, 5])
        print(f"speed ratio (c)/(a): median {np.median(a[:, 4] / a[:, 0]):.1f}x, "
              f"total {a[:, 4].sum() / a[:, 0].sum():.1f}x")
    else:
        print("(c) ANTsPy: not run; pass --ants-python with an interpreter that has antspyx (see the docstring)")


if __name__ == "__main__":
    main()
