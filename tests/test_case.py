"""Cases: sequence names from file names, reference grid checks, 4D and nnU-Net layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_mriseg.core.case import Case, infer_sequence_name, is_label_file, load_case, scan_case
from napari_mriseg.core.errors import GeometryMismatchError, ImageReadError, InvalidImageError
from napari_mriseg.core.io import write_volume
from napari_mriseg.core.volume import Volume


@pytest.mark.parametrize(("filename", "expected"), [
    ("t1.nii.gz", "t1"), ("T1w.nii", "t1"), ("sub-01_T1w.nii.gz", "t1"), ("T1_MPRAGE_SAG.nrrd", "t1"),
    ("t1c.nii.gz", "t1c"), ("BraTS2021_00001_t1ce.nii.gz", "t1c"), ("t1gd.mha", "t1c"),
    ("T1_POST.nii", "t1c"), ("t1_gd.nii.gz", "t1c"), ("sub-01_ce-gd_T1w.nii.gz", "t1c"),
    ("t2.nii.gz", "t2"), ("sub-01_T2w.nii.gz", "t2"), ("BraTS2021_00001_t2.nii.gz", "t2"),
    ("flair.nii.gz", "flair"), ("T2_FLAIR_AX.nii", "flair"), ("BraTS2021_00001_flair.nii.gz", "flair"),
    ("case_0000.nii.gz", None), ("scout.nii.gz", None), ("t10.nii.gz", None),
])
def test_sequence_names_from_file_names(filename, expected):
    assert infer_sequence_name(filename) == expected


def test_label_file_names():
    assert is_label_file("BraTS2021_00001_seg.nii.gz") and is_label_file("labels.nii.gz")
    assert not is_label_file("t1.nii.gz") and not is_label_file("segment_me_t1.nii")


def _write_case(folder, names, shapes=None, spacing=(1.0, 1.0, 1.0), labels=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i, name in enumerate(names):
        shape = shapes[i] if shapes else (6, 7, 8)
        write_volume(Volume(rng.random(shape).astype(np.float32), spacing, (1, 2, 3)), folder / name)
    if labels:
        write_volume(Volume(np.ones((6, 7, 8), np.uint8), spacing, (1, 2, 3), kind="label"), folder / "seg.nii.gz")
    return folder


def test_load_brats_folder(tmp_path):
    folder = _write_case(tmp_path / "BraTS2021_00001", [
        "BraTS2021_00001_flair.nii.gz", "BraTS2021_00001_t1.nii.gz",
        "BraTS2021_00001_t1ce.nii.gz", "BraTS2021_00001_t2.nii.gz"])
    case = load_case(folder)
    assert set(case.names) == {"t1", "t1c", "t2", "flair"}
    assert case.reference == "t1" and case.case_id == "BraTS2021_00001"
    assert case.labels is not None and case.labels.array.dtype == np.uint8
    case.check_same_grid()
    assert case.misregistered() == []


def test_names_and_reference_overridable(tmp_path):
    folder = _write_case(tmp_path / "c", ["a.nii.gz", "b.nii.gz"], labels=False)
    case = load_case(folder, names=["t2", "flair"], reference="flair")
    assert case.names == ("t2", "flair") and case.reference == "flair"
    with pytest.raises(InvalidImageError, match="reference 'dwi'"):
        load_case(folder, reference="dwi")


def test_sequences_on_different_grids_are_reported(tmp_path):
    folder = _write_case(tmp_path / "c", ["t1.nii.gz", "flair.nii.gz"], shapes=[(6, 7, 8), (3, 7, 8)],
                         labels=False)
    case = load_case(folder)
    assert case.misregistered() == ["flair"]
    with pytest.raises(GeometryMismatchError) as err:
        case.check_same_grid()
    assert err.value.field == "shape" and "flair" in str(err.value) and "co-register" in str(err.value)


def test_labels_not_on_reference_grid_is_an_error(tmp_path):
    folder = _write_case(tmp_path / "c", ["t1.nii.gz"], labels=False)
    write_volume(Volume(np.ones((6, 7, 8), np.uint8), (1, 1, 2), (1, 2, 3), kind="label"), folder / "seg.nii.gz")
    with pytest.raises(GeometryMismatchError, match="spacing") as err:
        load_case(folder)
    assert "seg.nii.gz" in str(err.value)


def test_nnunet_naming_with_dataset_json(tmp_path):
    images = tmp_path / "Dataset001" / "imagesTs"
    _write_case(images, ["brain_001_0000.nii.gz", "brain_001_0001.nii.gz"], labels=False)
    (tmp_path / "Dataset001" / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "FLAIR"}}))
    case = load_case(images)
    assert case.names == ("t1", "flair")


def test_msd_4d_case(tmp_path):
    import nibabel as nib

    data = np.random.default_rng(0).random((5, 6, 7, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "BRATS_001.nii.gz"))
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}}))
    case = load_case(tmp_path / "BRATS_001.nii.gz")
    assert case.names == ("flair", "t1", "t1c", "t2")
    np.testing.assert_array_equal(case["t1c"].array, data[..., 2].transpose(2, 1, 0))
    assert case.case_id == "BRATS_001"


def test_scan_lists_without_loading_and_names_apply(tmp_path):
    folder = _write_case(tmp_path / "c", ["t1.nii.gz", "x.nii.gz"])
    entries = scan_case(folder)
    assert [(e.name, e.kind) for e in entries] == [("labels", "label"), ("t1", "image"), ("x", "image")]
    renamed = scan_case(folder, names=["t1", "flair"])
    assert [e.name for e in renamed if e.kind == "image"] == ["t1", "flair"]


def test_empty_and_non_image_folders(tmp_path):
    (tmp_path / "c1").mkdir()
    with pytest.raises(ImageReadError, match="folder is empty") as err:
        load_case(tmp_path / "c1")
    assert "c1" in str(err.value)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    (notes / "report.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(ImageReadError, match="no volume files .* no DICOM") as err:
        load_case(notes)
    assert "notes" in str(err.value)


def test_case_refuses_label_as_sequence_and_unknown_names():
    vol = Volume(np.zeros((2, 3, 4)))
    with pytest.raises(InvalidImageError):
        Case({"t1": vol.with_array(vol.array.astype(np.uint8), kind="label")})
    case = Case({"t2": vol, "t1": vol})
    assert case.reference == "t1"
    with pytest.raises(KeyError, match="flair"):
        case["flair"]
