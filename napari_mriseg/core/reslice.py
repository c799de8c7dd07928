"""Oblique reslicing: a plane through a point at user-set angles, resampled as a 2D image in mm.

Conventions (those of `napari_mriseg.core.volume`): world points are patient LPS millimetres
listed in array order ``(S, P, L)``; a 2D image has rows going down the screen and columns going
right. The three standard planes are the radiological views of `napari_mriseg._napari.views`:

* axial: rows go posterior (anterior up), columns go to the patient's left (right on the left);
* coronal: rows go inferior (superior up), columns go to the patient's left;
* sagittal: rows go inferior (superior up), columns go posterior (anterior on the left).

An oblique plane is one of those turned by three angles in degrees: about the patient's
left-right axis, then its anterior-posterior axis, then its superior-inferior axis (extrinsic
rotations, right-hand rule about the LPS axes ``+L``, ``+P``, ``+S``).

Pure numpy/scipy; no Qt, no napari.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import OptionError, check_choice
from .volume import Grid, Volume

__all__ = [
    "BASE_PLANES",
    "Plane",
    "Reslice",
    "direction_letters",
    "oblique_plane",
    "plane_from_line",
    "reslice",
    "reslice_array",
    "rotation_matrix",
    "screen_markers",
]

#: Row and column directions (world ``(S, P, L)`` unit vectors) of the radiological planes.
BASE_PLANES = {
    "axial": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "sagittal": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}
#: Patient direction of each world axis ``(S, P, L)``: (positive, negative) letter.
_LETTERS = (("S", "I"), ("P", "A"), ("L", "R"))


def _unit(v: Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(v, dtype=float).reshape(-1)
    n = float(np.linalg.norm(a)) if a.shape == (3,) else 0.0
    if not np.isfinite(n) or n < 1e-9:
        raise OptionError(f"{name} must be a non-zero 3-vector (S, P, L); got {v!r}")
    return a / n


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """The (3, 3) rotation of world vectors listed ``(S, P, L)`` for three angles in degrees.

    ``angles_deg = (about_lr, about_ap, about_si)``: rotations about the patient's left-right
    axis (tilts an axial plane towards coronal), then the anterior-posterior axis (towards
    sagittal), then the superior-inferior axis (in-plane turn of an axial plane); extrinsic,
    right-hand rule about ``+L``, ``+P``, ``+S``.
    """
    from scipy.spatial.transform import Rotation

    a = np.asarray(angles_deg, dtype=float).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise OptionError(f"angles_deg must be 3 finite angles in degrees (LR, AP, SI); got {angles_deg!r}")
    r_xyz = Rotation.from_euler("xyz", a, degrees=True).as_matrix()  # x = L, y = P, z = S
    return r_xyz[::-1, ::-1]  # the same rotation for vectors listed (S, P, L)


@dataclass(frozen=True)
class Plane:
    """An oriented plane in world space: a point on it and the screen directions of its image.

    Parameters
    ----------
    point : (3,) tuple of float
        A world point on the plane (LPS mm, ``(S, P, L)``), e.g. the cursor.
    row, col : (3,) tuple of float
        Unit world vectors of increasing image row (screen down) and column (screen right);
        orthogonal.
    """

    point: tuple[float, float, float]
    row: tuple[float, float, float]
    col: tuple[float, float, float]

    def __post_init__(self) -> None:
        row, col = _unit(self.row, "row"), _unit(self.col, "col")
        if abs(float(row @ col)) > 1e-6:
            raise OptionError(f"a plane's row and column directions must be orthogonal; got {self.row}, {self.col}")
        p = np.asarray(self.point, dtype=float).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise OptionError(f"point must be 3 finite coordinates in mm (S, P, L); got {self.point!r}")
        object.__setattr__(self, "point", tuple(float(v) for v in p))
        object.__setattr__(self, "row", tuple(float(v) for v in row))
        object.__setattr__(self, "col", tuple(float(v) for v in col))

    @property
    def normal(self) -> np.ndarray:
        """Unit normal ``row x col`` (world, ``(S, P, L)``)."""
        n = np.cross(self.row, self.col)
        return n / np.linalg.norm(n)

    def through(self, point: Sequence[float]) -> Plane:
        """The parallel plane through ``point`` (same row and column directions)."""
        return Plane(tuple(point), self.row, self.col)  # type: ignore[arg-type]

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distances in mm of ``(..., 3)`` world points from the plane (along `normal`)."""
        return (np.asarray(points, dtype=float) - np.asarray(self.point)) @ self.normal


def oblique_plane(point: Sequence[float], *, base: str = "axial",
                  angles_deg: Sequence[float] = (0.0, 0.0, 0.0)) -> Plane:
    """The plane through ``point`` (world mm) of a standard view turned by ``angles_deg``.

    Parameters
    ----------
    point : (3,) sequence of float
        World point on the plane, LPS mm listed ``(S, P, L)`` (the cursor).
    base : {"axial", "coronal", "sagittal"}
        The radiological view the angles start from (all zero: that view exactly).
    angles_deg : (3,) sequence of float
        Degrees about the left-right, anterior-posterior and superior-inferior axes
        (see `rotation_matrix`).
    """
    check_choice("base", base, tuple(BASE_PLANES))
    r = rotation_matrix(angles_deg)
    row, col = (r @ np.asarray(v) for v in BASE_PLANES[base])
    return Plane(tuple(point), tuple(row), tuple(col))  # type: ignore[arg-type]


def plane_from_line(p0: Sequence[float], p1: Sequence[float], view_normal: Sequence[float], *,
                    point: Sequence[float] | None = None) -> Plane:
    """The plane that holds the line ``p0 -> p1`` drawn in a view and that view's normal.

    The line gives the image's columns, the view's normal its rows; signs are chosen so that
    superior is up (or, for a plane holding no superior direction, anterior is up) and the
    columns run towards the patient's left (or posterior), as in the standard views.

    Parameters
    ----------
    p0, p1 : (3,) sequence of float
        End points of the line, world mm ``(S, P, L)``; distinct.
    view_normal : (3,) sequence of float
        Normal of the view the line was drawn in (e.g. ``(1, 0, 0)`` for the axial view).
    point : (3,) sequence of float, optional
        Point the plane passes through; default the line's midpoint (it must lie on the plane
        for the line to be in it: pass the cursor only if it is on the line's plane).
    """
    a, b = np.asarray(p0, dtype=float), np.asarray(p1, dtype=float)
    col = _unit(b - a, "p1 - p0")
    n = _unit(view_normal, "view_normal")
    row = n - (n @ col) * col
    if np.linalg.norm(row) < 1e-6:
        raise OptionError("the line is parallel to the view's normal: draw it within the view")
    row /= np.linalg.norm(row)
    if abs(row[0]) > 1e-6:
        row = row if row[0] < 0 else -row  # rows go inferior: superior up
    elif row[1] < 0:
        row = -row  # rows go posterior: anterior up
    if abs(col[2]) > 1e-6:
        col = col if col[2] > 0 else -col  # columns go to the patient's left
    elif col[1] < 0:
        col = -col
    p = (a + b) / 2 if point is None else np.asarray(point, dtype=float)
    return Plane(tuple(p), tuple(row), tuple(col))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class Reslice:
    """A resampled oblique image and where its pixels lie.

    Attributes
    ----------
    image : (rows, cols) ndarray
        The resampled values (float32 for images, the label dtype for labels).
    plane : Plane
        The plane sampled.
    origin : (3,) ndarray
        World position (mm, ``(S, P, L)``) of pixel ``(0, 0)``'s centre.
    pixel_mm : float
        Pixel size in mm along rows and columns.
    """

    image: np.ndarray
    plane: Plane
    origin: np.ndarray
    pixel_mm: float

    def pixel_to_world(self, rc: np.ndarray) -> np.ndarray:
        """World points (mm) of ``(..., 2)`` continuous pixel positions ``(row, col)``."""
        rc = np.asarray(rc, dtype=float)
        return (self.origin + self.pixel_mm * (rc[..., :1] * np.asarray(self.plane.row)
                                               + rc[..., 1:2] * np.asarray(self.plane.col)))

    def world_to_pixel(self, points: np.ndarray) -> np.ndarray:
        """Continuous ``(row, col)`` of ``(..., 3)`` world points projected onto the plane."""
        d = np.asarray(points, dtype=float) - self.origin
        return np.stack([d @ np.asarray(self.plane.row), d @ np.asarray(self.plane.col)], -1) / self.pixel_mm


def _plane_box(grid: Grid, plane: Plane, anchor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-plane (row, col) mm range, relative to ``anchor``, of the box of the grid's voxel
    centres projected on the plane."""
    corners = np.array([[k, j, i] for k in (0, grid.shape[0] - 1) for j in (0, grid.shape[1] - 1)
                        for i in (0, grid.shape[2] - 1)])
    w = grid.index_to_world(corners) - anchor
    rc = np.stack([w @ np.asarray(plane.row), w @ np.asarray(plane.col)], -1)
    return rc.min(0), rc.max(0)


def reslice_array(array: np.ndarray, grid: Grid, plane: Plane, *, pixel_mm: float | None = None,
                  order: int = 1, fill: float = 0.0, anchor: Sequence[float] | None = None,
                  like: Reslice | None = None) -> Reslice:
    """Resample ``array`` (on ``grid``) on ``plane``, over the whole projection of the grid.

    Parameters
    ----------
    array : (Z, Y, X) ndarray
        Voxels on ``grid`` (array order); never copied or changed.
    grid : Grid
        Geometry of ``array`` (any direction cosines).
    plane : Plane
        The plane; rows and columns of the output follow ``plane.row`` and ``plane.col``.
    pixel_mm : float, optional
        Output pixel size in mm (square pixels); default the grid's smallest spacing.
    order : int
        Spline order: 1 (linear) for images, 0 (nearest) for labels.
    fill : float
        Value outside the grid.
    anchor : (3,) sequence of float, optional
        World point whose projection on the plane is the centre of the output; default the
        grid's centre. A fixed anchor keeps the image still while the plane moves along its
        normal or the cursor moves within it.
    like : Reslice, optional
        Sample on exactly the pixels of this earlier result (its plane, origin, pixel size and
        shape; ``plane``, ``pixel_mm`` and ``anchor`` are then ignored): e.g. a label map on the
        pixels of the image it overlays, whatever the two grids.

    Returns
    -------
    Reslice
        ``image`` of shape ``(rows, cols)``: float32 for ``order > 0``, ``array.dtype`` else.
    """
    if array.shape != grid.shape:
        raise OptionError(f"array shape {array.shape} does not match the grid {grid.shape}")
    if order not in (0, 1, 3):
        raise OptionError(f"order must be 0 (nearest), 1 (linear) or 3 (cubic); got {order!r}")
    if like is not None:
        plane, pixel, origin, count = like.plane, like.pixel_mm, np.asarray(like.origin), np.asarray(like.image.shape)
        row, col = np.asarray(plane.row), np.asarray(plane.col)
    else:
        pixel = float(min(grid.spacing) if pixel_mm is None else pixel_mm)
        if not np.isfinite(pixel) or pixel <= 0:
            raise OptionError(f"pixel_mm must be a positive size in mm; got {pixel_mm!r}")
        n, row, col = plane.normal, np.asarray(plane.row), np.asarray(plane.col)
        centre = (grid.index_to_world((np.asarray(grid.shape) - 1) / 2.0) if anchor is None
                  else np.asarray(anchor, float))
        # the anchor's projection on the plane: fixed while the plane slides along its normal
        base = centre - ((centre - np.asarray(plane.point)) @ n) * n
        lo, hi = _plane_box(grid, plane, base)
        half = np.maximum(np.abs(lo), np.abs(hi))  # symmetric about the anchor: stable size
        count = np.maximum(1, np.floor(2 * half / pixel + 1e-6).astype(int) + 1)
        if count.prod() > 64e6:
            raise OptionError(f"the oblique image would have {count[0]}x{count[1]} pixels; choose a larger pixel_mm")
        origin = base - (count[0] - 1) / 2 * pixel * row - (count[1] - 1) / 2 * pixel * col
    # index of pixel (0, 0) and index steps per row and per column: coordinates are linear
    to_idx = np.linalg.inv(grid.direction @ np.diag(grid.spacing))
    i0 = to_idx @ (origin - np.asarray(grid.origin))
    di, dj = to_idx @ (row * pixel), to_idx @ (col * pixel)
    r = np.arange(count[0], dtype=np.float32)[:, None]
    c = np.arange(count[1], dtype=np.float32)[None, :]
    coords = np.stack([(i0[a] + r * di[a] + c * dj[a]).astype(np.float32) for a in range(3)])
    out_dtype = array.dtype if order == 0 else np.float32
    out = ndimage.map_coordinates(array, coords.reshape(3, -1), order=order, mode="constant", cval=fill,
                                  prefilter=order > 1, output=out_dtype)
    return Reslice(out.reshape(tuple(count)), plane, origin, pixel)


def reslice(volume: Volume, plane: Plane, *, pixel_mm: float | None = None, fill: float = 0.0,
            anchor: Sequence[float] | None = None, like: Reslice | None = None) -> Reslice:
    """`reslice_array` for a `Volume`: linear for images, nearest-neighbour for labels."""
    return reslice_array(volume.array, volume.grid, plane, pixel_mm=pixel_mm, order=0 if volume.is_label else 1,
                         fill=fill, anchor=anchor, like=like)


def direction_letters(vector: Sequence[float], *, threshold: float = 0.3) -> str:
    """Patient direction letters of a world vector ``(S, P, L)``, strongest first.

    ``(0, 0, 1) -> "L"``, ``(0, -1, 0) -> "A"``, ``(0.7, -0.7, 0) -> "SA"``; components below
    ``threshold`` (relative to the largest) are left out.
    """
    v = np.asarray(vector, dtype=float).reshape(3)
    big = np.abs(v).max()
    if big == 0:
        return ""
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join(_LETTERS[a][0 if v[a] > 0 else 1] for a in order if abs(v[a]) >= threshold * big)


def screen_markers(row: Sequence[float], col: Sequence[float]) -> dict[str, str]:
    """Orientation markers at the edges of a view whose rows go along ``row`` (screen down)
    and columns along ``col`` (screen right): ``{"top", "bottom", "left", "right"}``.

    Radiological axial view: ``screen_markers((0, 1, 0), (0, 0, 1))`` gives
    ``{"top": "A", "bottom": "P", "left": "R", "right": "L"}``.
    """
    r, c = np.asarray(row, dtype=float), np.asarray(col, dtype=float)
    return {"top": direction_letters(-r), "bottom": direction_letters(r),
            "left": direction_letters(-c), "right": direction_letters(c)}
