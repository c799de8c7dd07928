"""Registration accuracy sweep and speed benchmark (MNI152 template, known rigid transforms).

Fixed: the MNI T1 at 1 mm. Moving: a T2- or FLAIR-like image made from the template's tissue maps,
on a 1x1x3 mm grid, misaligned by a random rigid transform (<= 10 deg about each axis, <= 15 mm
along each), with Rician noise. TRE = mean distance over brain voxels between the points mapped by
the estimated and by the true transform.

Methods: (a) ours, `napari_mriseg.core.registration.register`; (b) the textbook setup of
SimpleITK's registration notebooks (Mattes MI 50 bins, 1 % random sampling, gradient descent,
shrink 4/2/1, smoothing 2/1/0 mm, geometry-centred start); (c) ANTsPy ``Rigid`` if importable.

    .venv/bin/python benchmarks/bench_registration.py --n 20 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from napari_mriseg.core.convert import to_sitk
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="number of random transforms (default 20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-textbook", action="store_true")
    args = p.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    settings = RegistrationSettings(threads=args.threads)
    rows = []
    for seed in range(args.n):
        contrast = ("t2", "flair")[seed % 2]
        fixed, moving, truth, brain = mni_pair(100 + seed, contrast=contrast)
        points = mask_points(brain, max_points=20000)
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
        rows.append((t_ours, tre_ours, t_tb, tre_tb))
        print(f"{seed:2d} {contrast:5s} ours {t_ours:5.2f} s TRE {tre_ours:5.3f} mm | textbook {t_tb:5.2f} s "
              f"TRE {tre_tb:6.3f} mm | ratio {t_tb / t_ours:4.1f}x", flush=True)
    a = np.asarray(rows)
    for label, t, e in (("ours", a[:, 0], a[:, 1]), ("textbook (b)", a[:, 2], a[:, 3])):
        print(f"{label:13s} time median {np.median(t):.2f} s, total {t.sum():.1f} s | TRE median "
              f"{np.median(e):.3f} mm, 95th {np.percentile(e, 95):.3f} mm, worst {e.max():.3f} mm, "
              f"failures (>0.5 mm) {int((e > 0.5).sum())}/{len(e)}")
    print(f"speed ratio (b)/(a): median {np.median(a[:, 2] / a[:, 0]):.1f}x, total {a[:, 2].sum() / a[:, 0].sum():.1f}x")
    try:
        import ants  # noqa: F401
    except ImportError:
        print("(c) ANTsPy: not installed; not compared")


if __name__ == "__main__":
    main()
