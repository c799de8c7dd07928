"""The Export widget through napari: dataset export with the model's order, ignore label,
overwrite confirmation, labels alone on native grids, errors shown, screenshot looked at."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from napari_mriseg.core import convert
from napari_mriseg.core.export import labels_to_native

from .conftest import keep_screenshot
from .test_export import MODEL, make_read_only, make_writable, snapshot

pytestmark = pytest.mark.gui

SHOTS = Path("/tmp/shots/export")


@functools.lru_cache(maxsize=1)
def _phantom():
    from napari_mriseg.core.phantom import make_phantom_case

    return make_phantom_case(0, spacing_mm=3.0)


def _registration(loaded):
    """A `CaseRegistration` made of the phantom's known transforms (what `register_case` finds)."""
    from napari_mriseg.core.registration import CaseRegistration, RegistrationResult, apply_transform
    from napari_mriseg.core.registration_quality import RegistrationQuality

    ph = _phantom()
    quality = RegistrationQuality(metric_identity=-0.3, metric_final=-0.6, corner_shift_mm=(2.0,) * 8, rotation_deg=1.5)
    results = {n: RegistrationResult(n, ph.transform(n), apply_transform(loaded[n], ph.transform(n), loaded.grid),
                                     quality) for n in loaded.names if n != loaded.reference}
    case = loaded.replace(sequences={n: results[n].volume if n in results else loaded[n] for n in loaded.names})
    return CaseRegistration(case, results, "rigid")


def _setup(make_napari_viewer, *, show: bool = False):
    """A viewer with the co-registered phantom, its labels, a prediction and a docked Export widget."""
    from napari_mriseg._napari._export_widget import ExportWidget
    from napari_mriseg._napari.layers import case_layer_data

    viewer = make_napari_viewer(show=show)
    loaded = _phantom().case
    reg = _registration(loaded)
    for data, kwargs, kind in case_layer_data(reg.case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Export")
    ws = widget.workspace
    ws.set_case(loaded)
    ws.apply_registration(reg)
    ws.prediction = _phantom().truth
    ws.watch_labels()
    return viewer, widget, ws


def _wait(qtbot, widget, worker):
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.progress.maximum() == 1, timeout=30000)
    return widget.status.text()


def test_export_with_model_order_ignore_and_overwrite_confirmation(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_mriseg.ml.model_file import read_config

    viewer, w, ws = _setup(make_napari_viewer, show=True)
    viewer.window.resize(1400, 900)
    ws.model, ws.model_path = SimpleNamespace(config=read_config(MODEL)), MODEL
    layer = ws.labels_layer()
    assert w.channel_order() == list(ws.case.names)  # no model yet when the case arrived
    ws.prediction_changed.emit(ws.prediction)  # the Segment panel announces its prediction
    assert w.channel_order() == ["t1", "t1c", "t2", "flair"] and "demo_model" in w.order_source.text()
    # the clinician corrects a slab and marks the upper half of the display volume reviewed
    z = int(np.argwhere(layer.data > 0)[:, 0].mean())
    idx = np.nonzero(layer.data[z] == 2)
    ws.edit_labels((np.full(idx[0].shape, z), *idx), 3)
    ws.reviewed[: layer.data.shape[0] // 2] = True
    ws.dirty = True
    w.dataset_edit.setText(str(tmp_path / "Dataset003_Gui"))
    w.ignore_check.setChecked(True)
    proposed = w.case_id_edit.text()
    assert proposed.startswith("case_")
    status = _wait(qtbot, w, w.export())
    assert status.startswith(f"added {proposed}") and f"labelsTr/{proposed}.nii.gz" in status, status
    assert ws.dirty is False
    result = w.last_result
    assert result.channel_names == ("t1", "t1c", "t2", "flair") and result.label_values["ignore"] == 4
    back = nib.load(str(result.labels))
    np.testing.assert_allclose(back.affine, convert.grid_to_ras_affine(ws.case.grid), atol=1e-5)
    data = np.asanyarray(back.dataobj).transpose(2, 1, 0)
    assert int((data == 4).sum()) == int((~ws.reviewed).sum()) == result.ignored_voxels
    # the corrected voxel, followed through world coordinates: enhancing in the file
    world = np.asarray(layer.data_to_world((z, idx[0][0], idx[1][0])))
    k = tuple(np.rint(ws.case.grid.world_to_index(world[None])[0]).astype(int))
    assert data[k] == (3 if z < layer.data.shape[0] // 2 else 4)
    prov = json.loads(result.provenance.read_text())
    assert prov["model"]["name"] == "demo_model" and prov["edits"]["voxels_changed"] == len(idx[0])
    assert prov["registration"]["sequences"]["flair"]["rotation_deg"] == 1.5
    viewer.dims.set_point(0, world[0])  # show the corrected slice
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "export_widget_after_export.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)
    # exporting again asks first: 'No' keeps the dataset as it was, 'Yes' replaces the case
    before = snapshot(result.dataset)
    asked = []
    monkeypatch.setattr(w, "_confirm_overwrite", lambda case_id: asked.append(case_id) or False)
    assert w.export() is None
    assert asked == [proposed] and "not exported" in w.status.text() and snapshot(result.dataset) == before
    monkeypatch.setattr(w, "_confirm_overwrite", lambda case_id: True)
    status = _wait(qtbot, w, w.export())
    assert status.startswith(f"replaced {proposed}"), status
    assert json.loads((result.dataset / "dataset.json").read_text())["numTraining"] == 1


def test_save_labels_only_on_the_reference_and_a_native_grid(make_napari_viewer, qtbot, tmp_path):
    viewer, w, ws = _setup(make_napari_viewer)
    assert [w.grid_combo.itemData(i) for i in range(w.grid_combo.count())] == ["reference", "t1c", "t2", "flair"]
    status = _wait(qtbot, w, w.save_labels(tmp_path / "ref.nii.gz", "reference"))
    assert "reference grid" in status and ws.dirty is False
    back = nib.load(str(tmp_path / "ref.nii.gz"))
    np.testing.assert_allclose(back.affine, convert.grid_to_ras_affine(ws.case.grid), atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj).transpose(2, 1, 0), _phantom().truth.array)
    w.grid_combo.setCurrentIndex(w.grid_combo.findData("flair"))
    status = _wait(qtbot, w, w.save_labels(tmp_path / "flair.nii.gz"))
    assert "native grid of flair" in status, status
    back = nib.load(str(tmp_path / "flair.nii.gz"))
    flair = ws.loaded_case["flair"]
    np.testing.assert_allclose(back.affine, convert.grid_to_ras_affine(flair.grid), atol=1e-5)
    expected = labels_to_native(_phantom().truth, ws.registration, "flair", ws.loaded_case)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj).transpose(2, 1, 0), expected.array)
    mismatch = int((expected.array != _phantom().truth_on_grid("flair").array).sum())
    assert mismatch <= 0.001 * expected.array.size
    status = _wait(qtbot, w, w.save_labels(tmp_path / "flair.nii.gz"))  # exists: refused, file kept
    assert status.startswith("error:") and "exists already" in status
    status = _wait(qtbot, w, w.save_labels(tmp_path / "seg.dcm", "flair"))
    assert "DICOM SEG needs a sequence read from DICOM" in status


def test_errors_are_shown_and_the_viewer_stays_usable(make_napari_viewer, qtbot, tmp_path, read_only_dir):
    from napari_mriseg._napari._export_widget import ExportWidget

    bare = ExportWidget(make_napari_viewer())
    assert not bare.export_btn.isEnabled() and bare.status.text() == "load a case first"
    assert bare.export() is None and "load a case first" in bare.status.text()

    viewer, w, ws = _setup(make_napari_viewer, show=True)
    viewer.window.resize(1400, 900)
    assert w.export() is None and "choose a dataset folder" in w.status.text()
    w.dataset_edit.setText(str(read_only_dir / "ds"))
    ws.dirty = True
    status = _wait(qtbot, w, w.export())
    assert status.startswith("error:") and "read-only" in status and "Nothing was changed" in status
    assert ws.dirty is True and list(read_only_dir.iterdir()) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "export_widget_read_only_error.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)
    w.case_id_edit.setText("DoeJohn")
    w.dataset_edit.setText(str(tmp_path / "ds"))
    status = _wait(qtbot, w, w.export())
    assert "may be a person's name" in status and not (tmp_path / "ds").exists()
    w.ignore_check.setChecked(True)
    w._propose(force=True)
    status = _wait(qtbot, w, w.export())
    assert "nothing is marked reviewed" in status
    # a dataset folder made read-only after a first export: the error, and the case stays whole
    w.ignore_check.setChecked(False)
    status = _wait(qtbot, w, w.export())
    assert status.startswith("added"), status
    before = snapshot(tmp_path / "ds")
    make_read_only(tmp_path / "ds" / "labelsTr")
    try:
        w.case_id_edit.setText("case_0002")
        status = _wait(qtbot, w, w.export())
    finally:
        make_writable(tmp_path / "ds" / "labelsTr")
    assert "read-only" in status and snapshot(tmp_path / "ds") == before
    viewer.layers.selection.active = ws.labels_layer()  # the viewer still works
    assert w.export_btn.isEnabled()
