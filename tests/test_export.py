"""Export: nnU-Net v2 datasets (round trip, append, ignore, provenance, refusals, all-or-nothing
on a read-only folder and a full disk), labels alone on native grids, DICOM SEG, `mriseg export`."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_mriseg.core import convert
from napari_mriseg.core.case import load_case
from napari_mriseg.core.dataset import (
    DEFAULT_LABELS,
    DatasetError,
    check_anonymous_case_id,
    check_labels,
    dicom_patient_names,
    propose_case_id,
    read_dataset,
    read_training_case,
)
from napari_mriseg.core.errors import OutputExistsError
from napari_mriseg.core.export import (
    ExportError,
    MissingDependencyError,
    RegistrationRecord,
    case_exists,
    export_case,
    export_dicom_seg,
    labels_to_native,
    model_provenance,
    write_labels,
)
from napari_mriseg.core.phantom import make_phantom_case, write_phantom_case
from napari_mriseg.core.registration import apply_transform
from napari_mriseg.core.volume import Volume

log = logging.getLogger(__name__)

#: A case folder named like a patient: nothing of it may reach the dataset.
PATIENT_FOLDER = "DOE_JOHN_19700101"
MODEL = Path(__file__).resolve().parents[1] / "napari_mriseg" / "sample_data" / "demo_model.mriseg"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def phantom():
    return make_phantom_case(0, spacing_mm=3.0)


@pytest.fixture(scope="module")
def on_disk(phantom, tmp_path_factory):
    """The phantom written to a folder named like a patient, loaded back as a clinician would."""
    folder = write_phantom_case(phantom, tmp_path_factory.mktemp("cases") / PATIENT_FOLDER)
    return folder, load_case(folder)


def _coregister(case, phantom):
    """The case co-registered with the phantom's known transforms (what `register_case` estimates)."""
    seqs = {n: case[n] if n == case.reference else apply_transform(case[n], phantom.transform(n), case.grid)
            for n in ("t1", "t1c", "t2", "flair")}  # the loader lists files alphabetically; the model's order
    record = RegistrationRecord(case.reference, {n: phantom.transform(n) for n in case.names if n != case.reference},
                                {"transform": "rigid", "sequences": {n: {"rotation_deg": 1.0} for n in case.names}})
    return case.replace(sequences=seqs), record


@pytest.fixture(scope="module")
def registered(on_disk, phantom):
    return _coregister(on_disk[1], phantom)


def _corrected(truth: Volume) -> Volume:
    """The truth with a scripted 'correction': a slab of oedema painted as enhancing, a few
    voxels erased."""
    arr = truth.array.copy()
    z = np.argwhere(arr > 0)[:, 0]
    mid = int(np.median(z))
    slab = arr[mid:mid + 2]
    slab[slab == 2] = 3
    arr[mid + 3][arr[mid + 3] == 1] = 0
    return truth.with_array(arr, name="labels")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes (None for folders) under ``root``, by relative path."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def make_read_only(folder: Path) -> None:
    """Nobody, root included, can create, rename or delete entries in ``folder``."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
            pytest.skip("running as root without chattr +i: cannot make a read-only folder")
    else:
        folder.chmod(0o555)


def make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    else:
        folder.chmod(0o755)


# --------------------------------------------------------------------------- round trip
def test_round_trip_with_nibabel_and_simpleitk(registered, phantom, on_disk, tmp_path):
    case, record = registered
    folder, _ = on_disk
    labels = _corrected(phantom.truth)
    result = export_case(case, labels, tmp_path / "Dataset001_Brain", registration=record, prediction=phantom.truth)
    assert result.channel_names == ("t1", "t1c", "t2", "flair") and result.num_training == 1
    ref_affine = nib.load(str(folder / "t1.nii.gz")).affine  # the reference as the scanner stored it
    ref_grid = case.grid
    max_diff, mismatches = 0.0, 0
    for path, vol in [*zip(result.images, (case[n] for n in result.channel_names)), (result.labels, labels)]:
        img = nib.load(str(path))
        max_diff = max(max_diff, float(np.abs(img.affine - ref_affine).max()),
                       float(np.abs(img.header.get_qform() - ref_affine).max()))
        data = np.asanyarray(img.dataobj).transpose(2, 1, 0)
        mismatches += int(np.count_nonzero(data != vol.array))
        itk = sitk.ReadImage(str(path))
        max_diff = max(max_diff, float(np.abs(convert.grid_from_sitk(itk).affine - ref_grid.affine).max()))
        mismatches += int(np.count_nonzero(sitk.GetArrayFromImage(itk) != vol.array))
        assert data.dtype == vol.array.dtype
    log.info("round trip: max affine difference %.3g mm, %d voxel mismatches (%d files x 2 readers, %d voxels "
             "each)", max_diff, mismatches, len(result.images) + 1, labels.array.size)  # --log-cli-level=INFO
    assert max_diff < 1e-5
    assert mismatches == 0
    assert np.count_nonzero(nib.load(str(result.labels)).get_fdata() == 3) == np.count_nonzero(labels.array == 3)


def test_nifti_headers_carry_no_identifier(registered, phantom, tmp_path):
    case, _ = registered
    result = export_case(case, phantom.truth, tmp_path / "ds")
    for path in (*result.images, result.labels):
        img = nib.load(str(path))
        for name in ("descrip", "aux_file", "intent_name", "db_name"):
            assert img.header[name].tobytes().strip(b"\0") == b"", (path.name, name)
        assert len(img.header.extensions) == 0
        header = gzip.decompress(path.read_bytes())[:352]
        assert not re.search(rb"[A-Za-z]{3,}", header), header  # no text at all, only numbers and 'n+1'
    text = "".join(p.read_text() for p in (result.provenance, result.dataset_json))
    for name in [PATIENT_FOLDER, "DOE", "JOHN"] + [f"{n}.nii.gz" for n in case.names]:
        assert name not in text
    assert not any(PATIENT_FOLDER in str(p) for p in (tmp_path / "ds").rglob("*"))


def test_dicom_case_exports_without_patient_name(tmp_path):
    from .test_dicom import _write_series

    _write_series(tmp_path / "Secret_Patient", proj=(0.0, 2.5, 5.0, 7.5))
    case = load_case(tmp_path / "Secret_Patient")
    assert case.case_id == "Secret_Patient"  # the loader's default: the folder's name
    labels = Volume.zeros_like_labels(case.grid)
    labels.array[1:3, 2:4, 2:5] = 2
    root = tmp_path / "ds"
    with pytest.raises(DatasetError, match="name"):
        export_case(case, labels, root, case_id="secret_001")
    assert not root.exists()
    result = export_case(case, labels, root)
    assert result.case_id.startswith("case_") and "ecret" not in result.case_id
    for p in root.rglob("*"):
        if p.is_file():
            data = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
            assert b"Secret" not in data and b"SECRET" not in data and b"Patient" not in data, p
    back = nib.load(str(result.labels))
    np.testing.assert_allclose(back.affine, convert.grid_to_ras_affine(case.grid), atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj).transpose(2, 1, 0), labels.array)


# --------------------------------------------------------------------------- dataset consistency
def test_appending_two_cases_keeps_dataset_json_consistent(registered, phantom, tmp_path):
    case, record = registered
    root = tmp_path / "ds"
    first = export_case(case, phantom.truth, root, registration=record)
    other = case.replace(sequences={n: v.with_array(v.array[::-1].copy()) for n, v in case.sequences.items()})
    second = export_case(other, phantom.truth.with_array(phantom.truth.array[::-1].copy()), root)
    assert first.case_id != second.case_id and second.num_training == 2
    meta = json.loads((root / "dataset.json").read_text())
    assert meta == {"channel_names": {"0": "t1", "1": "t1c", "2": "t2", "3": "flair"},
                    "labels": {"background": 0, **DEFAULT_LABELS}, "numTraining": 2, "file_ending": ".nii.gz"}
    info = read_dataset(root)
    assert set(info.cases) == {first.case_id, second.case_id}
    images, labels = read_training_case(info, second.case_id)
    np.testing.assert_array_equal(labels.array, phantom.truth.array[::-1])
    np.testing.assert_array_equal(images[2].array, case["t2"].array[::-1])
    assert sorted(p.name for p in (root / "provenance").iterdir()) == sorted(
        [f"{first.case_id}.json", f"{second.case_id}.json"])
    before = snapshot(root)
    with pytest.raises(DatasetError, match="differs from the dataset's"):
        export_case(case, phantom.truth, root, case_id="case_0003", channel_order=("flair", "t2", "t1c", "t1"))
    with pytest.raises(DatasetError, match="differ from the dataset's"):
        export_case(case, phantom.truth, root, case_id="case_0003", label_names={"tumour": 1, "edema": 2, "x": 3})
    bad = phantom.truth.with_array(np.where(phantom.truth.array == 3, 7, phantom.truth.array))
    with pytest.raises(DatasetError, match=r"values \[7\]"):
        export_case(case, bad, root, case_id="case_0003")
    with pytest.raises(DatasetError, match="co-register"):
        export_case(case.replace(sequences={**case.sequences, "t2": phantom.case["t2"]}), phantom.truth, root)
    assert snapshot(root) == before


def test_model_channel_order_and_labels(registered, phantom, tmp_path):
    from napari_mriseg.ml.model_file import read_config

    case, _ = registered
    config = read_config(MODEL)
    info = model_provenance(MODEL, config)
    assert info["name"] == "demo_model" and len(info["weights_sha256"]) == 64
    assert info["version"] == info["weights_sha256"][:12] and info["sequences"] == list(config.sequences)
    reordered = case.replace(sequences={n: case[n] for n in ("flair", "t2", "t1c", "t1")})
    result = export_case(reordered, phantom.truth, tmp_path / "ds", channel_order=("T1", "t1c", "t2", "FLAIR"),
                         label_names=config.labels, model_info=info)
    assert result.channel_names == ("T1", "t1c", "t2", "FLAIR")
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(result.images[3])).dataobj).transpose(2, 1, 0),
                                  case["flair"].array)
    prov = json.loads(result.provenance.read_text())
    assert prov["model"]["name"] == "demo_model" and prov["model"]["labels"] == DEFAULT_LABELS


def test_unreviewed_voxels_become_the_ignore_label(registered, phantom, tmp_path):
    case, _ = registered
    root = tmp_path / "ds"
    reviewed = np.zeros(phantom.truth.shape, bool)
    reviewed[: reviewed.shape[0] // 2] = True
    with pytest.raises(DatasetError, match="no reviewed mask"):
        export_case(case, phantom.truth, root, ignore_unreviewed=True)
    result = export_case(case, phantom.truth, root, reviewed=reviewed, ignore_unreviewed=True)
    assert result.label_values == {"background": 0, **DEFAULT_LABELS, "ignore": 4}
    back = np.asanyarray(nib.load(str(result.labels)).dataobj).transpose(2, 1, 0)
    assert np.all(back[~reviewed] == 4)
    np.testing.assert_array_equal(back[reviewed], phantom.truth.array[reviewed])
    assert result.ignored_voxels == int((~reviewed).sum())
    prov = json.loads(result.provenance.read_text())["review"]
    assert prov["reviewed_fraction"] == pytest.approx(reviewed.mean(), abs=1e-6)
    assert prov["ignored_voxels"] == result.ignored_voxels and prov["ignore_value"] == 4
    # a fully reviewed case appended later keeps "ignore" (and its place as the highest value)
    other = case.replace(sequences={n: v.with_array(v.array + 1) for n, v in case.sequences.items()})
    export_case(other, phantom.truth, root, reviewed=np.ones_like(reviewed))
    info = read_dataset(root)
    assert info.labels["ignore"] == 4 == info.ignore_value and info.class_labels == DEFAULT_LABELS
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 2
    with pytest.raises(DatasetError, match="highest"):
        check_labels({"a": 1, "ignore": 2, "b": 3})


def test_provenance_records_sources_registration_edits_and_time(registered, phantom, on_disk, tmp_path):
    case, record = registered
    folder, _ = on_disk
    labels = _corrected(phantom.truth)
    reviewed = np.zeros(labels.shape, bool)
    reviewed[:10] = True
    info = {"name": "demo", "version": "abc123"}
    result = export_case(case, labels, tmp_path / "ds", registration=record, prediction=phantom.truth,
                         reviewed=reviewed, model_info=info, sources={"labels": folder / "labels.nii.gz"})
    prov = json.loads(result.provenance.read_text())
    assert prov["case_id"] == result.case_id and prov["software"]["version"]
    when = datetime.fromisoformat(prov["exported_utc"].replace("Z", "+00:00"))
    assert when.utcoffset().total_seconds() == 0 and prov["exported_utc"].endswith("Z")
    hashes = {s["sequence"]: s["sha256"] for s in prov["sources"]}
    for name in ("t1", "t1c", "t2", "flair", "labels"):
        assert hashes[name] == hashlib.sha256((folder / f"{name}.nii.gz").read_bytes()).hexdigest()
    tfm = prov["registration"]["transforms_itk"]["flair"]
    (tmp_path / "flair.tfm").write_text(tfm)
    np.testing.assert_allclose(sitk.ReadTransform(str(tmp_path / "flair.tfm")).GetParameters(),
                               phantom.transform("flair").GetParameters(), atol=1e-6)
    assert prov["registration"]["sequences"]["flair"]["rotation_deg"] == 1.0
    assert prov["model"] == info
    edits = prov["edits"]
    pred, lab = phantom.truth.array, labels.array
    for name, value in DEFAULT_LABELS.items():
        p, c = pred == value, lab == value
        assert edits["labels"][name]["dice"] == pytest.approx(2 * (p & c).sum() / (p.sum() + c.sum()), abs=1e-6)
        assert edits["labels"][name]["volume_change_ml"] == pytest.approx((c.sum() - p.sum()) * 27 / 1000, abs=1e-3)
    assert edits["labels"]["enhancing"]["dice"] < 1.0 and edits["labels"]["enhancing"]["volume_change_ml"] > 0
    assert edits["voxels_changed"] == int((pred != lab).sum()) > 0
    assert prov["review"]["reviewed_fraction"] == pytest.approx(reviewed.mean(), abs=1e-6)


# --------------------------------------------------------------------------- case IDs, refusals
def test_case_ids_are_hashes_and_names_are_refused(registered, phantom, tmp_path):
    from .test_dicom import _write_series

    case, _ = registered
    images = [case[n] for n in case.names]
    assert propose_case_id(images) == propose_case_id(images)
    assert propose_case_id(images) != propose_case_id(images[::-1])
    assert re.fullmatch(r"case_[0-9a-f]{10}", propose_case_id(images))
    for bad in ("JohnDoe", "smith", "../x", "a b"):
        with pytest.raises(DatasetError):
            check_anonymous_case_id(bad)
    assert check_anonymous_case_id("case_0007") == "case_0007"
    _write_series(tmp_path / "dicom")
    names = dicom_patient_names([tmp_path / "dicom"])
    assert names == {"secret", "patient"}
    with pytest.raises(DatasetError, match="patient's name"):
        check_anonymous_case_id("PATIENT_007", patient_names=names)
    with pytest.raises(DatasetError, match="no digit"):
        export_case(case, phantom.truth, tmp_path / "ds", case_id="John_Smith")
    assert not (tmp_path / "ds").exists()


def test_existing_case_is_not_replaced_without_overwrite(registered, phantom, tmp_path):
    case, _ = registered
    root = tmp_path / "ds"
    first = export_case(case, phantom.truth, root, case_id="case_0001")
    assert case_exists(root, "case_0001") and not case_exists(root, "case_0002")
    before = snapshot(root)
    with pytest.raises(OutputExistsError, match="exists already"):
        export_case(case, _corrected(phantom.truth), root, case_id="case_0001")
    assert snapshot(root) == before
    again = export_case(case, _corrected(phantom.truth), root, case_id="case_0001", overwrite=True)
    assert again.replaced and not first.replaced and again.num_training == 1
    back = np.asanyarray(nib.load(str(again.labels)).dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(back, _corrected(phantom.truth).array)
    assert not [p for p in root.rglob(".*")]


# --------------------------------------------------------------------------- all or nothing
def test_read_only_folder_gives_a_clear_error_and_changes_nothing(registered, phantom, read_only_dir, tmp_path):
    case, _ = registered
    with pytest.raises(ExportError, match="read-only") as info:
        export_case(case, phantom.truth, read_only_dir / "ds")
    assert "Nothing was changed" in str(info.value)
    assert list(read_only_dir.iterdir()) == []
    # an existing dataset made read-only: refused, byte for byte as it was
    root = tmp_path / "ds"
    export_case(case, phantom.truth, root, case_id="case_0001")
    before = snapshot(root)
    make_read_only(root)
    try:
        with pytest.raises(ExportError, match="read-only"):
            export_case(case, phantom.truth, root, case_id="case_0002")
    finally:
        make_writable(root)
    assert snapshot(root) == before
    # only labelsTr read-only: the images are renamed in first, then taken back out
    make_read_only(root / "labelsTr")
    try:
        with pytest.raises(ExportError, match="read-only"):
            export_case(case, _corrected(phantom.truth), root, case_id="case_0001", overwrite=True)
        with pytest.raises(ExportError, match="read-only"):
            export_case(case, phantom.truth, root, case_id="case_0002")
    finally:
        make_writable(root / "labelsTr")
    assert snapshot(root) == before


def test_full_disk_gives_a_clear_error_and_changes_nothing(registered, phantom, tmp_path, monkeypatch):
    case, _ = registered
    root = tmp_path / "ds"
    export_case(case, phantom.truth, root, case_id="case_0001")
    before = snapshot(root)
    real_save, calls = nib.save, []

    def save_until_full(img, filename):  # the third file fills the disk half-way through
        calls.append(filename)
        if len(calls) == 3:
            Path(filename).write_bytes(b"\x1f\x8b partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return real_save(img, filename)

    monkeypatch.setattr(nib, "save", save_until_full)
    with pytest.raises(ExportError, match="disk is full") as info:
        export_case(case, phantom.truth, root, case_id="case_0002")
    assert "No space left on device" in str(info.value) and "Nothing was changed" in str(info.value)
    assert snapshot(root) == before
    calls.clear()
    with pytest.raises(ExportError, match="disk is full"):  # replacing: the old case survives too
        export_case(case, _corrected(phantom.truth), root, case_id="case_0001", overwrite=True)
    assert snapshot(root) == before
    monkeypatch.setattr(nib, "save", real_save)

    real_replace, renames = os.replace, []

    def replace_until_full(src, dst):  # the disk fills while renaming the labels into place
        if str(dst).endswith(f"labelsTr{os.sep}case_0001.nii.gz"):
            renames.append(dst)
        if str(dst).endswith(f"labelsTr{os.sep}case_0001.nii.gz") and not renames[:-1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_until_full)
    with pytest.raises(ExportError, match="disk is full"):
        export_case(case, _corrected(phantom.truth), root, case_id="case_0001", overwrite=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert snapshot(root) == before


# --------------------------------------------------------------------------- training reads it
def test_the_training_reader_accepts_the_dataset(registered, phantom, tmp_path):
    from napari_mriseg.ml.config import Architecture, ModelConfig
    from napari_mriseg.ml.training import _prepare

    case, _ = registered
    root = tmp_path / "ds"
    export_case(case, phantom.truth, root, case_id="case_0001")
    info = read_dataset(root)
    cfg = ModelConfig(sequences=info.channel_names, labels=info.class_labels,
                      architecture=Architecture(dim=3, depth=2, base_features=4), target_spacing=(3.0, 3.0, 3.0),
                      patch_size=(16, 16, 16))
    prepared = _prepare(info, "case_0001", cfg)
    assert prepared.image.shape[0] == 4
    assert [len(f) for f in prepared.foreground] == [int((phantom.truth.array == v).sum()) for v in (1, 2, 3)]


@pytest.mark.slow
def test_a_short_training_run_on_an_exported_dataset(registered, phantom, tmp_path):
    from napari_mriseg.ml.model_file import load_model
    from napari_mriseg.ml.training import TrainConfig, train

    case, _ = registered
    root = tmp_path / "ds"
    export_case(case, phantom.truth, root, case_id="case_0001")
    flipped = case.replace(sequences={n: v.with_array(v.array[:, ::-1].copy()) for n, v in case.sequences.items()})
    export_case(flipped, phantom.truth.with_array(phantom.truth.array[:, ::-1].copy()), root, case_id="case_0002")
    cfg = TrainConfig(patch_size=(16, 16, 16), depth=2, base_features=4, epochs=1, iterations_per_epoch=2,
                      batch_size=1, val_fraction=0.5, device="cpu", target_spacing=(6.0, 6.0, 6.0))
    result = train(root, tmp_path / "m.mriseg", cfg)
    assert load_model(result.best).config.sequences == ("t1", "t1c", "t2", "flair")


# --------------------------------------------------------------------------- labels alone
def test_labels_go_back_to_native_grids(registered, phantom, on_disk, tmp_path):
    _, record = registered
    folder, loaded = on_disk
    for name in ("flair", "t2", "t1c"):
        native = labels_to_native(phantom.truth, record, name, loaded)
        expected = phantom.truth_on_grid(name)
        assert native.grid.mismatch(loaded[name].grid) is None
        mismatches = int(np.count_nonzero(native.array != expected.array))
        assert mismatches <= 0.001 * native.array.size, (name, mismatches)
        path = write_labels(native, tmp_path / f"labels_{name}.nii.gz")
        back = nib.load(str(path))
        np.testing.assert_allclose(back.affine, nib.load(str(folder / f"{name}.nii.gz")).affine, atol=1e-5)
        np.testing.assert_array_equal(np.asanyarray(back.dataobj).transpose(2, 1, 0), native.array)
        itk = sitk.ReadImage(str(path))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(itk), native.array)
    same = labels_to_native(phantom.truth, record, "t1")
    np.testing.assert_array_equal(same.array, phantom.truth.array)
    with pytest.raises(DatasetError, match="native grid"):
        labels_to_native(phantom.truth, record, "flair")
    with pytest.raises(OutputExistsError):
        write_labels(phantom.truth, tmp_path / "labels_flair.nii.gz")
    mha = write_labels(phantom.truth, tmp_path / "labels.mha")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(mha))), phantom.truth.array)


def test_native_labels_travel_with_the_case(registered, phantom, on_disk, tmp_path):
    _, record = registered
    case, _ = registered
    _, loaded = on_disk
    native = labels_to_native(phantom.truth, record, "flair", loaded)
    result = export_case(case, phantom.truth, tmp_path / "ds", native_labels={"flair": native})
    assert [p.name for p in result.extra_files] == [f"{result.case_id}_labels_flair.nii.gz"]
    back = nib.load(str(result.extra_files[0]))
    np.testing.assert_allclose(back.affine, convert.grid_to_ras_affine(loaded["flair"].grid), atol=1e-5)
    assert read_dataset(tmp_path / "ds").cases == (result.case_id,)


def test_dicom_seg_needs_highdicom(phantom, tmp_path):
    import pydicom
    from pydicom.uid import generate_uid

    from .test_dicom import _write_series

    _write_series(tmp_path / "dicom", proj=(0.0, 2.5, 5.0, 7.5))
    frame_of_reference = generate_uid()  # a scanner writes one per study; the test writer does not
    for f in (tmp_path / "dicom").glob("*.dcm"):
        ds = pydicom.dcmread(str(f))
        ds.FrameOfReferenceUID = frame_of_reference
        ds.save_as(str(f))
    case = load_case(tmp_path / "dicom")
    labels = Volume.zeros_like_labels(case.grid)
    labels.array[1:3, 2:4, 2:5] = 1
    labels.array[3, 1:3, 1:4] = 3
    try:
        import highdicom  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install highdicom"):
            export_dicom_seg(labels, tmp_path / "dicom", tmp_path / "seg.dcm")
        assert not (tmp_path / "seg.dcm").exists()
        return
    out = export_dicom_seg(labels, tmp_path / "dicom", tmp_path / "seg.dcm")
    seg = pydicom.dcmread(str(out))
    assert seg.Modality == "SEG" and [str(x.SegmentLabel) for x in seg.SegmentSequence] == ["necrotic", "enhancing"]
    assert int(seg.NumberOfFrames) == 3  # label 1 on two slices, label 3 on one; empty frames left out


# --------------------------------------------------------------------------- mriseg export
@pytest.fixture(scope="module")
def cli_inputs(phantom, on_disk, registered, tmp_path_factory):
    """The case as acquired, a `mriseg register`-style folder for it and corrected labels."""
    from napari_mriseg.core.registration import CaseRegistration, RegistrationResult, write_registration
    from napari_mriseg.core.registration_quality import RegistrationQuality

    folder, _ = on_disk
    case, record = registered
    tmp = tmp_path_factory.mktemp("cli")
    quality = RegistrationQuality(metric_identity=-0.3, metric_final=-0.6, corner_shift_mm=(2.0,) * 8, rotation_deg=1.5)
    results = {n: RegistrationResult(n, t, case[n], quality, 0.1) for n, t in record.transforms.items()}
    reg_dir = write_registration(CaseRegistration(case, results, "rigid"), tmp / "registered")
    labels_path = write_labels(_corrected(phantom.truth), tmp / "corrected.nii.gz")
    truth_path = write_labels(phantom.truth, tmp / "prediction.nii.gz")
    return folder, reg_dir, labels_path, truth_path


@pytest.fixture
def mriseg(monkeypatch):
    from napari_mriseg import cli

    if "napari_mriseg.cli.export" not in cli.COMMAND_MODULES:  # until the lead registers it
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "napari_mriseg.cli.export"))
    return cli.main


def test_cli_export_adds_the_case_with_model_order_and_provenance(mriseg, cli_inputs, phantom, on_disk, tmp_path,
                                                                   capsys):
    folder, reg_dir, labels_path, truth_path = cli_inputs
    _, loaded = on_disk
    ds = tmp_path / "Dataset002_Cli"
    args = [str(folder), str(labels_path), "--registration", str(reg_dir), "--dataset", str(ds), "--model", str(MODEL),
            "--native", "flair", "--prediction", str(truth_path)]
    assert mriseg(["export", *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("added case_") and out.count("wrote ") == 8
    info = read_dataset(ds)
    assert info.channel_names == ("t1", "t1c", "t2", "flair") and len(info.cases) == 1
    case_id = info.cases[0]
    images, labels = read_training_case(info, case_id)
    np.testing.assert_array_equal(labels.array, _corrected(phantom.truth).array)
    np.testing.assert_array_equal(images[3].array, load_case(reg_dir)["flair"].array)
    text = (ds / "provenance" / f"{case_id}.json").read_text()
    assert PATIENT_FOLDER not in text and "DOE" not in text
    prov = json.loads(text)
    assert prov["registration"]["sequences"]["flair"]["rotation_deg"] == 1.5
    assert set(prov["registration"]["transforms_itk"]) == {"t1c", "t2", "flair"}
    assert prov["model"]["name"] == "demo_model" and prov["edits"]["labels"]["enhancing"]["dice"] < 1
    assert {s["sequence"] for s in prov["sources"]} >= {"labels", "flair (as acquired)", "t1"}
    native = nib.load(str(ds / "provenance" / f"{case_id}_labels_flair.nii.gz"))
    np.testing.assert_allclose(native.affine, nib.load(str(folder / "flair.nii.gz")).affine, atol=1e-5)
    expected = labels_to_native(_corrected(phantom.truth), RegistrationRecord.from_folder(reg_dir), "flair", loaded)
    np.testing.assert_array_equal(np.asanyarray(native.dataobj).transpose(2, 1, 0), expected.array)
    # again: refused without --overwrite, nothing changed; replaced with it
    before = snapshot(ds)
    assert mriseg(["export", *args]) == 1
    assert "exists already" in capsys.readouterr().err and snapshot(ds) == before
    assert mriseg(["export", *args, "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith(f"replaced {case_id}")


def test_cli_labels_alone_on_a_native_grid(mriseg, cli_inputs, phantom, on_disk, tmp_path, capsys):
    folder, reg_dir, labels_path, _ = cli_inputs
    _, loaded = on_disk
    out = tmp_path / "flair_labels.nii.gz"
    assert mriseg(["export", str(folder), str(labels_path), "--registration", str(reg_dir), "--native", "t2",
                   "--labels-out", str(out)]) == 0
    assert "native grid" in capsys.readouterr().out
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, nib.load(str(folder / "t2.nii.gz")).affine, atol=1e-5)
    expected = labels_to_native(_corrected(phantom.truth), RegistrationRecord.from_folder(reg_dir), "t2", loaded)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj).transpose(2, 1, 0), expected.array)
    assert mriseg(["export", str(reg_dir), str(labels_path), "--labels-out", str(tmp_path / "ref.nii.gz")]) == 0
    np.testing.assert_array_equal(nib.load(str(tmp_path / "ref.nii.gz")).get_fdata(),
                                  nib.load(str(labels_path)).get_fdata())


def test_cli_export_errors_are_one_clear_line(mriseg, cli_inputs, tmp_path, capsys):
    folder, reg_dir, labels_path, _ = cli_inputs
    cases = [
        ([str(folder), str(labels_path)], "--dataset DIR"),
        ([str(folder), str(labels_path), "--dataset", str(tmp_path / "ds")], "co-register"),
        ([str(reg_dir), str(labels_path), "--dataset", str(tmp_path / "ds"), "--native", "flair"], "--registration"),
        ([str(reg_dir), str(labels_path), "--dataset", str(tmp_path / "ds"), "--case-id", "Smith"], "no digit"),
        ([str(reg_dir), str(labels_path), "--dataset", str(tmp_path / "ds"), "--ignore-unreviewed"], "--reviewed"),
    ]
    for args, message in cases:
        assert mriseg(["export", *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("mriseg export: error:") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "ds").exists()
    with pytest.raises(SystemExit):
        mriseg(["export", "--help"])
    assert "mriseg export registered/ labels.nii.gz --dataset" in capsys.readouterr().out
