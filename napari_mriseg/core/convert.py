"""The one place where a `Volume` meets other conventions: SimpleITK, nibabel (NIfTI RAS) and
napari layer arguments.

* SimpleITK lists geometry in (x, y, z) order; a `Volume` lists it in array (z, y, x) order.
* NIfTI's affine maps (i, j, k) to RAS mm; a `Volume`'s world is LPS. The sign flip of the first
  two world axes happens here and nowhere else.
* napari maps data index to world with ``affine @ (scale, translate)``; we give it the volume's
  spacing as ``scale`` and its origin/direction as ``translate`` or ``affine``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidImageError
from .volume import Grid, Kind, Volume

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib
    import SimpleITK as sitk

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- SimpleITK
def grid_to_sitk_geometry(grid: Grid) -> dict[str, tuple[float, ...]]:
    """SimpleITK's ``spacing``, ``origin`` (x, y, z) and row-major ``direction`` of ``grid``."""
    return {
        "spacing": tuple(grid.spacing[::-1]),
        "origin": tuple(grid.origin[::-1]),
        "direction": tuple(np.asarray(grid.direction)[::-1, ::-1].ravel()),
    }


def grid_from_sitk(image: sitk.Image) -> Grid:
    """The `Grid` of a 3D SimpleITK image."""
    if image.GetDimension() != 3:
        raise InvalidImageError(f"expected a 3D image; got {image.GetDimension()}D")
    d = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    return Grid(tuple(image.GetSize()[::-1]), image.GetSpacing()[::-1], image.GetOrigin()[::-1], d[::-1, ::-1])


def set_sitk_grid(image: sitk.Image, grid: Grid) -> sitk.Image:
    """Give ``image`` (size ``grid.shape`` reversed) ``grid``'s spacing, origin and direction."""
    geo = grid_to_sitk_geometry(grid)
    image.SetSpacing(geo["spacing"])
    image.SetOrigin(geo["origin"])
    image.SetDirection(geo["direction"])
    return image


def sitk_reference_image(grid: Grid) -> sitk.Image:
    """An empty uint8 SimpleITK image that carries only ``grid``: a resampling target."""
    import SimpleITK as sitk

    return set_sitk_grid(sitk.Image([int(n) for n in grid.shape[::-1]], sitk.sitkUInt8), grid)


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with ``volume``'s voxels and geometry (the array is copied)."""
    import SimpleITK as sitk

    arr = volume.array
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return set_sitk_grid(sitk.GetImageFromArray(np.ascontiguousarray(arr)), volume.grid)


def from_sitk(image: sitk.Image, *, kind: Kind = "image", name: str = "",
              meta: Mapping[str, Any] | None = None) -> Volume:
    """A `Volume` from a 3D single-component SimpleITK image."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError(
            f"expected one value per voxel; got {image.GetNumberOfComponentsPerPixel()} components"
        )
    grid = grid_from_sitk(image)
    return Volume.on_grid(sitk.GetArrayFromImage(image), grid, kind=kind, name=name, meta=meta)


# --------------------------------------------------------------------------- NIfTI / nibabel
def grid_to_ras_affine(grid: Grid) -> np.ndarray:
    """NIfTI's (4, 4) affine from voxel ``(i, j, k)`` (file order, i fastest) to RAS mm."""
    d_xyz = np.asarray(grid.direction)[::-1, ::-1]
    a = np.eye(4)
    a[:3, :3] = _LPS_RAS @ d_xyz @ np.diag(grid.spacing[::-1])
    a[:3, 3] = _LPS_RAS @ np.asarray(grid.origin[::-1])
    return a


def grid_from_ras_affine(affine: np.ndarray, shape_ijk: tuple[int, ...]) -> Grid:
    """The `Grid` of an array of file shape ``(i, j, k)`` whose NIfTI affine is ``affine``."""
    a = np.asarray(affine, dtype=float)
    m = _LPS_RAS @ a[:3, :3]
    spacing_xyz = np.linalg.norm(m, axis=0)
    if np.any(spacing_xyz <= 0) or not np.all(np.isfinite(m)):
        raise InvalidImageError(f"the affine is degenerate (a zero voxel size): {a.round(6).tolist()}")
    d_xyz = m / spacing_xyz
    origin_xyz = _LPS_RAS @ a[:3, 3]
    return Grid(tuple(shape_ijk[:3])[::-1], spacing_xyz[::-1], origin_xyz[::-1], d_xyz[::-1, ::-1])


def to_nifti(volume: Volume) -> nib.Nifti1Image:
    """A NIfTI-1 image of ``volume`` with identical qform and sform (code 1, scanner)."""
    import nibabel as nib

    data = np.asarray(volume.array).transpose(2, 1, 0)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if data.dtype == np.float16:
        data = data.astype(np.float32)
    affine = grid_to_ras_affine(volume.grid)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header = image.header
    header.set_data_dtype(data.dtype)
    header.set_xyzt_units("mm", "sec")
    header["scl_slope"] = np.nan
    header["scl_inter"] = np.nan
    header["descrip"] = b"napari-mriseg"
    return image


# --------------------------------------------------------------------------- napari
def layer_kwargs(volume: Volume | Grid) -> dict[str, Any]:
    """``scale``, ``translate`` and, if the grid is not axis aligned, ``affine`` for a napari layer.

    napari's world axes are then LPS mm listed ``(S, P, L)``: every layer made this way overlays
    every other in millimetres.
    """
    grid = volume.grid if isinstance(volume, Volume) else volume
    kwargs: dict[str, Any] = {"scale": tuple(grid.spacing)}
    if np.allclose(grid.direction, np.eye(3), atol=1e-12):
        kwargs["translate"] = tuple(grid.origin)
    else:
        a = np.eye(4)
        a[:3, :3] = grid.direction
        a[:3, 3] = grid.origin
        kwargs["translate"] = (0.0, 0.0, 0.0)
        kwargs["affine"] = a
    return kwargs


def grid_from_layer_transform(shape: tuple[int, ...], scale: Any, translate: Any,
                              affine: np.ndarray | None = None) -> Grid:
    """Inverse of `layer_kwargs`: the `Grid` of a layer with this shape, scale, translate, affine.

    napari composes ``world = affine @ (scale * index + translate)``; rotation and shear must be
    absent from the layer's own transform (we never set them).
    """
    scale = np.asarray(scale, dtype=float)[-3:]
    translate = np.asarray(translate, dtype=float)[-3:]
    a = np.eye(4) if affine is None else np.asarray(affine, dtype=float)[-4:, -4:]
    lin = a[:3, :3] @ np.diag(scale)
    origin = a[:3, :3] @ translate + a[:3, 3]
    spacing = np.linalg.norm(lin, axis=0)
    return Grid(tuple(shape[-3:]), spacing, origin, lin / spacing)


def from_layer(data: np.ndarray, scale: Any, translate: Any, affine: np.ndarray | None = None, *,
               kind: Kind = "image", name: str = "", meta: Mapping[str, Any] | None = None) -> Volume:
    """A `Volume` from a napari layer's data and transform (see `grid_from_layer_transform`)."""
    grid = grid_from_layer_transform(np.shape(data), scale, translate, affine)
    return Volume.on_grid(np.asarray(data), grid, kind=kind, name=name, meta=meta)
