"""Geometry travels with the voxels: Volume <-> SimpleITK / NIfTI / napari, and all 48 storage
orders of a NIfTI file written back with the image's affine and zero voxel mismatches."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_mriseg.core import convert
from napari_mriseg.core.errors import GeometryMismatchError, InvalidImageError
from napari_mriseg.core.io import read_volume, write_volume
from napari_mriseg.core.resample import resample_to_grid, to_display_orientation
from napari_mriseg.core.volume import Grid, Volume, label_dtype

from .conftest import ORIENTATIONS, oblique_sitk_image, oriented_nifti


def test_affine_matches_sitk_index_to_physical_point(rng):
    image = oblique_sitk_image(rng)
    vol = convert.from_sitk(image)
    # the formula of STYLE.md: A = D[::-1, ::-1] @ diag(spacing[::-1]), t = origin[::-1]
    d = np.array(image.GetDirection()).reshape(3, 3)
    expected = np.eye(4)
    expected[:3, :3] = d[::-1, ::-1] @ np.diag(image.GetSpacing()[::-1])
    expected[:3, 3] = image.GetOrigin()[::-1]
    np.testing.assert_allclose(vol.affine, expected, atol=1e-12)
    for idx_xyz in [(0, 0, 0), (6, 5, 4), (3, 1, 2), (6, 0, 4)]:
        world_xyz = image.TransformIndexToPhysicalPoint(idx_xyz)
        np.testing.assert_allclose(vol.grid.index_to_world(idx_xyz[::-1])[::-1], world_xyz, atol=1e-9)
        np.testing.assert_allclose(vol.grid.world_to_index(world_xyz[::-1])[::-1], idx_xyz, atol=1e-9)


def test_sitk_round_trip_is_exact(rng):
    image = oblique_sitk_image(rng)
    back = convert.to_sitk(convert.from_sitk(image))
    assert back.GetSpacing() == image.GetSpacing()
    assert back.GetOrigin() == image.GetOrigin()
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-15)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_nifti_affine_is_itk_geometry_in_ras(rng, tmp_path):
    image = oblique_sitk_image(rng)
    vol = convert.from_sitk(image)
    path = write_volume(vol, tmp_path / "oblique.nii.gz")
    itk_back = sitk.ReadImage(str(path))
    np.testing.assert_allclose(itk_back.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(itk_back.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(itk_back.GetSpacing(), image.GetSpacing(), atol=1e-5)
    # nibabel's affine maps (i, j, k) to RAS: the LPS point with x, y negated
    nii = nib.load(str(path))
    for idx in [(0, 0, 0), (6, 5, 4)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(idx))
        ras = nii.affine @ [*idx, 1]
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-5)


def test_napari_layer_round_trip_is_exact(rng):
    vol = convert.from_sitk(oblique_sitk_image(rng))
    kw = convert.layer_kwargs(vol)
    assert "affine" in kw  # oblique: napari needs the rotation
    back = convert.from_layer(vol.array, kw["scale"], kw["translate"], kw["affine"])
    assert back.grid.mismatch(vol.grid) is None
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-12)
    axis_aligned = Volume(vol.array, (2.0, 0.5, 0.75), (3.0, -4.0, 5.0))
    kw = convert.layer_kwargs(axis_aligned)
    assert "affine" not in kw and kw["translate"] == (3.0, -4.0, 5.0)


@pytest.mark.parametrize("k", range(48))
def test_48_storage_orders_labels_written_back_on_the_image(tmp_path, k):
    ornt = ORIENTATIONS[k]
    image_path, marker = oriented_nifti(tmp_path / "image.nii.gz", ornt)
    image_nii = nib.load(str(image_path))
    vol = read_volume(image_path)
    # a label drawn where the marker is, through the display path that napari uses
    labels = vol.with_array((vol.array > 400).astype(np.uint8), kind="label")
    shown, how = to_display_orientation(labels)
    assert how in ("as stored", "reoriented")
    assert np.allclose(shown.direction, np.eye(3))
    drawn = resample_to_grid(shown, vol.grid)
    out = write_volume(drawn, tmp_path / "labels.nii.gz")

    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, image_nii.affine, atol=1e-5)
    assert back.get_data_dtype() == np.uint8
    assert int((np.asarray(back.dataobj) != marker).sum()) == 0
    # SimpleITK agrees on geometry and voxels
    itk_img, itk_lab = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(itk_lab.GetDirection(), itk_img.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(itk_lab.GetOrigin(), itk_img.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(itk_lab.GetSpacing(), itk_img.GetSpacing(), atol=1e-5)
    assert int((sitk.GetArrayFromImage(itk_lab) != marker.transpose(2, 1, 0)).sum()) == 0
    # the marker is in the patient's left half: RAS x below the volume's centre
    ijk = np.argwhere(np.asarray(back.dataobj) > 0)
    ras = nib.affines.apply_affine(back.affine, ijk)
    centre_x = nib.affines.apply_affine(back.affine, (np.array(back.shape) - 1) / 2)[0]
    assert ijk.size and np.all(ras[:, 0] < centre_x)
    # and in our LPS world, L (the last world axis) is above the centre
    world = shown.grid.index_to_world(np.argwhere(shown.array > 0))
    assert np.all(world[:, 2] > shown.grid.index_to_world((np.array(shown.shape) - 1) / 2)[2])


def test_label_dtype_is_smallest_integer():
    assert label_dtype(np.array([0, 3, 255])) == np.uint8
    assert label_dtype(np.array([0, 256])) == np.uint16
    assert label_dtype(np.array([-1, 2])) == np.int8
    assert label_dtype(np.array([0.0, 2.0])) == np.uint8
    with pytest.raises(InvalidImageError, match="non-integer"):
        label_dtype(np.array([0.5, 1.0]))
    assert Volume(np.zeros((2, 2, 2), np.int64), kind="label").array.dtype == np.uint8


def test_labels_resample_nearest_and_keep_values(rng):
    lab = Volume(rng.integers(0, 4, (6, 7, 8)).astype(np.uint8), (2.0, 1.0, 1.0), kind="label")
    fine = Grid((12, 7, 8), (1.0, 1.0, 1.0), (-0.5, 0, 0))
    out = resample_to_grid(lab, fine)
    assert out.array.dtype == np.uint8
    assert set(np.unique(out.array)) <= set(np.unique(lab.array))
    np.testing.assert_array_equal(out.array[1::2], lab.array)
    with pytest.raises(ValueError, match="nearest"):
        resample_to_grid(lab, fine, interpolation="linear")


def test_grid_mismatch_names_field_values_and_fix():
    a = Grid((4, 5, 6), (1, 1, 1))
    with pytest.raises(GeometryMismatchError) as err:
        a.check_same(Grid((4, 5, 6), (1, 1, 3)), other_name="sequence 'flair'")
    assert err.value.field == "spacing"
    assert err.value.expected == (1.0, 1.0, 1.0) and err.value.actual == (1.0, 1.0, 3.0)
    assert "flair" in str(err.value) and "co-register" in str(err.value)
    with pytest.raises(GeometryMismatchError, match="origin"):
        a.check_same(Grid((4, 5, 6), (1, 1, 1), (0, 0, 5)))


def test_volume_refuses_bad_geometry():
    with pytest.raises(InvalidImageError, match="3D"):
        Volume(np.zeros((4, 4)))
    with pytest.raises(InvalidImageError, match="positive"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    with pytest.raises(InvalidImageError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=[[1, 0.5, 0], [0, 1, 0], [0, 0, 1]])
