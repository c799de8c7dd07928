"""The Correct widget through napari: each tool changes the expected voxels, Ctrl+Z undoes it."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_mriseg.core import label_ops as ops

from .conftest import keep_screenshot

pytestmark = pytest.mark.gui

SHOTS = Path("/tmp/shots/correct")


@functools.lru_cache(maxsize=1)
def _phantom():
    from napari_mriseg.core.phantom import make_phantom_case

    return make_phantom_case(4, spacing_mm=4.0, misalign=False)


def _setup(make_napari_viewer, *, show: bool = False, blank: bool = True, names=("t1", "labels")):
    """A viewer with the phantom case's layers and a docked Correct widget; labels emptied."""
    from napari_mriseg._napari._correct_widget import CorrectWidget
    from napari_mriseg._napari.layers import case_layer_data

    viewer = make_napari_viewer(show=show)
    case = _phantom().case
    for data, kwargs, kind in case_layer_data(case):
        if names is None or kwargs["name"] in names:
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Correct")
    widget.workspace.set_case(case)
    layer = viewer.layers["labels"]
    if blank:
        layer.data[...] = 0
        layer.refresh()
    return viewer, widget, layer


def _run(qtbot, widget, method, *args):
    worker = method(*args)
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=20000)
    assert "error" not in widget.status.text(), widget.status.text()


def _ctrl_z(layer) -> None:
    """What napari runs on Ctrl+Z over a labels layer."""
    from napari.layers import Labels
    from napari.utils.key_bindings import KeyBinding

    Labels.class_keymap[KeyBinding.from_str("Ctrl+Z")](layer)


def _expected(before, proposed, policy, selected):
    idx, vals = ops.policy_change(before, proposed, policy=policy, selected=selected)
    out = before.copy()
    out[idx] = vals
    return out


def test_each_operation_changes_the_expected_voxels_and_ctrl_z_undoes_it(make_napari_viewer, qtbot):
    viewer, w, layer = _setup(make_napari_viewer)
    sp = w.spacing(layer)
    assert tuple(sp) == (4.0, 4.0, 4.0)
    d = layer.data
    d[20:30, 20:30, 20:30] = 2
    d[24:26, 24:26, 24:26] = 0  # a hole
    d[24, 25, 25] = 1  # with a label-1 voxel in it
    d[5, 5, 5] = 2  # an island of 64 mm^3
    d[40:42, 40:42, 40:42] = 2  # a piece of 512 mm^3
    layer.refresh()
    w.set_label(2)
    assert layer.selected_label == 2  # the label choice drives napari's brush too
    cases = [
        ("fill holes", w.fill_holes, (), lambda a: ops.fill_holes(a, 2)),
        ("remove islands", w.remove_islands, (), lambda a: ops.remove_islands(a, 2, min_volume_mm3=100,
                                                                               spacing=sp)),
        ("keep largest", w.keep_largest, (), lambda a: ops.keep_largest_component(a, 2)),
        ("grow", w.grow, (+1,), lambda a: ops.grow(a, 2, margin_mm=8.0, spacing=sp)),
        ("shrink", w.grow, (-1,), lambda a: ops.shrink(a, 2, margin_mm=8.0, spacing=sp)),
    ]
    w.islands_mm3.setValue(100)
    w.margin_mm.setValue(8.0)
    for name, method, args, op in cases:
        before = np.array(layer.data)
        expected = _expected(before, op(before), "background", 2)
        assert (expected != before).any(), name
        _run(qtbot, w, method, *args)
        np.testing.assert_array_equal(layer.data, expected, err_msg=name)
        assert w.last_changed == int((expected != before).sum()), name
        _ctrl_z(layer)  # one undo step restores everything
        np.testing.assert_array_equal(layer.data, before, err_msg=name)
    assert layer.data[24, 25, 25] == 1  # fill holes under "only background" kept label 1
    assert w.workspace.touched is not None and w.workspace.touched.any()


def test_overwrite_policy_and_logical_operations(make_napari_viewer, qtbot):
    viewer, w, layer = _setup(make_napari_viewer)
    layer.data[20:30, 20:30, 20:30] = 2
    layer.data[20:30, 31:35, 20:30] = 1  # label 1 one voxel away from label 2
    layer.refresh()
    w.set_label(2)
    w.margin_mm.setValue(8.0)
    before = np.array(layer.data)
    for policy in ("background", "selected", "all"):
        w.set_policy(policy)
        _run(qtbot, w, w.grow, +1)
        np.testing.assert_array_equal(
            layer.data, _expected(before, ops.grow(before, 2, margin_mm=8.0, spacing=(4, 4, 4)), policy, 2))
        ones = int((layer.data == 1).sum())
        assert ones == (before == 1).sum() if policy != "all" else ones < (before == 1).sum()
        layer.undo()
    np.testing.assert_array_equal(layer.data, before)

    # union of labels 1 and 2 into label 3 (overwrites both: needs "all")
    w.set_policy("all")
    w.a_combo.setCurrentIndex(w.a_combo.findData(1))
    w.op_combo.setCurrentText("union")
    w.b_combo.setCurrentIndex(w.b_combo.findData(2))
    w.target_combo.setCurrentIndex(w.target_combo.findData(3))
    _run(qtbot, w, w.combine)
    assert (layer.data == 3).sum() == ((before == 1) | (before == 2)).sum() and not np.isin(layer.data, [1, 2]).any()
    _ctrl_z(layer)
    np.testing.assert_array_equal(layer.data, before)
    w.b_source.setCurrentText("prediction")  # no prediction yet: a clear error, nothing changes
    assert w._guard(w.combine) is None and "segment the case first" in w.status.text()
    np.testing.assert_array_equal(layer.data, before)


def test_interpolation_is_previewed_then_applied_as_one_undo_step(make_napari_viewer, qtbot):
    from napari_mriseg._napari._correct_widget import PREVIEW_LAYER

    viewer, w, layer = _setup(make_napari_viewer)
    yy, xx = np.mgrid[: layer.data.shape[1], : layer.data.shape[2]]
    disc = lambda r: (yy - 30) ** 2 + (xx - 26) ** 2 <= r * r  # noqa: E731
    layer.data[10][disc(4)] = 3
    layer.data[18][disc(12)] = 3
    layer.data[14, 28:32, 24:28] = 1  # in the way: "only background" keeps it
    layer.refresh()
    w.set_label(3)
    assert w.view_axis() == 0  # the axial view's slider
    before = np.array(layer.data)
    _run(qtbot, w, w.preview_interpolation)
    expected = _expected(before, ops.interpolate_label(before, 3, axis=0, spacing=(4, 4, 4)), "background", 3)
    preview = viewer.layers[PREVIEW_LAYER].data
    np.testing.assert_array_equal(preview != 0, expected != before)
    np.testing.assert_array_equal(layer.data, before)  # nothing applied yet
    assert viewer.layers.selection.active is layer
    for z in range(11, 18):  # the in-between discs, radius 4 -> 12 voxels
        r = np.sqrt(((expected[z] == 3).sum() + (expected[z] == 1).sum() * (z == 14)) / np.pi)
        assert abs(r - (4 + 8 * (z - 10) / 8)) < 1.0, z
    _run(qtbot, w, w.apply_interpolation)
    assert PREVIEW_LAYER not in viewer.layers
    np.testing.assert_array_equal(layer.data, expected)
    assert (layer.data[14, 28:32, 24:28] == 1).all()
    _ctrl_z(layer)
    np.testing.assert_array_equal(layer.data, before)
    _run(qtbot, w, w.preview_interpolation)
    w.cancel_preview()
    assert PREVIEW_LAYER not in viewer.layers and (layer.data == before).all()


def _event(position, kind="mouse_press", pos=(100.0, 100.0)):
    return SimpleNamespace(type=kind, position=tuple(position), pos=np.array(pos), dims_displayed=[1, 2],
                           is_dragging=kind == "mouse_move", button=1, modifiers=(), view_direction=None)


def _world(layer, index):
    return layer.data_to_world(np.asarray(index, float))


def test_masked_brush_stroke_paints_only_within_the_range_and_is_one_undo_step(make_napari_viewer, qtbot):
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    viewer, w, layer = _setup(make_napari_viewer)
    w.sequence_combo.setCurrentText("t1")
    t1 = np.asarray(viewer.layers["t1"].data, float)
    z = 27
    lo, hi = np.percentile(t1[z][t1[z] > 0], [40, 90])
    w.lo_spin.setValue(lo)
    w.hi_spin.setValue(hi)
    w.set_label(2)
    layer.brush_size = 7
    w.brush_btn.setChecked(True)  # the widget's toggle
    assert w._brush_layer is layer and str(layer.mode) == "pan_zoom" and not layer.mouse_pan
    layer.data[z, 30:34, 20:24] = 1  # "only background": the stroke goes around label 1
    layer.refresh()
    before = np.array(layer.data)
    ev = _event(_world(layer, (z, 31, 12)))
    mouse_press_callbacks(layer, ev)
    for x in (18, 24, 30, 36):
        ev.type, ev.is_dragging, ev.position = "mouse_move", True, tuple(_world(layer, (z, 31, x)))
        mouse_move_callbacks(layer, ev)
    ev.type = "mouse_release"
    mouse_release_callbacks(layer, ev)
    painted = layer.data != before
    assert painted.sum() > 50 and (layer.data[painted] == 2).all()
    assert painted[z].sum() == painted.sum()  # in the slice shown only
    v = w.intensity()[painted]
    assert (v >= lo).all() and (v <= hi).all()  # only within the intensity range
    assert (layer.data[z, 30:34, 20:24] == 1).all()
    assert f"masked stroke: {painted.sum()} voxel(s)" in w.status.text()
    # the same stroke without the mask would have painted outside the range
    rows, cols = np.nonzero(painted[z])
    assert cols.min() <= 14 and cols.max() >= 34 and rows.min() <= 29 and rows.max() >= 33
    box = np.zeros_like(painted)
    box[z, rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    outside = box & ((w.intensity() < lo) | (w.intensity() > hi))
    assert outside.sum() > 0 and not painted[outside].any()
    _ctrl_z(layer)  # one stroke = one undo step
    np.testing.assert_array_equal(layer.data, before)
    layer.mode = "paint"  # choosing one of napari's tools ends the masked brush
    assert w._brush_layer is None and not w.brush_btn.isChecked()
    assert w._brush_stroke not in layer.mouse_drag_callbacks


def test_region_growing_from_a_clicked_seed(make_napari_viewer, qtbot):
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    viewer, w, layer = _setup(make_napari_viewer)
    w.sequence_combo.setCurrentText("t1")
    truth = np.asarray(_phantom().case.labels.array)
    seed = tuple(int(v) for v in np.argwhere(truth == 2)[len(np.argwhere(truth == 2)) // 2])
    t1 = w.intensity()
    w.set_label(2)
    w.tolerance.setValue(float(np.std(t1[t1 > 0])) * 0.3)
    w.radius_mm.setValue(20.0)
    w.seed_btn.setChecked(True)
    assert w._seed_click in viewer.mouse_drag_callbacks
    # a drag pans, it does not grow
    ev = _event(_world(layer, seed))
    mouse_press_callbacks(viewer, ev)
    ev.type, ev.is_dragging, ev.pos = "mouse_move", True, np.array([150.0, 100.0])
    mouse_move_callbacks(viewer, ev)
    ev.type = "mouse_release"
    mouse_release_callbacks(viewer, ev)
    assert not w.busy and not layer.data.any()
    # a click grows
    ev = _event(_world(layer, seed))
    mouse_press_callbacks(viewer, ev)
    ev.type = "mouse_release"
    mouse_release_callbacks(viewer, ev)
    qtbot.waitUntil(lambda: not w.busy, timeout=20000)
    expected = ops.region_grow(t1, seed, tolerance=w.tolerance.value(), spacing=(4, 4, 4), max_radius_mm=20.0)
    assert expected.sum() > 5
    np.testing.assert_array_equal(layer.data == 2, expected)
    _ctrl_z(layer)
    assert not layer.data.any()
    w.slice_only.setChecked(True)
    _run(qtbot, w, w.grow_from_seed, seed)
    assert (layer.data == 2).sum() == (layer.data[seed[0]] == 2).sum() > 0
    w.seed_btn.setChecked(False)
    assert w._seed_click not in viewer.mouse_drag_callbacks


def test_stats_table_equals_label_ops_and_follows_edits(make_napari_viewer, qtbot):
    viewer, w, layer = _setup(make_napari_viewer, blank=False)
    case = _phantom().case
    w.workspace.prediction = case.labels
    w.workspace.prediction_changed.emit(case.labels)
    qtbot.waitUntil(lambda: bool(w.stats) and w.stats[0].dice is not None, timeout=5000)
    rows = {s.label: s for s in w.stats}
    assert all(rows[v].dice == 1.0 and rows[v].volume_change_pct == 0.0 for v in (1, 2, 3))
    truth = np.asarray(case.labels.array)
    assert rows[2].voxels == (truth == 2).sum() and rows[2].volume_mm3 == 64.0 * (truth == 2).sum()
    # an edit through the widget's path, then the table refreshes by itself (debounced)
    idx = np.nonzero(truth == 2)
    half = tuple(i[: len(i) // 2] for i in idx)
    w.workspace.edit_labels(half, 0)
    qtbot.waitUntil(lambda: {s.label: s for s in w.stats}[2].voxels < rows[2].voxels, timeout=5000)
    expected = ops.label_stats(np.asarray(layer.data), (4, 4, 4), reference=truth, include=(1, 2, 3))
    assert w.stats == expected
    r2 = [r for r in range(w.table.rowCount()) if w.table.item(r, 0).text() == "2"][0]
    e2 = expected[1]
    assert w.table.item(r2, 2).text() == str(e2.voxels)
    assert w.table.item(r2, 3).text() == f"{e2.volume_mm3:.0f}"
    assert w.table.item(r2, 4).text() == f"{e2.volume_ml:.2f}"
    assert w.table.item(r2, 5).text() == f"{e2.dice:.3f}" and 0.6 < e2.dice < 0.7
    assert w.table.item(r2, 6).text() == f"{e2.volume_change_pct:+.1f}%"
    layer.undo()  # undo refreshes the table too
    qtbot.waitUntil(lambda: {s.label: s for s in w.stats}[2].dice == 1.0, timeout=5000)


def test_reviewed_slice_and_region_update_the_fraction(make_napari_viewer, qtbot):
    viewer, w, layer = _setup(make_napari_viewer)
    shape = layer.data.shape
    viewer.dims.set_point(0, float(_world(layer, (12, 0, 0))[0]))
    assert w.current_index(0) == 12
    seen = []
    getattr(w.workspace, "reviewed_changed", w.workspace.labels_edited).connect(lambda *_: seen.append(1))
    w.mark_slice_reviewed()
    assert seen  # autosave hears of it
    rev = w.workspace.reviewed
    assert rev.shape == shape and rev[12].all() and rev.sum() == shape[1] * shape[2]
    assert w.reviewed_fraction() == pytest.approx(1 / shape[0])
    assert f"{1 / shape[0]:.1%}" in w.reviewed_label.text() and f"1/{shape[0]} slices" in w.reviewed_label.text()
    assert w.workspace.dirty
    layer.data[30:33, 30:33, 30:33] = 2
    w.set_label(2)
    w.review_margin.setValue(4.0)
    w.mark_region_reviewed()
    expected = ops.dilate_mask(layer.data == 2, margin_mm=4.0, spacing=(4, 4, 4))
    assert rev[expected].all() and rev.sum() == shape[1] * shape[2] + (expected & ~(np.arange(shape[0]) == 12)[
        :, None, None]).sum()
    w.set_label(3)
    assert w._guard(w.mark_region_reviewed) is None and "not drawn" in w.status.text()
    from napari_mriseg._napari.views import set_plane

    set_plane(viewer, "coronal")  # the view's axis follows the plane shown
    assert w.view_axis() == 1 and "axis 1" in w.axis_label.text() and "slices of axis 1" in w.reviewed_label.text()


def test_without_labels_layer_errors_are_shown_and_the_viewer_stays_usable(make_napari_viewer, monkeypatch):
    import napari_mriseg._napari._correct_widget as mod

    shown: list[str] = []
    monkeypatch.setattr(mod, "show_error", shown.append)
    viewer = make_napari_viewer()
    w = mod.CorrectWidget(viewer)
    w.tabs.widget(1).findChildren(mod.QPushButton)[0].click()  # "Fill holes" with nothing loaded
    assert "no labels layer" in shown[-1] and "error" in w.status.text()
    w.brush_btn.setChecked(True)
    assert not w.brush_btn.isChecked() and not w.busy
    assert w.refresh_stats() == []


def test_screenshot_of_the_correct_widget(make_napari_viewer, qtbot):
    viewer, w, layer = _setup(make_napari_viewer, show=True, blank=False, names=None)
    case = _phantom().case
    w.workspace.prediction = case.labels
    truth = np.asarray(case.labels.array)
    z = int(np.argwhere(truth == 2)[:, 0].mean())
    # the clinician erased the tumour on a few slices and lets the interpolation fill them
    layer.data[z - 2:z + 3][np.isin(layer.data[z - 2:z + 3], [1, 2, 3])] = 0
    layer.refresh()
    w.set_label(2)
    viewer.dims.set_point(0, float(_world(layer, (z, 0, 0))[0]))
    w.mark_slice_reviewed()
    _run(qtbot, w, w.preview_interpolation)
    w.tabs.setCurrentIndex(0)
    w.refresh_stats()
    viewer.window.resize(1500, 950)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "correct_widget.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)
    # then a masked stroke across the brain on the slice shown: only the bright tissue is painted
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    w.cancel_preview()
    w.tabs.setCurrentIndex(3)
    w.sequence_combo.setCurrentText("t1")
    w.lo_spin.setValue(float(np.percentile(w.intensity()[z][w.intensity()[z] > 0], 70)))
    w.hi_spin.setValue(float(w.intensity().max()))
    w.set_label(3)
    layer.brush_size = 9
    w.brush_btn.setChecked(True)
    ev = _event(_world(layer, (z, 45, 10)))
    mouse_press_callbacks(layer, ev)
    for x in range(12, 44, 2):
        ev.type, ev.is_dragging, ev.position = "mouse_move", True, tuple(_world(layer, (z, 45, x)))
        mouse_move_callbacks(layer, ev)
    ev.type = "mouse_release"
    mouse_release_callbacks(layer, ev)
    assert (layer.data[z] == 3).sum() > 20
    w.refresh_stats()
    shot2 = SHOTS / "correct_widget_paint_tab.png"
    viewer.screenshot(str(shot2), canvas_only=False, flash=False)
    keep_screenshot(shot2)
    assert shot.stat().st_size > 10000 and w.table.rowCount() == 3
