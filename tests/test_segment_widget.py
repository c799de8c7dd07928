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


def test_next_uncertain_region_walks_unreviewed_regions(make_napari_viewer, qtbot, phantom):
    _, case = phantom
    viewer = make_napari_viewer()
    ws, widget = _open(viewer, case)
    widget.uncertainty.setChecked(True)
    _run(qtbot, widget)
    assert "uncertainty" in viewer.layers
    regions = widget.uncertain_regions()
    assert regions, "TTA on a phantom should disagree somewhere (tumour borders)"
    first = widget.next_uncertain_region()
    np.testing.assert_allclose(first, regions[0][1])
    layer = viewer.layers["uncertainty"]
    world = np.asarray(layer.data_to_world(first))
    np.testing.assert_allclose(viewer.dims.point, world, atol=max(layer.scale))
    # the next click goes to another region
    if len(regions) > 1:
        second = widget.next_uncertain_region()
        np.testing.assert_allclose(second, regions[1][1])
    # reviewing the largest region makes it drop out of the list
    from scipy import ndimage

    lab, n = ndimage.label(np.asarray(layer.data) >= 0.25)
    sizes = np.bincount(lab.ravel())
    largest = int(np.argmax(np.where(np.arange(n + 1) == 0, 0, sizes)))
    assert sizes[largest] == regions[0][0]
    ws.ensure_masks()
    ws.reviewed[lab == largest] = True
    assert len(widget.uncertain_regions()) == len(regions) - 1
