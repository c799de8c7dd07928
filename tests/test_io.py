"""Readers and writers: formats, geometry, and bad input that must fail clearly, naming the file."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_mriseg.core import convert
from napari_mriseg.core.errors import (
    ImageReadError,
    InvalidImageError,
    MriSegError,
    OutputExistsError,
    ResourceLimitError,
)
from napari_mriseg.core.io import ImageWriteError, read_volume, read_volumes, write_volume
from napari_mriseg.core.volume import Volume

from .conftest import oblique_sitk_image


def _nifti(path, data, affine=None):
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_and_values(rng, tmp_path, suffix):
    vol = convert.from_sitk(oblique_sitk_image(rng), name="t1")
    path = write_volume(vol, tmp_path / f"vol{suffix}")
    back = read_volume(path)
    assert back.grid.mismatch(vol.grid) is None
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == vol.array.dtype
    assert back.name == "vol" and back.meta["source"] == str(path)


def test_labels_keep_integer_type(tmp_path):
    lab = Volume(np.arange(24).reshape(2, 3, 4) % 4, kind="label")
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        back = read_volume(write_volume(lab, tmp_path / f"l{suffix}"), kind="label")
        assert back.array.dtype == np.uint8
        np.testing.assert_array_equal(back.array, lab.array)


def test_writer_never_overwrites_without_permission(tmp_path):
    vol = Volume(np.ones((2, 3, 4), np.float32))
    path = write_volume(vol, tmp_path / "a.nii.gz")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="a.nii.gz"):
        write_volume(vol.with_array(vol.array * 2), path)
    assert path.read_bytes() == before
    write_volume(vol.with_array(vol.array * 2), path, overwrite=True)
    assert read_volume(path).array.max() == 2


def test_read_only_folder_fails_clearly_and_leaves_nothing(read_only_dir):
    with pytest.raises(ImageWriteError, match="read_only") as err:
        write_volume(Volume(np.ones((2, 2, 2))), read_only_dir / "x.nii.gz")
    assert "cannot write" in str(err.value)
    assert list(read_only_dir.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """A write that dies half-way (full disk) leaves neither the target nor a temp file."""
    import napari_mriseg.core.io as io_mod

    def boom(image, filename):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod.convert, "to_nifti", lambda v: object())
    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(ImageWriteError, match="No space left"):
        write_volume(Volume(np.ones((2, 2, 2))), tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_volume(tmp_path / "nope.nii.gz")


def test_unknown_suffix(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(ImageReadError, match="unknown file type"):
        read_volume(tmp_path / "x.png")


def test_corrupt_nifti_gz(tmp_path, rng):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(gzip.compress(rng.bytes(2000)))
    with pytest.raises(ImageReadError) as err:
        read_volume(path)
    assert "corrupt.nii.gz" in str(err.value)


def test_truncated_nifti_gz(tmp_path, rng):
    good = _nifti(tmp_path / "good.nii.gz", rng.random((30, 30, 30)).astype(np.float32))
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated") as err:
        read_volume(bad)
    assert "truncated.nii.gz" in str(err.value)


def test_truncated_uncompressed_nifti_refused_before_reading(tmp_path, rng):
    good = _nifti(tmp_path / "good.nii", rng.random((20, 20, 20)).astype(np.float32))
    bad = tmp_path / "short.nii"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ImageReadError, match="truncated"):
        read_volume(bad)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_header_declaring_32_gib_in_a_tiny_file(tmp_path, suffix):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2048, 2048, 2048))
    hdr.set_data_dtype(np.float32)  # 32 GiB
    raw = hdr.binaryblock + b"\0" * 4 + b"\0" * 600
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    assert path.stat().st_size < 1100
    with pytest.raises((ResourceLimitError, ImageReadError)) as err:
        read_volume(path)
    assert "huge" in str(err.value) and ("GiB" in str(err.value) or "bytes" in str(err.value))


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_header_declaring_huge_size(tmp_path, suffix):
    path = tmp_path / f"huge{suffix}"
    if suffix == ".mha":
        path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4096 4096 1024\n"
                         b"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n" + b"\0" * 500)
    else:
        path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4096 4096 1024\n"
                         b"encoding: raw\nendian: little\nspace: left-posterior-superior\n"
                         b"space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n\n" + b"\0" * 500)
    with pytest.raises(ResourceLimitError, match="GiB"):
        read_volume(path)


def test_2d_image(tmp_path):
    path = _nifti(tmp_path / "slice.nii.gz", np.ones((64, 64), np.float32))
    with pytest.raises(InvalidImageError, match="2D image") as err:
        read_volume(path)
    assert "slice.nii.gz" in str(err.value)
    one_slice = _nifti(tmp_path / "one.nii.gz", np.ones((64, 64, 1), np.float32))
    with pytest.raises(InvalidImageError, match="2D image"):
        read_volume(one_slice)


def test_5d_image(tmp_path):
    path = _nifti(tmp_path / "five.nii.gz", np.ones((4, 4, 4, 2, 2), np.float32))
    with pytest.raises(InvalidImageError, match="5D image"):
        read_volume(path)


def test_nan_filled_image(tmp_path):
    path = _nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(InvalidImageError, match="NaN") as err:
        read_volume(path)
    assert "nan.nii.gz" in str(err.value)


def test_a_few_nans_are_zeroed_and_reported(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, :2] = np.nan
    vol = read_volume(_nifti(tmp_path / "fewnan.nii.gz", data))
    assert np.isfinite(vol.array).all() and vol.array.sum() == 62
    assert any("2 NaN" in w for w in vol.meta["warnings"])


def test_4d_is_split_into_channels(tmp_path, rng):
    data = rng.random((5, 6, 7, 3)).astype(np.float32)
    path = _nifti(tmp_path / "msd.nii.gz", data)
    vols = read_volumes(path)
    assert [v.name for v in vols] == ["msd_0000", "msd_0001", "msd_0002"]
    for c, v in enumerate(vols):
        np.testing.assert_array_equal(v.array, data[..., c].transpose(2, 1, 0))
    with pytest.raises(InvalidImageError, match="read_volumes"):
        read_volume(path)


def test_qform_sform_disagreement_is_reported_and_sform_followed(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    q = np.eye(4)
    q[:3, 3] = [5, 0, 0]
    img.set_qform(q, code=1)
    s = np.eye(4)
    s[:3, 3] = [-3, 2, 1]
    img.set_sform(s, code=2)
    nib.save(img, str(tmp_path / "qs.nii.gz"))
    vol = read_volume(tmp_path / "qs.nii.gz")
    assert any("qform" in w and "sform" in w for w in vol.meta["warnings"])
    # nibabel's choice (sform): RAS (-3, 2, 1) is LPS (3, -2, 1), listed (S, P, L) = (1, -2, 3)
    np.testing.assert_allclose(vol.origin, (1, -2, 3))


def test_itk_4d_and_truncated_mha(tmp_path, rng):
    arr = rng.random((2, 3, 4, 5)).astype(np.float32)  # (t, z, y, x)
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=False), str(tmp_path / "four.mha"))
    vols = read_volumes(tmp_path / "four.mha")
    assert len(vols) == 2 and vols[1].shape == (3, 4, 5)
    np.testing.assert_array_equal(vols[1].array, arr[1])
    good = write_volume(Volume(rng.random((8, 8, 8)).astype(np.float32)), tmp_path / "g.mha")
    (tmp_path / "cut.mha").write_bytes(good.read_bytes()[:-1500])
    with pytest.raises(ImageReadError, match="cut.mha"):
        read_volume(tmp_path / "cut.mha")


def test_every_error_is_a_project_error_with_builtin_base():
    assert issubclass(ImageReadError, (MriSegError, OSError))
    assert issubclass(InvalidImageError, ValueError)
    assert json.dumps(str(InvalidImageError("x", path="/a/b.nii")))  # message is plain text
    assert str(InvalidImageError("bad", path="/a/b.nii")) == "/a/b.nii: bad"
