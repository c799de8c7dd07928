"""Put a volume onto another grid, and reorient grids to an axis-aligned display order.

Labels are always resampled nearest-neighbour. Grids that differ only by a permutation or flip of
their axes (e.g. a NIfTI stored RAS versus the same voxels stored LPS) are converted by
transposing and flipping the array: exact, no interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import convert
from .errors import check_choice
from .volume import Grid, Volume

INTERPOLATIONS = ("nearest", "linear", "bspline")


@dataclass(frozen=True)
class Reorientation:
    """A permutation and flips of array axes that make a grid's direction the identity.

    ``apply(a) = flip(transpose(a, axes), flips)``; `invert` undoes it exactly.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        return np.flip(out, [a for a in range(3) if self.flips[a]]) if any(self.flips) else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        if any(self.flips):
            array = np.flip(array, [a for a in range(3) if self.flips[a]])
        return np.transpose(array, np.argsort(self.axes))

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)


def signed_permutation(direction: np.ndarray, atol: float = 1e-6) -> Reorientation | None:
    """The `Reorientation` that makes ``direction`` the identity, or None if it is oblique.

    Parameters
    ----------
    direction : (3, 3) ndarray
        Column ``a`` is the world direction of array axis ``a`` (world ``(S, P, L)``).
    """
    d = np.asarray(direction, dtype=float)
    rounded = np.round(d)
    if not np.allclose(d, rounded, atol=atol) or not np.allclose(np.abs(rounded).sum(0), 1):
        return None
    # world axis w is carried by array axis axes[w]
    axes = tuple(int(np.argmax(np.abs(rounded[w]))) for w in range(3))
    if sorted(axes) != [0, 1, 2]:
        return None
    flips = tuple(bool(rounded[w, axes[w]] < 0) for w in range(3))
    return Reorientation(axes, flips)  # type: ignore[arg-type]


def reoriented_grid(grid: Grid, r: Reorientation) -> Grid:
    """The grid of ``r.apply(array)`` for an array on ``grid`` (direction becomes the identity)."""
    shape = tuple(grid.shape[a] for a in r.axes)
    spacing = tuple(grid.spacing[a] for a in r.axes)
    first = np.array([(grid.shape[r.axes[w]] - 1) if r.flips[w] else 0 for w in range(3)], float)
    index0 = np.zeros(3)
    index0[list(r.axes)] = first
    origin = grid.index_to_world(index0)
    return Grid(shape, spacing, origin, np.eye(3))


def axis_aligned_grid(grid: Grid) -> Grid:
    """The identity-direction grid covering ``grid``'s bounding box at its finest spacing.

    Used to show an oblique volume in napari's axis-aligned 2D views.
    """
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in grid.shape], indexing="ij")).reshape(3, -1).T
    world = grid.index_to_world(corners)
    lo, hi = world.min(0), world.max(0)
    step = min(grid.spacing)
    shape = tuple(int(np.floor((h - low) / step + 1e-6)) + 1 for low, h in zip(lo, hi))
    return Grid(shape, (step,) * 3, lo, np.eye(3))


def resample_to_grid(volume: Volume, grid: Grid, *, interpolation: str | None = None,
                     default: float = 0.0, transform: Any = None) -> Volume:
    """``volume`` resampled onto ``grid``: world positions preserved, or mapped by ``transform``.

    Parameters
    ----------
    volume : Volume
        Image or label map.
    grid : Grid
        Target geometry.
    interpolation : {"nearest", "linear", "bspline"}, optional
        Defaults to linear for images; labels are always nearest (asking otherwise is an error).
    default : float
        Value outside ``volume``'s field of view.
    transform : SimpleITK transform, optional
        Maps ``grid``'s world to ``volume``'s world (ITK's fixed -> moving); identity if None.
    """
    if interpolation is None:
        interpolation = "nearest" if volume.is_label else "linear"
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    if volume.is_label and interpolation != "nearest":
        check_choice("interpolation of a label map", interpolation, ("nearest",))
    if transform is None:
        if volume.grid.mismatch(grid) is None:
            return Volume.on_grid(volume.array, grid, kind=volume.kind, name=volume.name, meta=volume.meta)
        exact = _permuted_copy(volume, grid)
        if exact is not None:
            return exact
    import SimpleITK as sitk

    interp = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear,
              "bspline": sitk.sitkBSpline}[interpolation]
    ref = convert.sitk_reference_image(grid)
    src = convert.to_sitk(volume)
    out_type = src.GetPixelID() if volume.is_label else sitk.sitkFloat32
    if not volume.is_label and volume.array.dtype == np.float64:
        out_type = sitk.sitkFloat64
    out = sitk.Resample(src, ref, sitk.Transform() if transform is None else transform, interp, float(default),
                        out_type)
    return Volume.on_grid(sitk.GetArrayFromImage(out), grid, kind=volume.kind, name=volume.name, meta=volume.meta)


def _permuted_copy(volume: Volume, grid: Grid) -> Volume | None:
    """Exact transpose/flip when ``grid`` holds the same voxel centres in another axis order."""
    r_src = signed_permutation(volume.direction)
    r_dst = signed_permutation(grid.direction)
    if r_src is None or r_dst is None:
        return None
    if reoriented_grid(volume.grid, r_src).mismatch(reoriented_grid(grid, r_dst)) is not None:
        return None
    array = np.ascontiguousarray(r_dst.invert(r_src.apply(volume.array)))
    return Volume.on_grid(array, grid, kind=volume.kind, name=volume.name, meta=volume.meta)


def to_display_orientation(volume: Volume) -> tuple[Volume, str]:
    """``volume`` on an identity-direction grid, and how it got there.

    Returns ``(volume, how)`` with ``how`` one of ``"as stored"``, ``"reoriented"`` (axes
    transposed/flipped: exact) or ``"resampled"`` (oblique: interpolated onto `axis_aligned_grid`).
    """
    r = signed_permutation(volume.direction)
    if r is not None and r.is_identity:
        return volume, "as stored"
    if r is not None:
        grid = reoriented_grid(volume.grid, r)
        arr = np.ascontiguousarray(r.apply(volume.array))
        return Volume.on_grid(arr, grid, kind=volume.kind, name=volume.name, meta=volume.meta), "reoriented"
    return resample_to_grid(volume, axis_aligned_grid(volume.grid)), "resampled"


def axis_codes(grid: Grid) -> str:
    """NIfTI-style orientation codes of the file axes (i, j, k), e.g. ``"RAS"`` or ``"LPS"``.

    Each letter names the patient direction (RAS+ convention, as nibabel's ``aff2axcodes``) that
    the axis points to.
    """
    import nibabel as nib

    return "".join(nib.orientations.aff2axcodes(convert.grid_to_ras_affine(grid)))
