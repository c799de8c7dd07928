"""Co-register the sequences of a case onto the reference sequence's grid (SimpleITK).

`register` aligns one moving volume to a fixed one; `register_case` aligns every sequence of a
case to its reference and returns the co-registered case with per-sequence transforms and quality
figures (`napari_mriseg.core.registration_quality`). Transforms follow ITK: ``T`` maps a point of
the reference (fixed) world to the moving world, so ``Resample(moving, reference, T)`` aligns the
moving image; they are saved as ITK ``.tfm`` files (3D Slicer, ITK-SNAP, ANTs read them).

The method: Mattes mutual information sampled on a regular grid inside a head mask of the
reference, an image pyramid built once by block averaging (4 then 2 mm by default: sub-millimetre
accuracy for rigid motion without touching every 1 mm voxel), regular-step gradient descent that
stops when its step falls below a hundredth of the level's spacing, and a start from the centres of
mass of the two head masks (plus a coarse rotation search for ``initialization="search"``).
The optional B-spline stage adds a coarse (80 mm) cubic B-spline on top of the rigid result,
optimised by L-BFGS-B at the finest level. Progress goes to a plain callback that can cancel
between iterations.

What makes it fast (``benchmarks/bench_registration.py`` compares it with the textbook setup of
SimpleITK's notebooks and with ANTsPy): both images are cropped to their heads, the pyramid is
block-averaged once instead of Gaussian-smoothed per level, the finest level is 2 mm rather than
the 1 mm image, the metric sees 4000 then 16000 regular samples inside the head box (the
textbook's 1 % of a 1 mm head is about 70000 random samples per iteration at full resolution),
the optimiser stops on a step of a two-hundredth of the level's spacing instead of running a
fixed number of iterations, and the metric at a level's start and end is read from the
optimiser's own iterations rather than evaluated again (each evaluation at 2 mm costs about as
much as 10 iterations).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import convert
from .case import Case
from .errors import MriSegError, check_choice
from .registration_quality import RegistrationQuality, assess, box_corners
from .resample import INTERPOLATIONS, resample_to_grid
from .volume import Grid, Volume

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

log = logging.getLogger(__name__)

TRANSFORMS = ("rigid", "affine", "bspline")
INITIALIZATIONS = ("moments", "geometry", "search", "none")
MASKS = ("head", "none")
#: Name of the JSON report `write_registration` writes last.
REPORT_NAME = "registration.json"

#: ``progress(fraction in [0, 1], message)``; returning False (or raising `Cancelled`) cancels.
ProgressCallback = Callable[[float, str], "bool | None"]


class RegistrationError(MriSegError, RuntimeError):
    """A registration could not be done or gave an unusable result (no overlap, empty image,
    diverged); the case's data is untouched."""


class RegistrationCancelled(RegistrationError):
    """The progress callback asked to stop; nothing was changed or written."""


class Cancelled(Exception):  # noqa: N818 - a signal raised by a user's callback, not an error
    """Raise from a progress callback to cancel a registration (same as returning False)."""


@dataclass(frozen=True)
class RegistrationSettings:
    """Parameters of the optimisation (JSON-serialisable with `dataclasses.asdict`).

    Attributes
    ----------
    levels_mm : tuple of float
        Voxel size (mm) of each pyramid level, coarse to fine; a level never goes finer than an
        image's own spacing.
    samples : tuple of int
        Metric samples per level (regular grid inside the mask).
    bins : int
        Histogram bins of Mattes mutual information.
    max_iterations : int
        Per level.
    min_step : float
        Optimiser stop: smallest step, as a fraction of the level's spacing (mm / mm).
    bspline_grid_mm : float
        Control-point spacing (mm) of the B-spline stage. Coarse on purpose: at 50 mm (about 1000
        parameters over a head) Mattes MI between two contrasts is lowered further by spurious
        warps (bias fields, thick slices, noise) than by the true deformation, and the result
        drifts away from it; 80 mm recovers smooth deformations (see tests/test_registration.py).
    bspline_samples : int
        Metric samples of the B-spline stage (regular grid on the finest level): twice the
        linear stage's, since a deformable metric estimate is noisier.
    bspline_iterations : int
        L-BFGS-B iterations of the B-spline stage (it usually stops earlier on its own tolerance).
    threads : int
        SimpleITK threads (0: SimpleITK's default).
    """

    levels_mm: tuple[float, ...] = (4.0, 2.0)
    samples: tuple[int, ...] = (4000, 16000)
    bins: int = 32
    max_iterations: int = 200
    min_step: float = 0.005
    bspline_grid_mm: float = 80.0
    bspline_samples: int = 32000
    bspline_iterations: int = 100
    threads: int = 0

    def __post_init__(self) -> None:
        if len(self.levels_mm) != len(self.samples) or not self.levels_mm:
            raise RegistrationError(f"levels_mm {self.levels_mm} and samples {self.samples} must have the same "
                                    "non-zero length")


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """One moving volume registered to the reference.

    Attributes
    ----------
    name : str
        The moving sequence.
    transform : SimpleITK.Transform
        Reference world -> moving world (ITK convention); `save_transform` writes it.
    volume : Volume
        The moving volume resampled onto the reference grid.
    quality : RegistrationQuality
    seconds : float
        Wall time of the registration.
    """

    name: str
    transform: Any
    volume: Volume
    quality: RegistrationQuality
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class CaseRegistration:
    """`register_case`'s result: the co-registered case and what happened to each sequence."""

    case: Case
    results: Mapping[str, RegistrationResult]
    transform_type: str
    settings: RegistrationSettings = field(default_factory=RegistrationSettings)

    def report(self) -> dict[str, Any]:
        """A JSON-serialisable summary (reference, settings, quality and timing per sequence)."""
        return {
            "reference": self.case.reference,
            "transform": self.transform_type,
            "settings": asdict(self.settings),
            "sequences": {n: {"seconds": round(r.seconds, 3), **r.quality.to_dict()} for n, r in self.results.items()},
        }


# --------------------------------------------------------------------------- helpers
def _sitk():
    import SimpleITK as sitk

    return sitk


def head_mask(volume: Volume) -> Volume:
    """Foreground (head) label map of an MR image: voxels above 10 % of its 99.5th percentile,
    holes filled, small islands dropped. Raises `RegistrationError` for an empty image."""
    from scipy import ndimage

    arr = np.asarray(volume.array, dtype=np.float32)
    # the threshold from every 7th voxel (a prime stride: no aliasing with the grid); a percentile
    # of millions of voxels moves by far less than the 10 % margin below
    sample = arr.reshape(-1)[::7] if arr.size > 70_000 else arr.reshape(-1)
    finite = sample[np.isfinite(sample)]
    top = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    if not top > 0:
        raise RegistrationError(f"{volume.name or 'the image'} is empty (all voxels zero or not finite): "
                                "nothing to register")
    mask = arr > 0.1 * top
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = sizes[labels] >= 0.05 * sizes.max()
    return volume.with_array(mask.astype(np.uint8), kind="label", name="head")


@dataclass(frozen=True)
class _MaskExtent:
    """Bounding box (voxel indices, (Z, Y, X), ``hi`` exclusive) and centre of mass (voxels)."""

    lo: np.ndarray
    hi: np.ndarray
    centre: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _MaskExtent:
        """From the axis projections of ``mask`` (two passes over it, no index list)."""
        b = np.asarray(mask) != 0
        yx = b.sum(0, dtype=np.int64)
        counts = [b.reshape(b.shape[0], -1).sum(1, dtype=np.int64), yx.sum(1), yx.sum(0)]
        total = float(counts[1].sum())
        if total == 0:
            raise RegistrationError("the mask is empty")
        nz = [np.flatnonzero(c) for c in counts]
        return cls(np.array([i[0] for i in nz]), np.array([i[-1] + 1 for i in nz]),
                   np.array([float(np.dot(c, np.arange(len(c)))) / total for c in counts]))


def _crop(image: sitk.Image, extent: _MaskExtent, margin_mm: float) -> sitk.Image:
    """``image`` cropped to the mask's (Z, Y, X) bounding box plus ``margin_mm``."""
    sitk = _sitk()
    spacing = np.asarray(image.GetSpacing())[::-1]
    shape = np.asarray(image.GetSize())[::-1]
    lo = np.maximum(extent.lo - np.ceil(margin_mm / spacing), 0).astype(int)
    hi = np.minimum(extent.hi + np.ceil(margin_mm / spacing), shape).astype(int)
    return sitk.RegionOfInterest(image, (hi - lo)[::-1].tolist(), lo[::-1].tolist())


def _shrink(image: sitk.Image, level_mm: float) -> sitk.Image:
    """Block-average ``image`` to about ``level_mm`` voxels (never finer than it is)."""
    factors = [max(1, int(round(level_mm / s))) for s in image.GetSpacing()]
    return image if max(factors) == 1 else _sitk().BinShrink(image, factors)


def _centre_of_mass_xyz(grid: Grid, extent: _MaskExtent) -> np.ndarray:
    return grid.index_to_world(extent.centre)[::-1]


def _metric(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image, transform: sitk.Transform,
            settings: RegistrationSettings, samples: int) -> float | None:
    """Mattes MI of ``transform`` on regular samples; None when the images do not overlap."""
    r = _method(fixed, mask, settings, samples)
    # a value needs no gradient: skip the gradient images ITK would otherwise compute first
    r.MetricUseFixedImageGradientFilterOff()
    r.MetricUseMovingImageGradientFilterOff()
    r.SetInitialTransform(transform, inPlace=False)
    try:
        value = r.MetricEvaluate(fixed, moving)
    except RuntimeError:
        return None
    return float(value) if np.isfinite(value) and value != 0.0 else None


def _method(fixed: sitk.Image, mask: sitk.Image, settings: RegistrationSettings, samples: int):
    sitk = _sitk()
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.bins)
    if mask is not None:
        r.SetMetricFixedMask(mask)
        n_mask = max(1.0, float(sitk.GetArrayViewFromImage(mask).sum()))
    else:
        n_mask = float(np.prod(fixed.GetSize()))
    r.SetMetricSamplingStrategy(r.REGULAR)
    r.SetMetricSamplingPercentage(min(1.0, samples / n_mask), 1)
    r.SetInterpolator(sitk.sitkLinear)
    if settings.threads:
        r.SetNumberOfThreads(settings.threads)
    return r


@dataclass
class _Level:
    fixed: Any
    moving: Any
    mask: Any
    spacing: float
    samples: int


def _pyramid(fixed: Volume, moving: Volume, fhead: _MaskExtent, fmask: Volume | None, mhead: _MaskExtent,
             settings: RegistrationSettings) -> list[_Level]:
    """Both images cropped to their heads (+10 mm) and block-averaged to each level's spacing."""
    sitk = _sitk()
    f = _crop(convert.to_sitk(fixed.with_array(fixed.array.astype(np.float32))), fhead, 10.0)
    m = _crop(convert.to_sitk(moving.with_array(moving.array.astype(np.float32))), mhead, 10.0)
    mk = None if fmask is None else _crop(sitk.Cast(convert.to_sitk(fmask), sitk.sitkFloat32), fhead, 10.0)
    levels = []
    for mm, n in zip(settings.levels_mm, settings.samples):
        fl = _shrink(f, mm)
        ml = _shrink(m, mm)
        kl = None if mk is None else sitk.Cast(_shrink(mk, mm) > 0.0, sitk.sitkUInt8)
        levels.append(_Level(fl, ml, kl, max(mm, min(fl.GetSpacing())), n))
    return levels


def _rotation_search(level: _Level, start: sitk.Euler3DTransform, settings: RegistrationSettings,
                     degrees: Sequence[float] = (-30.0, -15.0, 15.0, 30.0)) -> sitk.Euler3DTransform:
    """The start rotated by the best of 0 and each of ``degrees`` about each axis (coarse level)."""
    sitk = _sitk()
    best, best_value = start, _metric(level.fixed, level.moving, level.mask, start, settings, level.samples)
    for axis in range(3):
        for deg in degrees:
            cand = sitk.Euler3DTransform(start)
            angles = [cand.GetAngleX(), cand.GetAngleY(), cand.GetAngleZ()]
            angles[axis] += np.deg2rad(deg)
            cand.SetRotation(*angles)
            value = _metric(level.fixed, level.moving, level.mask, cand, settings, level.samples)
            if value is not None and (best_value is None or value < best_value):
                best, best_value = cand, value
    return sitk.Euler3DTransform(best)


class _Progress:
    """Calls the user's callback from SimpleITK's iteration events; stops the optimiser on cancel."""

    def __init__(self, progress: ProgressCallback | None, n_stages: int, name: str) -> None:
        self.progress, self.n_stages, self.name = progress, n_stages, name
        self.stage, self.cancelled, self.error = 0, False, None

    def report(self, fraction: float, message: str, method=None) -> None:
        if self.progress is None or self.cancelled:
            return
        try:
            answer = self.progress(min(max(fraction, 0.0), 1.0), message)
        except Cancelled:
            answer = False
        except Exception as exc:  # re-raised after SimpleITK returns
            self.error, answer = exc, False
        if answer is False:
            self.cancelled = True
            if method is not None:
                method.StopRegistration()

    def attach(self, method, label: str) -> list[float]:
        """Report ``method``'s iterations; returns the list its metric values are appended to
        (the first is the value at the start, the last the value one step before the end)."""
        sitk = _sitk()
        stage = self.stage
        values: list[float] = []

        def on_iteration() -> None:
            it = method.GetOptimizerIteration()
            values.append(method.GetMetricValue())
            frac = (stage + 1.0 - np.exp(-it / 25.0)) / self.n_stages
            self.report(frac, f"{self.name}: {label}, iteration {it}, metric {values[-1]:.4f}", method)

        method.AddCommand(sitk.sitkIterationEvent, on_iteration)
        self.stage += 1
        return values

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.cancelled:
            raise RegistrationCancelled(f"registration of {self.name} cancelled; nothing was changed")


def _run(method, level: _Level, tracker: _Progress, label: str) -> list[float]:
    """Execute ``method`` on ``level``; returns the metric value of each iteration."""
    values = tracker.attach(method, label)
    tracker.check()
    try:
        method.Execute(level.fixed, level.moving)
    except RuntimeError as exc:
        tracker.check()
        text = str(exc)
        if "outside" in text or "sufficient" in text.lower() or "samples" in text.lower():
            raise RegistrationError(f"{tracker.name} does not overlap the reference enough to register "
                                    f"({label}); check that both images show the same head") from exc
        raise RegistrationError(f"registration of {tracker.name} failed ({label}): "
                                f"{text.strip().splitlines()[-1]}") from exc
    tracker.check()
    return values


def _optimise_linear(levels: list[_Level], tx: Any, settings: RegistrationSettings,
                     tracker: _Progress, label: str) -> float | None:
    """Optimise ``tx`` in place level by level; a level that ends with a worse metric than it
    started with (the optimiser climbed away, as affine can on a low-contrast pair) is undone.

    The metric at a level's start and end comes from the optimiser's own iterations (its first
    value, and its last, one small step before the end), not from extra evaluations. Returns
    the metric of the result on the finest level (None: no overlap).
    """
    end_metric = None
    for level in levels:
        start_params = tx.GetParameters()
        r = _method(level.fixed, level.mask, settings, level.samples)
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=level.spacing, minStep=settings.min_step * level.spacing,
            numberOfIterations=settings.max_iterations, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetInitialTransform(tx, inPlace=True)
        values = _run(r, level, tracker, f"{label} at {level.spacing:g} mm")
        if not values:  # stopped before its first iteration: evaluate directly
            values = [_metric(level.fixed, level.moving, level.mask, tx, settings, level.samples)]
        start_metric, end_metric = values[0], values[-1]
        if start_metric is not None and (end_metric is None or end_metric > start_metric):
            log.warning("%s: %s at %g mm made the metric worse (%.4f -> %s); that level is undone",
                        tracker.name, label, level.spacing, start_metric,
                        "no overlap" if end_metric is None else f"{end_metric:.4f}")
            tx.SetParameters(start_params)
            end_metric = start_metric
    return end_metric


def _optimise_bspline(level: _Level, linear: Any, settings: RegistrationSettings, tracker: _Progress) -> Any:
    """A cubic B-spline (control points every ``bspline_grid_mm`` over the cropped reference) on
    top of ``linear``, optimised by L-BFGS-B at the finest level; returns linear(bspline(p))."""
    sitk = _sitk()
    size_mm = np.asarray(level.fixed.GetSize()) * np.asarray(level.fixed.GetSpacing())
    mesh = [max(1, int(round(s / settings.bspline_grid_mm))) for s in size_mm]
    bspline = sitk.BSplineTransformInitializer(level.fixed, mesh, 3)
    r = _method(level.fixed, level.mask, settings, settings.bspline_samples)
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=settings.bspline_iterations,
                           maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * settings.bspline_iterations,
                           costFunctionConvergenceFactor=1e7)
    r.SetMovingInitialTransform(linear)
    r.SetInitialTransform(bspline, inPlace=True)
    _run(r, level, tracker, f"B-spline at {level.spacing:g} mm")
    return sitk.CompositeTransform([linear, bspline])


# --------------------------------------------------------------------------- public API
def register(fixed: Volume, moving: Volume, *, transform: str = "rigid", mask: Volume | str | None = None,
             initialization: str = "moments", interpolation: str = "linear",
             settings: RegistrationSettings | None = None, progress: ProgressCallback | None = None,
             name: str | None = None) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` and resample it onto ``fixed``'s grid.

    Parameters
    ----------
    fixed, moving : Volume
        Images on any grids (array ``(Z, Y, X)``, LPS world); neither is modified.
    transform : {"rigid", "affine", "bspline"}
        Affine and B-spline start from the rigid result (B-spline from rigid rather than affine:
        as accurate on smooth deformations, and safe where the affine stage is not).
    mask : Volume, "head", "none" or None
        Where the metric samples the fixed image: a label map on ``fixed``'s grid (non-zero voxels;
        a brain mask for example), ``"head"`` (automatic foreground, `head_mask`) or None/"none"
        (default: the head's bounding box plus 10 mm, so that the head's outline counts too).
    initialization : {"moments", "geometry", "search", "none"}
        Start: align the centres of mass of the head masks, the grid centres, the centres of mass
        followed by a coarse rotation search (+-15, +-30 deg about each axis: for large head
        rotations), or the scanner's own alignment.
    interpolation : {"linear", "bspline"}
        For the resampled image (labels are always nearest: see `apply_transform`).
    settings : RegistrationSettings, optional
    progress : callable, optional
        ``progress(fraction, message)``, called between iterations; return False or raise
        `Cancelled` to stop (then `RegistrationCancelled` is raised).
    name : str, optional
        Used in messages; defaults to ``moving.name``.

    Raises
    ------
    RegistrationError
        Empty image, no overlap, or the optimiser failed. `RegistrationCancelled` on cancel.
    """
    sitk = _sitk()
    check_choice("transform", transform, TRANSFORMS)
    check_choice("initialization", initialization, INITIALIZATIONS)
    check_choice("interpolation", interpolation, INTERPOLATIONS[1:])
    settings = settings or RegistrationSettings()
    name = name or moving.name or "moving"
    t0 = time.perf_counter()
    mhead = _MaskExtent.of(head_mask(moving.with_array(moving.array, name=name)).array)
    fhead_mask = head_mask(fixed.with_array(fixed.array, name=fixed.name or "reference"))
    fhead = _MaskExtent.of(fhead_mask.array)
    fmask: Volume | None
    if isinstance(mask, str):
        check_choice("mask", mask, MASKS)
        fmask = fhead_mask if mask == "head" else None
    elif mask is None:
        fmask = None
    else:
        fixed.grid.check_same(mask.grid, this_name="the reference", other_name="the mask")
        if not np.any(mask.array):
            raise RegistrationError("the registration mask is empty")
        fmask = mask
    n_stages = len(settings.levels_mm) * (2 if transform == "affine" else 1) + (transform == "bspline")
    tracker = _Progress(progress, n_stages + 1, name)
    tracker.report(0.0, f"{name}: preparing")
    tracker.check()
    levels = _pyramid(fixed, moving, fhead, fmask, mhead, settings)

    rigid = sitk.Euler3DTransform()
    c_fixed = _centre_of_mass_xyz(fixed.grid, fhead)
    if initialization in ("moments", "search"):
        rigid.SetCenter(c_fixed.tolist())
        rigid.SetTranslation((_centre_of_mass_xyz(moving.grid, mhead) - c_fixed).tolist())
    elif initialization == "geometry":
        init = sitk.CenteredTransformInitializer(convert.to_sitk(fixed), convert.to_sitk(moving), sitk.Euler3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.GEOMETRY)
        rigid = sitk.Euler3DTransform(init)
    else:
        rigid.SetCenter(c_fixed.tolist())
    if initialization in ("moments", "search"):
        # the scanner's alignment may be better than the centres of mass (a head cut differently
        # by two fields of view moves its centre of mass): start from whichever fits better
        scanner = sitk.Euler3DTransform()
        scanner.SetCenter(c_fixed.tolist())
        coarse = levels[0]
        m_moments = _metric(coarse.fixed, coarse.moving, coarse.mask, rigid, settings, coarse.samples)
        m_scanner = _metric(coarse.fixed, coarse.moving, coarse.mask, scanner, settings, coarse.samples)
        if m_scanner is not None and (m_moments is None or m_scanner < m_moments):
            rigid = scanner
        overlap = m_moments is not None or m_scanner is not None
    if initialization == "search":
        rigid = _rotation_search(levels[0], rigid, settings)
    if initialization != "moments":
        overlap = _metric(levels[0].fixed, levels[0].moving, levels[0].mask, rigid, settings,
                          levels[0].samples) is not None
    if not overlap:
        raise RegistrationError(f"{name} does not overlap the reference (even after aligning the centres of "
                                "the heads): check that both images show the same head")
    metric_final = _optimise_linear(levels, rigid, settings, tracker, "rigid")
    result: Any = rigid
    if transform in ("affine", "bspline"):
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        if transform == "affine":
            metric_final = _optimise_linear(levels, affine, settings, tracker, "affine")
            result = affine
        else:
            result = _optimise_bspline(levels[-1], rigid, settings, tracker)
            metric_final = None  # its optimiser samples differently: evaluate on the linear stages' samples
    final = levels[-1]
    identity = sitk.Euler3DTransform()
    n_eval = final.samples
    metric_identity = _metric(final.fixed, final.moving, final.mask, identity, settings, n_eval)
    if metric_final is None:
        metric_final = _metric(final.fixed, final.moving, final.mask, result, settings, n_eval)
    if metric_final is None:
        raise RegistrationError(f"registration of {name} diverged: the result maps the reference outside "
                                f"the {name} image")
    quality = assess(result, box_corners(fixed.grid, fhead_mask.array), metric_identity, metric_final)
    if not quality.plausible:
        log.warning("registration of %s looks implausible: %s", name, "; ".join(quality.problems))
    tracker.report(n_stages / (n_stages + 1.0), f"{name}: resampling")
    tracker.check()
    resampled = apply_transform(moving, result, fixed.grid, interpolation=interpolation)
    seconds = time.perf_counter() - t0
    tracker.report(1.0, f"{name}: done in {seconds:.1f} s")
    log.info("registered %s (%s) in %.2f s: metric %.4f (identity %s)", name, transform, seconds,
             metric_final, "n/a" if metric_identity is None else f"{metric_identity:.4f}")
    return RegistrationResult(name, result, resampled.with_array(resampled.array, name=name), quality, seconds)


def register_case(case: Case, *, reference: str | None = None, transform: str = "rigid",
                  mask: Volume | str | None = None, initialization: str = "moments",
                  interpolation: str = "linear", names: Sequence[str] | None = None,
                  settings: RegistrationSettings | None = None, progress: ProgressCallback | None = None,
                  strict: bool = False) -> CaseRegistration:
    """Register every sequence of ``case`` to the reference and resample it onto its grid.

    Parameters
    ----------
    case : Case
        Not modified.
    reference : str, optional
        Reference sequence (default: the case's). Its voxels are kept as they are.
    transform, mask, initialization, interpolation, settings
        As in `register`.
    names : sequence of str, optional
        Sequences to register (default: all but the reference); the others are kept as they are.
    progress : callable, optional
        ``progress(fraction, message)`` over the whole case; return False to cancel.
    strict : bool
        Raise `RegistrationError` when a result looks implausible (default: log a warning and
        flag it in the quality figures).

    Returns
    -------
    CaseRegistration
        ``.case`` has every sequence on the reference grid (same labels, reference set).
    """
    reference = reference or case.reference
    ref = case[reference]
    names = [n for n in (names if names is not None else case.names) if n != reference]
    for n in names:
        case[n]  # KeyError listing the sequences for an unknown name
    settings = settings or RegistrationSettings()
    labels = case.labels
    if labels is not None and reference != case.reference:
        labels = None  # labels live on the old reference's grid
        log.warning("reference changed from %s to %s: labels are dropped", case.reference, reference)
    results: dict[str, RegistrationResult] = {}
    for i, name in enumerate(names):
        def sub(fraction: float, message: str, i: int = i) -> bool | None:
            return None if progress is None else progress((i + fraction) / len(names), message)

        res = register(ref, case[name], transform=transform, mask=mask, initialization=initialization,
                       interpolation=interpolation, settings=settings, progress=sub, name=name)
        if strict and not res.quality.plausible:
            raise RegistrationError(f"registration of {name} looks implausible: " + "; ".join(res.quality.problems))
        results[name] = res
    seqs = {n: (results[n].volume if n in results else v) for n, v in case.sequences.items()}
    for n, v in seqs.items():
        if n not in results and n != reference and ref.grid.mismatch(v.grid) is not None:
            seqs[n] = resample_to_grid(v, ref.grid)
    out = case.replace(sequences=seqs, reference=reference, labels=labels)
    return CaseRegistration(out, results, transform, settings)


def apply_transform(volume: Volume, transform: Any, grid: Grid, *, interpolation: str | None = None,
                    default: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``grid`` through ``transform`` (``grid``'s world -> ``volume``'s world).

    Images default to linear; label maps are always nearest-neighbour and keep their integer type.
    """
    return resample_to_grid(volume, grid, interpolation=interpolation, default=default, transform=transform)


def invert_transform(transform: Any, grid: Grid | None = None) -> Any:
    """The inverse of ``transform`` (moving world -> reference world).

    Rigid and affine transforms invert exactly; a transform with a B-spline part is inverted
    numerically as a displacement field sampled on ``grid`` (required then: the moving grid).
    """
    sitk = _sitk()
    inverse = sitk.Transform(transform)
    if inverse.SetInverse():
        return inverse.Downcast()
    if grid is None:
        raise RegistrationError("a deformable transform needs the moving grid to be inverted (grid=)")
    coarse = Grid(tuple(int(np.ceil(n * s / 2.0)) for n, s in zip(grid.shape, grid.spacing)), (2.0,) * 3,
                  grid.origin, grid.direction)
    geo = convert.grid_to_sitk_geometry(coarse)
    forward = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, list(coarse.shape[::-1]),
                                                geo["origin"], geo["spacing"], geo["direction"])
    inv = sitk.InvertDisplacementField(forward, maximumNumberOfIterations=50, maxErrorToleranceThreshold=0.05,
                                       meanErrorToleranceThreshold=0.001, enforceBoundaryCondition=False)
    return sitk.DisplacementFieldTransform(inv)


def to_native(volume: Volume, transform: Any, native: Grid | Volume) -> Volume:
    """Take ``volume`` (e.g. labels drawn on the reference grid) back to a sequence's native grid.

    ``transform`` is that sequence's registration transform (reference -> sequence world).
    """
    grid = native.grid if isinstance(native, Volume) else native
    return apply_transform(volume, invert_transform(transform, grid), grid)


def save_transform(transform: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``transform`` as an ITK text transform (``.tfm``/``.txt``; 3D Slicer, ITK-SNAP, ANTs),
    whole or not at all. Raises `OutputExistsError` if ``path`` exists and not ``overwrite``."""
    from .io import atomic_write

    p = Path(path)
    if p.suffix.lower() not in (".tfm", ".txt"):
        raise RegistrationError("a transform file must end in .tfm or .txt", path=p)
    return atomic_write(p, lambda tmp: _sitk().WriteTransform(transform, str(tmp)), overwrite=overwrite)


def load_transform(path: str | Path) -> Any:
    """Read an ITK transform file (as written by `save_transform`, Slicer or ANTs)."""
    p = Path(path)
    try:
        return _sitk().ReadTransform(str(p)).Downcast()
    except RuntimeError as exc:
        raise RegistrationError(f"not a readable ITK transform ({str(exc).strip().splitlines()[-1]})",
                                path=p) from exc


def write_registration(result: CaseRegistration, out_dir: str | Path, *, overwrite: bool = False,
                       suffix: str = ".nii.gz") -> Path:
    """Write a co-registered case: ``{name}.nii.gz`` per sequence (on the reference grid),
    ``{name}_to_{reference}.tfm`` per registered sequence, ``labels.nii.gz`` if the case has labels,
    and ``registration.json`` (the report) last.

    Everything is first written into a temporary folder beside ``out_dir`` and then moved in, so an
    error leaves no partial output. Raises `OutputExistsError` before writing anything if a file
    exists and ``overwrite`` is False.
    """
    import json
    import os
    import shutil
    import tempfile

    from .errors import OutputExistsError
    from .io import write_volume

    out = Path(out_dir)
    case, ref = result.case, result.case.reference
    files: dict[str, str] = {n: f"{n}{suffix}" for n in case.names}
    tfms = {n: f"{n}_to_{ref}.tfm" for n in result.results}
    names = [*files.values(), *tfms.values(), *(["labels" + suffix] if case.labels is not None else []),
             REPORT_NAME]
    if not overwrite:
        for fname in names:
            if (out / fname).exists():
                raise OutputExistsError("exists already; choose another folder or allow overwriting", path=out / fname)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mriseg-register-", dir=out))
    try:
        for n, fname in files.items():
            write_volume(case[n], tmp / fname)
        for n, fname in tfms.items():
            save_transform(result.results[n].transform, tmp / fname)
        if case.labels is not None:
            write_volume(case.labels, tmp / ("labels" + suffix))
        report = result.report()
        report["case_id"] = case.case_id
        report["files"] = {"volumes": files, "transforms": tfms}
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        for fname in names:  # the report last: its presence means the outputs are complete
            os.replace(tmp / fname, out / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
