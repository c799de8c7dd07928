"""The Segment panel through napari: runs the demo model, keeps the clinician's edits, slices,
cancels, and walks the uncertain regions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mriseg._napari._segment_widget import DEMO_MODEL, SegmentWidget, match_sequences
from napari_mriseg._napari.layers import case_layer_data
from napari_mriseg._napari.workspace import PREDICTION_LAYER, Workspace

from .conftest import keep_screenshot

pytestmark = [pytest.mark.gui,
              pytest.mark.skipif(not DEMO_MODEL.exists(), reason="the demo model is made by scripts/train_demo_model.py")]


@pytest.fixture(scope="module")
def phantom():
    """A 2 mm phantom (the demo model's spacing) with its sequences on the t1 grid."""
    from napari_mriseg.core.phantom import make_phantom_case
    from napari_mriseg.core.resample import resample_to_grid

    pc = make_phantom_case(7003, spacing_mm=2.0, misalign=False)
    case = pc.case
    for name in case.misregistered():
        case = case.with_sequence(name, resample_to_grid(case[name], case.grid))
    return pc, case.replace(labels=None)


def _open(viewer, case, show_labels: bool = True) -> tuple[Workspace, SegmentWidget]:
    for data, kwargs, kind in case_layer_data(case, with_empty_labels=show_labels):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.workspace.set_case(case)
    return widget.workspace, widget


def _run(qtbot, widget, **kw):
    worker = widget.run(**kw)
    assert worker is not None, widget.check_label.text()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60000)


def test_sequences_are_matched_by_name():
    assert match_sequences(["t1", "t1c", "t2", "flair"], ["FLAIR", "T1-ce", "t1", "T2"]) == {
        "t1": "t1", "t1c": "T1-ce", "t2": "T2", "flair": "FLAIR"}
    assert match_sequences(["t1", "dwi"], ["t1"]) == {"t1": "t1", "dwi": ""}


def test_segment_volume_keeps_edits_and_the_prediction(make_napari_viewer, qtbot, phantom, tmp_path):
    from napari_mriseg.core.resample import to_display_orientation
    from napari_mriseg.ml.metrics import evaluate

    pc, case = phantom
    viewer = make_napari_viewer(show=True)
    ws, widget = _open(viewer, case)
    assert widget.sequence_mapping() == {"t1": "t1", "t1c": "t1c", "t2": "t2", "flair": "flair"}
    assert widget.volume_btn.isEnabled()

    _run(qtbot, widget)
    layer = viewer.layers["labels"]
    truth = to_display_orientation(pc.truth)[0].array
    pred = layer.data.copy()
    from napari_mriseg.core.volume import Volume

    dice = evaluate(Volume.on_grid(pred, to_display_orientation(pc.truth)[0].grid, kind="label"),
                    Volume.on_grid(truth, to_display_orientation(pc.truth)[0].grid, kind="label"))
    assert dice["whole_tumour"]["dice"] > 0.8
    assert PREDICTION_LAYER in viewer.layers and not viewer.layers[PREDICTION_LAYER].visible
    assert ws.prediction.grid.mismatch(case.grid) is None
    np.testing.assert_array_equal(viewer.layers[PREDICTION_LAYER].data, pred)
    assert ws.touched is not None and not ws.touched.any()  # the model's output is not an edit

    # the clinician erases part of the tumour; a re-run keeps the erasure
    tumour = np.argwhere(pred > 0)
    erase = tuple(tumour[: len(tumour) // 3].T)
    ws.edit_labels(erase, 0)
    assert ws.touched.sum() == len(tumour) // 3
    _run(qtbot, widget)
    assert not layer.data[erase].any()
    assert "kept" in widget.status.text()
    erased = layer.data.copy()
    # unless asked
    widget.overwrite.setChecked(True)
    _run(qtbot, widget)
    np.testing.assert_array_equal(layer.data, pred)
    # a prediction is one undo step
    layer.undo()
    np.testing.assert_array_equal(layer.data, erased)
    viewer.dims.set_current_step(0, int(np.median(tumour[:, 0])))
    shot = tmp_path / "segment_widget.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)


def test_segment_this_slice_changes_only_that_slice(make_napari_viewer, qtbot, phantom):
    pc, case = phantom
    viewer = make_napari_viewer()
    ws, widget = _open(viewer, case)
    layer = viewer.layers["labels"]
    tumour_rows = np.argwhere(np.asarray(pc.truth.array) > 0)
    z = int(np.median(tumour_rows[:, 0]))  # axial: the truth's first axis is the display's first
    viewer.dims.set_current_step(0, z)
    roi = widget.current_slice_roi()
    assert roi[0] == slice(z, z + 1)
    _run(qtbot, widget, slice_only=True)
    changed = np.argwhere(layer.data > 0)
    assert len(changed) > 30
    assert set(changed[:, 0]) == {z}


def test_bf16_precision_gives_nearly_the_fp32_labels(make_napari_viewer, qtbot, phantom, monkeypatch):
    import napari_mriseg.ml.segment as seg
    from napari_mriseg.ml.inference import cpu_supports_bf16

    used = []
    real = seg.segment
    monkeypatch.setattr(seg, "segment", lambda *a, **kw: used.append(kw["precision"]) or real(*a, **kw))

    _, case = phantom
    viewer = make_napari_viewer()
    ws, widget = _open(viewer, case)
    bf16_item = widget.precision.model().item(2)
    assert bf16_item.isEnabled() == cpu_supports_bf16() or widget.device.model().item(2).isEnabled()
    if not bf16_item.isEnabled():
        pytest.skip("this CPU has no bfloat16 units: the panel greys bf16 out")
    widget.precision.setCurrentText("fp32")
    _run(qtbot, widget)
    fp32 = viewer.layers["labels"].data.copy()
    widget.precision.setCurrentText("bf16")
    widget.overwrite.setChecked(True)
    _run(qtbot, widget)
    bf16 = viewer.layers["labels"].data
    assert (fp32 > 0).sum() > 1000
    assert (bf16 == fp32).mean() > 0.999
    assert used == ["fp32", "bf16"]


def test_cancel_leaves_the_labels_untouched(make_napari_viewer, qtbot, phantom):
    _, case = phantom
    viewer = make_napari_viewer()
    ws, widget = _open(viewer, case)
    before = viewer.layers["labels"].data.copy()
    widget._cancel.set()  # cancelled before the first batch
    worker = widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60000)
    assert worker is not None
    np.testing.assert_array_equal(viewer.layers["labels"].data, before)
    assert "cancel" in widget.status.text()
    assert PREDICTION_LAYER not in viewer.layers


def test_misregistered_case_is_refused_with_the_fix(make_napari_viewer, phantom):
    from napari_mriseg.core.phantom import make_phantom_case

    viewer = make_napari_viewer()
    raw = make_phantom_case(7004, spacing_mm=3.0, misalign=True).case
    ws, widget = _open(viewer, raw)
    assert not widget.volume_btn.isEnabled()
    assert "co-register" in widget.check_label.text()
    assert widget.register_btn.isVisibleTo(widget)
    widget.set_sequence("flair", "t1")  # one sequence twice
    assert "mapped to two" in widget.check_label.text()


def test_next_uncertain_region_walks_unreviewed_regions(make_napari_viewer, phantom):
    """Three uncertain blobs of known sizes: visited largest first, reviewed ones skipped."""
    from napari_mriseg.core.volume import Volume

    _, case = phantom
    viewer = make_napari_viewer()
    ws, widget = _open(viewer, case)
    unc = np.zeros(case.grid.shape, np.float32)
    blobs = {"big": (slice(10, 20), slice(20, 30), slice(20, 30)),      # 1000 voxels
             "middle": (slice(30, 36), slice(40, 50), slice(40, 50)),   # 600
             "small": (slice(40, 44), slice(10, 15), slice(60, 65))}    # 100
    for box in blobs.values():
        unc[box] = 0.5
    unc[0, 0, 0] = 0.1  # under the threshold: not a region
    widget._set_image("uncertainty", Volume.on_grid(unc, case.grid, name="uncertainty"), colormap="magma",
                      limits=(0.0, 1.0))
    regions = widget.uncertain_regions()
    assert [r[0] for r in regions] == [1000, 600, 100]
    centre = widget.next_uncertain_region()
    layer = viewer.layers["uncertainty"]
    assert layer.data[tuple(np.round(centre).astype(int))] == 0.5
    # the sliders snap to voxel centres: within half a voxel of the centre
    np.testing.assert_allclose(viewer.dims.point, layer.data_to_world(centre), atol=max(layer.scale) / 2 + 1e-6)
    # the clinician reviews the middle blob (in the labels layer's voxels: same display grid here)
    from scipy import ndimage

    ws.ensure_masks()
    lab = ndimage.label(np.asarray(layer.data) == 0.5)[0]
    sizes = np.bincount(lab.ravel())
    ws.reviewed[lab == int(np.flatnonzero(sizes == 600)[0])] = True
    assert [r[0] for r in widget.uncertain_regions()] == [1000, 100]
    third = widget.next_uncertain_region()  # the big one was shown already: the small one is next
    assert lab[tuple(np.round(third).astype(int))] == int(np.flatnonzero(sizes == 100)[0])
    assert widget.next_uncertain_region() is None
    assert "no uncertain region" in widget.status.text()
