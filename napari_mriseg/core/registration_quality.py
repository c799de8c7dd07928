"""How good is a registration? Quality figures, target registration error, and a test pair.

* `assess` turns an estimated transform into figures a clinician can read: the final metric next
  to the metric of the scanner's own alignment (identity), how far each corner of the brain box
  moved (mm), the rotation (degrees), the scale factors, and a list of problems when the result
  looks implausible.
* `target_registration_error` measures an estimated transform against a known one.
* `mni_pair` makes a fixed/moving pair with a known rigid transform from the MNI152 template that
  nilearn ships (licence: `napari_mriseg.core.phantom.MNI152_NOTICE`), for tests and benchmarks.

Transforms follow ITK: ``T`` maps a point of the fixed (reference) world to the moving world, LPS
millimetres in SimpleITK's ``(x, y, z) = (L, P, S)`` order; points handed to functions of this
module as numpy arrays are ``(N, 3)`` in that order too (convert with ``[..., ::-1]`` from a
`Volume`'s ``(S, P, L)``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import convert
from .volume import Grid, Volume

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

#: Default plausibility limits: beyond these a result is flagged (patients move by a few mm and
#: degrees between sequences of one study).
MAX_ROTATION_DEG = 30.0
MAX_CORNER_SHIFT_MM = 80.0
SCALE_RANGE = (0.8, 1.25)
#: A final metric worse than the identity's by more than this fraction of |identity metric| counts
#: as "worse than identity" (an already-aligned pair ends within sampling noise of identity).
METRIC_TOLERANCE = 0.01


@dataclass(frozen=True)
class RegistrationQuality:
    """Quality figures of one registration (all JSON-serialisable through `to_dict`).

    Attributes
    ----------
    metric_identity : float or None
        Mattes mutual information (negative; lower is better) with the scanner's alignment, i.e.
        the identity transform; None if the images do not overlap there.
    metric_final : float
        The same metric, same samples, with the estimated transform.
    corner_shift_mm : tuple of float
        Distance in mm each of the 8 corners of the brain box (the reference's foreground box)
        moved under the transform, ``|T(p) - p|``.
    rotation_deg : float
        Angle of the rotation part of the linear transform (degrees).
    scales : tuple of float
        Singular values of the linear part (1 for rigid).
    bspline_max_mm : float
        Largest displacement of the deformable part over the brain box (0 unless B-spline).
    problems : tuple of str
        Why the result looks implausible; empty when it looks fine.
    """

    metric_identity: float | None
    metric_final: float
    corner_shift_mm: tuple[float, ...]
    rotation_deg: float
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bspline_max_mm: float = 0.0
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def plausible(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def max_corner_shift_mm(self) -> float:
        return max(self.corner_shift_mm)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["corner_shift_mm"] = [round(v, 3) for v in self.corner_shift_mm]
        out["scales"] = [round(v, 5) for v in self.scales]
        out["problems"] = list(self.problems)
        out["plausible"] = self.plausible
        out["max_corner_shift_mm"] = round(self.max_corner_shift_mm, 3)
        return out


def linear_part(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """The (3, 3) matrix and centre of the first linear transform inside ``transform``, and the
    deformable parts (B-spline, displacement field) found after it. Matrix in (x, y, z) order."""
    import SimpleITK as sitk

    parts: list[Any] = []
    if isinstance(transform, sitk.CompositeTransform) or transform.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(transform)
        parts = [comp.GetNthTransform(i).Downcast() for i in range(comp.GetNumberOfTransforms())]
    else:
        parts = [transform.Downcast()]
    matrix, centre, deformable = np.eye(3), np.zeros(3), []
    for part in parts:
        if hasattr(part, "GetMatrix"):
            matrix = np.asarray(part.GetMatrix(), float).reshape(3, 3)
            centre = np.asarray(part.GetCenter(), float)
        else:
            deformable.append(part)
    return matrix, centre, deformable


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle (degrees) of the rotation nearest to a (3, 3) linear map (polar decomposition)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, float))
    r = u @ vt
    if np.linalg.det(r) < 0:
        return 180.0
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def transform_points(transform: sitk.Transform, points_xyz: np.ndarray) -> np.ndarray:
    """``transform`` applied to (N, 3) points (LPS mm, x y z order)."""
    pts = np.asarray(points_xyz, float).reshape(-1, 3)
    return np.array([transform.TransformPoint(tuple(p)) for p in pts]).reshape(-1, 3)


def box_corners(grid: Grid, mask: np.ndarray | None = None) -> np.ndarray:
    """(8, 3) world corners (LPS mm, x y z order) of ``mask``'s bounding box on ``grid`` (the whole
    grid when ``mask`` is None or empty)."""
    if mask is not None and np.any(mask):
        idx = [np.flatnonzero(np.asarray(mask).any(axis=tuple(j for j in range(3) if j != a))) for a in range(3)]
        bounds = [(i[0], i[-1]) for i in idx]
    else:
        bounds = [(0, n - 1) for n in grid.shape]
    corners = np.array(np.meshgrid(*bounds, indexing="ij"), float).reshape(3, -1).T
    return grid.index_to_world(corners)[:, ::-1]


def assess(transform: sitk.Transform, corners_xyz: np.ndarray, metric_identity: float | None,
           metric_final: float, *, max_rotation_deg: float = MAX_ROTATION_DEG,
           max_corner_shift_mm: float = MAX_CORNER_SHIFT_MM,
           scale_range: tuple[float, float] = SCALE_RANGE) -> RegistrationQuality:
    """Quality figures of ``transform`` and the problems that make it implausible.

    Parameters
    ----------
    transform : SimpleITK.Transform
        Fixed (reference) world -> moving world.
    corners_xyz : (8, 3) ndarray
        Corners of the brain box in the reference world (LPS mm, x y z order), see `box_corners`.
    metric_identity, metric_final : float
        Mattes MI (lower is better) of the identity and of ``transform`` on the same samples.
    """
    matrix, _, deformable = linear_part(transform)
    moved = transform_points(transform, corners_xyz)
    shifts = np.linalg.norm(moved - corners_xyz, axis=1)
    scales = np.linalg.svd(matrix, compute_uv=False)
    angle = rotation_angle_deg(matrix)
    bspline_max = 0.0
    if deformable:
        lo, hi = corners_xyz.min(0), corners_xyz.max(0)
        grid_pts = np.array(np.meshgrid(*[np.linspace(a, b, 7) for a, b in zip(lo, hi)], indexing="ij"))
        pts = grid_pts.reshape(3, -1).T
        for part in deformable:
            bspline_max = max(bspline_max, float(np.max(np.linalg.norm(transform_points(part, pts) - pts, axis=1))))
    problems = []
    if not np.all(np.isfinite(moved)) or not np.isfinite(metric_final):
        problems.append("the transform is not finite (the optimisation diverged)")
    if angle > max_rotation_deg:
        problems.append(f"rotation of {angle:.1f} deg exceeds {max_rotation_deg:g} deg")
    if np.nanmax(shifts) > max_corner_shift_mm:
        problems.append(f"a corner of the brain box moved {np.nanmax(shifts):.1f} mm (more than "
                        f"{max_corner_shift_mm:g} mm)")
    if scales.min() < scale_range[0] or scales.max() > scale_range[1]:
        problems.append(f"scale factors {np.round(scales, 3).tolist()} outside {list(scale_range)}")
    if metric_identity is not None and metric_final > metric_identity + METRIC_TOLERANCE * abs(metric_identity):
        problems.append(f"the final metric {metric_final:.4f} is worse than the scanner alignment's "
                        f"{metric_identity:.4f}")
    return RegistrationQuality(
        metric_identity=None if metric_identity is None else float(metric_identity),
        metric_final=float(metric_final), corner_shift_mm=tuple(float(s) for s in shifts),
        rotation_deg=angle, scales=tuple(float(s) for s in scales),  # type: ignore[arg-type]
        bspline_max_mm=bspline_max, problems=tuple(problems))


# --------------------------------------------------------------------------- TRE
def mask_points(mask: Volume, *, max_points: int = 20000, seed: int = 0) -> np.ndarray:
    """World positions (LPS mm, x y z order) of up to ``max_points`` voxels of a mask (random
    subset when larger, seeded), as an (N, 3) array."""
    idx = np.argwhere(np.asarray(mask.array) > 0)
    if len(idx) > max_points:
        idx = idx[np.random.default_rng(seed).choice(len(idx), max_points, replace=False)]
    return mask.grid.index_to_world(idx)[:, ::-1]


def target_registration_error(estimated: sitk.Transform, truth: sitk.Transform,
                              points_xyz: np.ndarray) -> np.ndarray:
    """Per-point distance (mm) between where ``estimated`` and ``truth`` map each reference point.

    Parameters
    ----------
    estimated, truth : SimpleITK.Transform
        Reference world -> moving world.
    points_xyz : (N, 3) ndarray
        Reference-world points (LPS mm, x y z order), e.g. brain voxels from `mask_points`.

    Returns
    -------
    (N,) ndarray
        Distances in mm; the TRE is their mean.
    """
    return np.linalg.norm(transform_points(estimated, points_xyz) - transform_points(truth, points_xyz), axis=1)


# --------------------------------------------------------------------------- MNI test pair
#: Tissue intensities (white matter, grey matter, CSF) of the synthetic moving contrasts.
MNI_CONTRASTS: Mapping[str, tuple[float, float, float]] = {"t2": (450.0, 650.0, 1500.0),
                                                          "flair": (500.0, 650.0, 120.0)}


@functools.lru_cache(maxsize=2)
def _mni(spacing_mm: float) -> tuple[Volume, np.ndarray, np.ndarray]:
    """The MNI T1 (1 or 2 mm), and its grey- and white-matter fractions (0..1), (Z, Y, X)."""
    import SimpleITK as sitk

    from .phantom import mni_template_1mm

    grid, maps = mni_template_1mm()
    images = [convert.to_sitk(Volume.on_grid(maps[k].astype(np.float32), grid)) for k in ("t1", "gm", "wm")]
    factor = int(round(spacing_mm))
    if factor > 1:
        images = [sitk.BinShrink(im, [factor] * 3) for im in images]
    t1, gm, wm = (convert.from_sitk(im) for im in images)
    return t1.with_array(t1.array, name="t1"), gm.array / 255.0, wm.array / 255.0


def mni_pair(seed: int, *, contrast: str = "t2", spacing_mm: float = 1.0,
             moving_spacing_mm: tuple[float, float, float] = (3.0, 1.0, 1.0), max_rotation_deg: float = 10.0,
             max_shift_mm: float = 15.0, noise: float = 0.02) -> tuple[Volume, Volume, sitk.Euler3DTransform, Volume]:
    """A fixed MNI T1 and a moving T2- or FLAIR-like image with a known rigid misalignment.

    Parameters
    ----------
    seed : int
        Seeds the rotation (uniform in +-``max_rotation_deg`` about each axis), the shift (uniform
        in +-``max_shift_mm`` along each axis) and the Rician noise.
    contrast : {"t2", "flair"}
        Moving contrast (`MNI_CONTRASTS`), made from the template's tissue maps.
    spacing_mm : {1, 2}
        Fixed grid spacing (the template, block-averaged for 2).
    moving_spacing_mm : (3,) floats
        Moving voxel size in array order ``(S, P, L)``: thick slices by default (1x1x3 mm).
    noise : float
        Rician noise sigma as a fraction of the white-matter value.

    Returns
    -------
    fixed, moving : Volume
    truth : SimpleITK.Euler3DTransform
        Fixed world -> moving world (rotation about the brain centre).
    brain : Volume
        Label map of brain voxels (grey + white matter > 0.5) on the fixed grid: where TRE is measured.
    """
    import SimpleITK as sitk
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    fixed, gm, wm = _mni(float(spacing_mm))
    brain = (gm + wm) > 0.5
    csf = np.clip((fixed.array > 0) - gm - wm, 0.0, 1.0)
    v_wm, v_gm, v_csf = MNI_CONTRASTS[contrast]
    clean = (v_wm * wm + v_gm * gm + v_csf * csf).astype(np.float32)
    centre = fixed.grid.index_to_world(np.mean(np.argwhere(brain), axis=0))[::-1]
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    shift = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    truth = sitk.Euler3DTransform(centre.tolist(), *angles.tolist(), shift.tolist())
    sp = np.asarray(moving_spacing_mm, float)
    fsp = np.asarray(fixed.spacing)
    extra = np.sqrt(np.maximum(sp ** 2 - fsp ** 2, 0.0)) / 2.355 / fsp  # slice profile, voxels
    clean = ndimage.gaussian_filter(clean, extra, truncate=3.0) if np.any(extra > 0) else clean
    lo = fixed.grid.index_to_world(np.zeros(3))
    hi = fixed.grid.index_to_world(np.asarray(fixed.shape) - 1.0)
    span = np.abs(hi - lo) + 20.0
    shape = tuple(int(n) for n in np.ceil(span / sp) + 1)
    d = np.diag(np.sign(np.diag(fixed.direction)))
    origin = (lo + hi) / 2.0 - d @ ((np.asarray(shape) - 1) * sp / 2.0) + shift[::-1]
    grid = Grid(shape, tuple(sp), tuple(origin), d)
    src = convert.to_sitk(fixed.with_array(clean))
    out = sitk.Resample(src, convert.sitk_reference_image(grid), truth.GetInverse(),
                        sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(out)
    sigma = np.float32(noise * v_wm)
    arr = np.hypot(arr + sigma * rng.standard_normal(arr.shape, dtype=np.float32),
                   sigma * rng.standard_normal(arr.shape, dtype=np.float32))
    moving = Volume.on_grid(arr.astype(np.float32), grid, name=contrast)
    return fixed, moving, truth, Volume.on_grid(brain.astype(np.uint8), fixed.grid, kind="label", name="brain")


