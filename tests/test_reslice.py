"""Oblique reslicing (core, no Qt): geometry in mm checked against exact linear fields."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_mriseg.core.errors import OptionError
from napari_mriseg.core.reslice import (
    Plane,
    direction_letters,
    oblique_plane,
    plane_from_line,
    reslice,
    reslice_array,
    rotation_matrix,
    screen_markers,
)
from napari_mriseg.core.volume import Grid, Volume


def _linear_volume(grid: Grid, coef=(0.7, -1.3, 2.1), offset=5.0) -> Volume:
    """Values = coef . world + offset: linear interpolation reproduces them exactly."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    values = grid.index_to_world(idx) @ np.asarray(coef) + offset
    return Volume.on_grid(values.astype(np.float64), grid)


@pytest.fixture
def oblique_grid() -> Grid:
    """Anisotropic, off-origin, rotated about all axes."""
    d = Rotation.from_euler("xyz", [11, -17, 29], degrees=True).as_matrix()
    return Grid((18, 22, 20), (2.5, 0.9, 1.3), (-31.0, 12.5, 40.25), d)


def test_standard_planes_are_the_array_slices():
    rng = np.random.default_rng(1)
    vol = Volume(rng.random((7, 9, 11)).astype(np.float32), (3.0, 2.0, 2.0), (10.0, -20.0, 5.0))
    k, j, i = 4, 3, 6
    cursor = vol.grid.index_to_world([k, j, i])
    # axial at the spacing of its rows/columns: exactly the array's slice k
    axial = reslice(vol, oblique_plane(cursor, base="axial"), pixel_mm=2.0)
    assert axial.image.shape == (9, 11)
    np.testing.assert_allclose(axial.image, vol.array[k], atol=1e-5)
    # coronal: superior up (row 0 is the last slice), columns = x
    cor = reslice(vol, oblique_plane(cursor, base="coronal"), pixel_mm=1.0)
    rc = np.round(cor.world_to_pixel(vol.grid.index_to_world([[6, j, 0], [0, j, 10]]))).astype(int)
    assert rc[0, 0] < rc[1, 0] and rc[0, 1] < rc[1, 1]  # superior slice higher, left column further right
    np.testing.assert_allclose(cor.image[tuple(rc[0])], vol.array[6, j, 0], atol=1e-5)
    np.testing.assert_allclose(cor.image[tuple(rc[1])], vol.array[0, j, 10], atol=1e-5)
    # the cursor lies on the plane and maps back onto itself
    np.testing.assert_allclose(axial.pixel_to_world(axial.world_to_pixel(cursor)), cursor, atol=1e-9)


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 0, 0), (0, -25, 40), (17, 33, -71)])
@pytest.mark.parametrize("base", ["axial", "coronal", "sagittal"])
def test_oblique_samples_land_where_the_geometry_says(oblique_grid, base, angles):
    vol = _linear_volume(oblique_grid)
    cursor = oblique_grid.index_to_world([9, 10, 8.5])
    plane = oblique_plane(cursor, base=base, angles_deg=angles)
    out = reslice(vol, plane, pixel_mm=0.8)
    assert out.image.dtype == np.float32
    rr, cc = np.meshgrid(*[np.arange(n) for n in out.image.shape], indexing="ij")
    world = out.pixel_to_world(np.stack([rr, cc], -1))
    np.testing.assert_allclose(plane.distance(world), 0, atol=1e-6)  # every pixel lies on the plane
    inside = np.all((oblique_grid.world_to_index(world) >= 0.01)
                    & (oblique_grid.world_to_index(world) <= np.asarray(oblique_grid.shape) - 1.01), -1)
    assert inside.sum() > 100
    expected = world @ np.array([0.7, -1.3, 2.1]) + 5.0
    np.testing.assert_allclose(out.image[inside], expected[inside], rtol=1e-5, atol=1e-3)
    # outside the volume: the fill value
    outside = np.all(np.abs(oblique_grid.world_to_index(world) - (np.asarray(oblique_grid.shape) - 1) / 2)
                     > np.asarray(oblique_grid.shape), -1)
    assert np.all(out.image[outside] == 0)


def test_angles_turn_the_axial_plane_into_the_other_two():
    r = rotation_matrix((-90, 0, 0))  # about the left-right axis: axial -> coronal, superior up
    ax = oblique_plane((0, 0, 0), base="axial", angles_deg=(-90, 0, 0))
    cor = oblique_plane((0, 0, 0), base="coronal")
    np.testing.assert_allclose(ax.row, cor.row, atol=1e-12)
    np.testing.assert_allclose(ax.col, cor.col, atol=1e-12)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    sag = oblique_plane((0, 0, 0), base="axial", angles_deg=(0, 90, 0))  # about A-P: normal along L
    assert abs(abs(sag.normal[2]) - 1) < 1e-12
    turned = oblique_plane((0, 0, 0), base="axial", angles_deg=(0, 0, 90))  # in-plane turn
    np.testing.assert_allclose(np.abs(turned.normal), [1, 0, 0], atol=1e-12)


def test_labels_are_resampled_nearest_and_keep_their_dtype(oblique_grid):
    lab = np.zeros(oblique_grid.shape, np.uint8)
    lab[5:12, 6:15, 4:14] = 2
    lab[8:10, 9:12, 7:10] = 3
    vol = Volume.on_grid(lab, oblique_grid, kind="label")
    out = reslice(vol, oblique_plane(oblique_grid.index_to_world([9, 10, 8.5]), angles_deg=(10, 20, 30)))
    assert out.image.dtype == np.uint8
    assert set(np.unique(out.image)) == {0, 2, 3}


def test_labels_on_another_grid_land_on_the_pixels_of_the_image(oblique_grid):
    image = _linear_volume(oblique_grid)
    centre = oblique_grid.index_to_world([9, 10, 8.5])
    other = Grid((30, 26, 28), (1.0, 1.0, 1.0), tuple(centre - (15.3, 13.1, 14.6)))  # axis aligned, other box
    lab = np.zeros(other.shape, np.uint8)
    lab[10:20, 8:18, 9:19] = 4
    plane = oblique_plane(centre, angles_deg=(10, 5, -20))
    img = reslice(image, plane, pixel_mm=0.9)
    on_img = reslice(Volume.on_grid(lab, other, kind="label"), plane, like=img)
    assert on_img.image.shape == img.image.shape and on_img.image.dtype == np.uint8
    np.testing.assert_allclose(on_img.origin, img.origin)
    # every labelled pixel's world position falls in the labelled block of the other grid
    world = img.pixel_to_world(np.argwhere(on_img.image == 4))
    idx = np.round(other.world_to_index(world)).astype(int)
    assert len(idx) > 10 and np.all(lab[tuple(idx.T)] == 4)


def test_image_stays_still_while_the_plane_moves_along_its_normal(oblique_grid):
    vol = _linear_volume(oblique_grid)
    p = oblique_plane(oblique_grid.index_to_world([9, 10, 8]), angles_deg=(15, 5, 0))
    a = reslice(vol, p, pixel_mm=1.0)
    b = reslice(vol, p.through(np.asarray(p.point) + 2.0 * p.normal + 3.0 * np.asarray(p.row)), pixel_mm=1.0)
    assert a.image.shape == b.image.shape
    np.testing.assert_allclose(b.origin - a.origin, 2.0 * p.normal, atol=1e-9)


def test_plane_from_a_line_drawn_in_the_axial_view():
    p0, p1 = np.array([10.0, -5.0, -20.0]), np.array([10.0, 15.0, 20.0])
    plane = plane_from_line(p1, p0, view_normal=(1, 0, 0))
    assert plane.row == (-1.0, 0.0, 0.0)  # superior up
    assert plane.col[2] > 0  # towards the patient's left
    np.testing.assert_allclose(plane.distance(np.stack([p0, p1])), 0, atol=1e-12)
    with pytest.raises(OptionError, match="parallel"):
        plane_from_line((0, 0, 0), (5, 0, 0), view_normal=(1, 0, 0))


def test_markers_follow_the_radiological_convention():
    assert screen_markers((0, 1, 0), (0, 0, 1)) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert screen_markers((-1, 0, 0), (0, 0, 1)) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert screen_markers((-1, 0, 0), (0, 1, 0)) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    assert direction_letters((0.7, -0.7, 0.05)) == "SA"


def test_bad_arguments_raise_option_errors(oblique_grid):
    vol = _linear_volume(oblique_grid)
    with pytest.raises(OptionError, match="base"):
        oblique_plane((0, 0, 0), base="transverse")
    with pytest.raises(OptionError, match="pixel_mm"):
        reslice(vol, oblique_plane((0, 0, 0)), pixel_mm=0)
    with pytest.raises(OptionError, match="angles_deg"):
        oblique_plane((0, 0, 0), angles_deg=(1, 2))
    with pytest.raises(OptionError, match="orthogonal"):
        Plane((0, 0, 0), (1, 0, 0), (1, 1, 0))
    with pytest.raises(OptionError, match="does not match"):
        reslice_array(np.zeros((2, 2, 2)), oblique_grid, oblique_plane((0, 0, 0)))
