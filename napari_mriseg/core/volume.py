"""`Volume` and `Grid`: voxels that never travel without their geometry.

Conventions (one for the whole project)
---------------------------------------
* Arrays are numpy ``(Z, Y, X)``, i.e. the order SimpleITK's ``GetArrayFromImage`` returns:
  array axis 0 is the slowest file axis (``k``), axis 2 the fastest (``i``).
* Every geometric quantity is listed **in the array's axis order**: ``spacing = (sz, sy, sx)`` mm.
* World coordinates are patient **LPS** millimetres (DICOM / ITK convention), also listed in the
  array's axis order, i.e. reversed: ``(S, P, L)``. NIfTI's RAS appears only in
  `napari_mriseg.core.convert`.
* The voxel at index ``(k, j, i)`` lies at ``origin + direction @ (spacing * (k, j, i))``.
  ``direction`` is a 3x3 orthonormal matrix whose column ``a`` is the world direction of array
  axis ``a``. With SimpleITK's ``D`` (x, y, z order) this is ``D[::-1, ::-1]``.

Because napari's world axes are then ``(S, P, L)``, napari's default 2D view (rows = P downward,
columns = L rightward) is already a radiological axial view: anterior up, patient's right on the
screen's left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from .errors import GeometryMismatchError, InvalidImageError

Kind = Literal["image", "label"]

#: Tolerances used when deciding whether two grids are "the same".
GRID_ATOL_MM = 1e-3
GRID_ATOL_DIRECTION = 1e-4

_FIX = (
    "co-register the sequences onto the reference (`mriseg register` or the Co-register widget) "
    "or resample them onto the reference grid"
)


def _as_vec3(value: Any, name: str) -> tuple[float, float, float]:
    vec = np.asarray(value, dtype=float).reshape(-1)
    if vec.shape != (3,) or not np.all(np.isfinite(vec)):
        raise InvalidImageError(f"{name} must be 3 finite numbers; got {value!r}")
    return (float(vec[0]), float(vec[1]), float(vec[2]))


def _as_direction(value: Any) -> np.ndarray:
    d = np.array(value, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(d)):
        raise InvalidImageError(f"direction must be finite; got {d.tolist()}")
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InvalidImageError(
            "direction cosines are not orthonormal (the header describes a sheared grid); "
            f"got {np.round(d, 6).tolist()}"
        )
    d.setflags(write=False)
    return d


def label_dtype(array: np.ndarray) -> np.dtype:
    """The smallest integer dtype that holds every value of ``array`` (uint8 where it fits).

    Raises `InvalidImageError` if ``array`` holds non-integer or non-finite values.
    """
    a = np.asarray(array)
    if a.size == 0:
        return np.dtype(np.uint8)
    if a.dtype.kind == "b":
        return np.dtype(np.uint8)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InvalidImageError("a label map holds NaN or infinite values")
        if not np.array_equal(a, np.round(a)):
            raise InvalidImageError("a label map holds non-integer values")
    elif a.dtype.kind not in "iu":
        raise InvalidImageError(f"a label map must be integer; got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    for dt in (np.uint8, np.uint16, np.uint32) if lo >= 0 else (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


@dataclass(frozen=True, eq=False)
class Grid:
    """Geometry without voxels: the shape and voxel-to-world mapping of a 3D grid.

    Parameters
    ----------
    shape : (3,) tuple of int
        Number of voxels along array axes ``(Z, Y, X)``.
    spacing : (3,) tuple of float
        Voxel size in mm along the array axes.
    origin : (3,) tuple of float
        World position (LPS mm, listed ``(S, P, L)``) of voxel ``(0, 0, 0)``'s centre.
    direction : (3, 3) ndarray
        Column ``a`` is the world direction of array axis ``a``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InvalidImageError(f"a grid needs 3 positive sizes; got {self.shape}")
        spacing = _as_vec3(self.spacing, "spacing")
        if min(spacing) <= 0:
            raise InvalidImageError(f"spacing must be positive (mm); got {spacing}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _as_vec3(self.origin, "origin"))
        object.__setattr__(self, "direction", _as_direction(self.direction))

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) matrix from index ``(k, j, i, 1)`` to world ``(S, P, L, 1)`` in LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction @ np.diag(self.spacing)
        a[:3, 3] = self.origin
        return a

    def index_to_world(self, index: Any) -> np.ndarray:
        """World positions (LPS mm, ``(S, P, L)``) of ``(..., 3)`` continuous indices ``(k, j, i)``."""
        idx = np.asarray(index, dtype=float)
        return idx @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def world_to_index(self, points: Any) -> np.ndarray:
        """Continuous indices ``(k, j, i)`` of ``(..., 3)`` world points (LPS mm, ``(S, P, L)``)."""
        p = np.asarray(points, dtype=float) - np.asarray(self.origin)
        return (p @ self.direction) / np.asarray(self.spacing)

    @property
    def size_mm(self) -> tuple[float, float, float]:
        """Extent of the grid in mm along each array axis."""
        return tuple(float(n * s) for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]

    def mismatch(self, other: Grid) -> tuple[str, object, object] | None:
        """The first field in which ``other`` differs from this grid, or ``None``.

        Returns ``(field, this_value, other_value)``; positions are compared to
        `GRID_ATOL_MM` mm and direction cosines to `GRID_ATOL_DIRECTION`.
        """
        if self.shape != other.shape:
            return ("shape", self.shape, other.shape)
        if not np.allclose(self.spacing, other.spacing, atol=GRID_ATOL_MM):
            return ("spacing", self.spacing, other.spacing)
        if not np.allclose(self.direction, other.direction, atol=GRID_ATOL_DIRECTION):
            return ("direction", self.direction.round(6).tolist(), other.direction.round(6).tolist())
        if not np.allclose(self.origin, other.origin, atol=GRID_ATOL_MM):
            return ("origin", self.origin, other.origin)
        return None

    def check_same(self, other: Grid, *, this_name: str = "reference", other_name: str = "volume") -> None:
        """Raise `GeometryMismatchError` unless ``other`` lies on this grid."""
        diff = self.mismatch(other)
        if diff is not None:
            fld, expected, actual = diff
            raise GeometryMismatchError(
                f"{other_name} is not on the grid of {this_name}: {fld} differs "
                f"({this_name}: {expected}, {other_name}: {actual}); fix: {_FIX}",
                field=fld,
                expected=expected,
                actual=actual,
            )


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image or label map with its full voxel-to-patient geometry.

    Parameters
    ----------
    array : (Z, Y, X) ndarray
        The voxels. For ``kind="label"`` it is converted to the smallest integer dtype that
        holds its values (uint8 where it fits); non-integer labels are refused.
    spacing, origin, direction
        As in `Grid` (mm; LPS world listed ``(S, P, L)``; array axis order).
    kind : {"image", "label"}
        Labels are always integer and always resampled nearest-neighbour.
    name : str
        Sequence name (``t1``, ``flair``...) or label-map name.
    meta : mapping
        Read-only extra facts (source path, DICOM window centre/width, warnings of the reader).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    kind: Kind = "image"
    name: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise InvalidImageError(f"a volume must be 3D (Z, Y, X); got shape {arr.shape}")
        if self.kind not in ("image", "label"):
            raise InvalidImageError(f"kind must be 'image' or 'label'; got {self.kind!r}")
        if self.kind == "label":
            dt = label_dtype(arr)
            if arr.dtype != dt:
                arr = arr.astype(dt)
        elif arr.dtype.kind not in "biuf":
            raise InvalidImageError(f"image voxels must be real numbers; got dtype {arr.dtype}")
        grid = Grid(arr.shape, self.spacing, self.origin, self.direction)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing", grid.spacing)
        object.__setattr__(self, "origin", grid.origin)
        object.__setattr__(self, "direction", grid.direction)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def grid(self) -> Grid:
        """This volume's geometry without its voxels."""
        return Grid(self.array.shape, self.spacing, self.origin, self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) index ``(k, j, i)`` -> world ``(S, P, L)`` LPS mm; see `Grid.affine`."""
        return self.grid.affine

    @property
    def is_label(self) -> bool:
        return self.kind == "label"

    def with_array(self, array: np.ndarray, *, kind: Kind | None = None, name: str | None = None,
                   meta: Mapping[str, Any] | None = None) -> Volume:
        """A new volume on this grid holding ``array`` (same shape), optionally of another kind."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise GeometryMismatchError(
                f"array shape {array.shape} does not fit the grid of {self.name or 'the volume'} "
                f"{self.array.shape}",
                field="shape", expected=self.array.shape, actual=array.shape,
            )
        return Volume(
            array, self.spacing, self.origin, self.direction,
            kind=self.kind if kind is None else kind,
            name=self.name if name is None else name,
            meta=self.meta if meta is None else meta,
        )

    @classmethod
    def zeros_like_labels(cls, grid: Grid | Volume, *, name: str = "labels") -> Volume:
        """An empty (all background) uint8 label map on ``grid``."""
        g = grid.grid if isinstance(grid, Volume) else grid
        return cls(np.zeros(g.shape, np.uint8), g.spacing, g.origin, g.direction, kind="label", name=name)

    @classmethod
    def on_grid(cls, array: np.ndarray, grid: Grid, *, kind: Kind = "image", name: str = "",
                meta: Mapping[str, Any] | None = None) -> Volume:
        """Wrap ``array`` (shape ``grid.shape``) with ``grid``'s geometry."""
        return cls(array, grid.spacing, grid.origin, grid.direction, kind=kind, name=name, meta=meta or {})
