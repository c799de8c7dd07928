"""Window/level panel and W/L mouse drag, through napari."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_mriseg.core import windowing as wl
from napari_mriseg.core.registration import head_mask
from napari_mriseg.core.volume import Volume

from .conftest import keep_screenshot

pytestmark = pytest.mark.gui

SHOTS = Path("/tmp/shots/window_level")


@pytest.fixture(scope="module")
def case():
    from napari_mriseg.core.phantom import make_phantom_case

    return make_phantom_case(5, spacing_mm=4.0, misalign=False).case


def _viewer_with_case(make_napari_viewer, case, *, show=False):
    from napari_mriseg._napari._window_level import WindowLevelWidget
    from napari_mriseg._napari.layers import case_layer_data

    viewer = make_napari_viewer(show=show)
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers.selection.active = viewer.layers["t1"]
    widget = WindowLevelWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Window/level")
    return viewer, widget


# ---------------------------------------------------------------------------- fields and presets
def test_fields_and_contrast_limits_stay_in_sync_both_ways(make_napari_viewer, case):
    viewer, widget = _viewer_with_case(make_napari_viewer, case)
    t1 = viewer.layers["t1"]
    assert widget.layer is t1
    # layer -> fields (napari's own slider, a script...)
    t1.contrast_limits = (100.0, 900.0)
    assert widget.width_spin.value() == pytest.approx(800.0)
    assert widget.level_spin.value() == pytest.approx(500.0)
    assert widget.limits_label.text() == "100 – 900"
    assert widget.histogram.limits == (100.0, 900.0)
    # fields -> layer
    widget.width_spin.setValue(300.0)
    assert t1.contrast_limits == pytest.approx([350.0, 650.0])
    widget.level_spin.setValue(200.0)
    assert t1.contrast_limits == pytest.approx([50.0, 350.0])
    assert t1.metadata["mriseg"]["window"] == pytest.approx([300.0, 200.0])


def test_presets_set_the_expected_contrast_limits(make_napari_viewer, case):
    viewer, widget = _viewer_with_case(make_napari_viewer, case)
    t2 = viewer.layers["t2"]
    viewer.layers.selection.active = t2
    assert widget.layer is t2
    keys = widget.preset_keys()
    assert keys == ["mri 1-99%", "mri 0.5-99.5%", *(f"ct {n}" for n in wl.CT_PRESETS)]  # no DICOM tags here

    widget.preset.setCurrentIndex(keys.index("ct brain") + 2)  # placeholder and separator come first
    widget._on_preset(widget.preset.currentIndex())
    assert t2.contrast_limits == pytest.approx([0.0, 80.0])
    widget.apply_preset("ct lung")
    assert t2.contrast_limits == pytest.approx([-1350.0, 150.0])
    assert t2.contrast_limits_range[0] <= -1350.0  # the napari slider widened to show it
    assert widget.status.text() == "t2: CT lung (W 1500, L -600 HU)"
    assert widget.preset.currentData() == "ct lung"
    widget.level_spin.setValue(-500.0)
    assert widget.status.text() == "" and widget.preset.currentIndex() == 0  # no longer the preset

    # MRI percentiles of the voxels inside the head, computed here independently
    head = t2.data[head_mask(Volume(np.asarray(t2.data))).array > 0]
    for key, (p_lo, p_hi) in [("mri 1-99%", (1, 99)), ("mri 0.5-99.5%", (0.5, 99.5))]:
        widget.apply_preset(key)
        assert t2.contrast_limits == pytest.approx(list(np.percentile(head, [p_lo, p_hi])))
    assert np.percentile(head, 1) > np.percentile(t2.data, 1) + 10  # air really left out

    from napari_mriseg.core.errors import OptionError

    with pytest.raises(OptionError, match="'dicom'"):
        widget.apply_preset("ct heart")
    with pytest.raises(OptionError, match="no DICOM"):
        widget.apply_preset("dicom")


def test_dicom_tags_give_the_initial_window_and_a_preset(make_napari_viewer):
    from napari_mriseg._napari._window_level import WindowLevelWidget
    from napari_mriseg._napari.layers import image_layer_data

    rng = np.random.default_rng(2)
    ct = Volume(rng.integers(-1024, 1500, (12, 20, 22)).astype(np.int16), spacing=(3.0, 0.8, 0.8),
                name="ct", meta={"window_center": 40.0, "window_width": 80.0})
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(ct, case_id="c1")
    layer = viewer.add_image(data, **kwargs)
    assert layer.contrast_limits == pytest.approx([0.0, 80.0])  # the tags give the initial window
    widget = WindowLevelWidget(viewer)
    assert widget.layer is layer
    assert (widget.width_spin.value(), widget.level_spin.value()) == pytest.approx((80.0, 40.0))

    # the tags are found through the workspace's case when the layer metadata does not carry them
    from napari_mriseg.core.case import Case

    widget.workspace.set_case(Case({"ct": ct}, "ct", None, "c1"))
    widget.bind(layer)
    assert widget.preset_keys()[0] == "dicom"
    widget.apply_preset("ct bone")
    assert layer.contrast_limits == pytest.approx([-800.0, 2000.0])
    widget.apply_preset("dicom")
    assert layer.contrast_limits == pytest.approx([0.0, 80.0])


# ---------------------------------------------------------------------------- the drag
def _fake(kind, x, y, button=2, modifiers=()):
    return SimpleNamespace(type=kind, pos=np.array([x, y], float), button=button, modifiers=modifiers,
                           handled=False)


def test_drag_callback_changes_window_and_level_by_the_expected_amounts(make_napari_viewer, case):
    from napari_mriseg._napari._window_level import WindowLevelDrag, attach_window_level_drag

    viewer, widget = _viewer_with_case(make_napari_viewer, case)
    t1 = viewer.layers["t1"]
    t1.contrast_limits = (200.0, 1000.0)  # width 800, level 600
    drags = [cb for cb in viewer.mouse_drag_callbacks if isinstance(cb, WindowLevelDrag)]
    assert drags == [widget.drag]

    event = _fake("mouse_press", 100, 100)
    gen = widget.drag(viewer, event)
    next(gen)
    assert viewer.scene.camera.mouse_pan is False  # vispy must not zoom on this right drag
    event.type, event.pos = "mouse_move", np.array([164.0, 132.0])  # 64 px right, 32 px down
    next(gen)
    # 800 / 256 = 3.125 units per pixel: width + 200, level + 100
    assert t1.contrast_limits == pytest.approx([700.0 - 1000.0 / 2, 700.0 + 1000.0 / 2])
    assert widget.width_spin.value() == pytest.approx(1000.0) and widget.level_spin.value() == pytest.approx(700.0)
    event.type, event.pos = "mouse_move", np.array([36.0, 68.0])  # 64 px left, 32 px up of the press
    next(gen)
    assert t1.contrast_limits == pytest.approx([500.0 - 300.0, 500.0 + 300.0])  # width 600, level 500
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    assert viewer.scene.camera.mouse_pan is True
    assert t1.metadata["mriseg"]["window"] == pytest.approx([600.0, 500.0])

    # a plain left press and a middle press are not the gesture; Ctrl + left is
    for ev in (_fake("mouse_press", 0, 0, button=1), _fake("mouse_press", 0, 0, button=3)):
        with pytest.raises(StopIteration):
            next(widget.drag(viewer, ev))
    gen = widget.drag(viewer, _fake("mouse_press", 0, 0, button=1, modifiers=("Control",)))
    next(gen)
    gen.close()

    # attach_window_level_drag on its own: default target = the active image layer
    viewer.layers.selection.active = viewer.layers["flair"]
    flair = viewer.layers["flair"]
    flair.contrast_limits = (0.0, 256.0)
    other = attach_window_level_drag(viewer)
    widget.drag.enabled = False
    ev = _fake("mouse_press", 10, 10)
    gen = other(viewer, ev)
    next(gen)
    ev.type, ev.pos = "mouse_move", np.array([10.0 + 256.0, 10.0])
    next(gen)
    assert flair.contrast_limits == pytest.approx([-128.0, 384.0])
    other.detach()
    assert other not in viewer.mouse_drag_callbacks


def test_closing_the_panel_detaches_the_drag(make_napari_viewer, qtbot, case):
    viewer, widget = _viewer_with_case(make_napari_viewer, case)
    drag = widget.drag
    assert drag in viewer.mouse_drag_callbacks
    viewer.window.remove_dock_widget(widget)
    widget.deleteLater()
    qtbot.waitUntil(lambda: drag not in viewer.mouse_drag_callbacks)
    viewer.layers["t1"].contrast_limits = (10.0, 20.0)  # no callback into the deleted panel
    viewer.layers.selection.active = viewer.layers["t2"]


def test_detach_after_the_viewer_is_torn_down_does_not_raise():
    """A panel destroyed after its viewer (at exit) detaches from a viewer model whose fields are
    gone; an exception there, inside a Qt ``destroyed`` slot, would abort the process."""
    from types import SimpleNamespace

    from napari_mriseg._napari._window_level import WindowLevelDrag

    drag = WindowLevelDrag(SimpleNamespace())  # no mouse_drag_callbacks any more
    drag.detach()
    drag.viewer = SimpleNamespace(mouse_drag_callbacks=[drag])
    drag.detach()
    assert drag.viewer.mouse_drag_callbacks == []


def _canvas(viewer):
    # napari has no public handle on its canvas widget; tests may reach for it, the plugin does not
    return viewer.window._qt_viewer.canvas.native


def _drag_on_canvas(qtbot, viewer, button, delta, modifiers=None):
    """A real Qt press-move-release on napari's canvas (moves carry the held button, as a mouse's do)."""
    from qtpy.QtCore import QEvent, QPoint, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    canvas = _canvas(viewer)
    mods = modifiers if modifiers is not None else Qt.KeyboardModifier.NoModifier
    start = QPoint(canvas.width() // 2, canvas.height() // 2)
    qtbot.mousePress(canvas, button, mods, start)
    for i in range(1, 5):
        pos = start + QPoint(delta[0] * i // 4, delta[1] * i // 4)
        QApplication.sendEvent(canvas, QMouseEvent(QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton,
                                                   button, mods))
        qtbot.wait(15)  # napari throttles mouse moves (5 ms)
    qtbot.mouseRelease(canvas, button, mods, start + QPoint(*delta))
    qtbot.wait(15)


def test_mouse_drags_on_the_canvas(make_napari_viewer, qtbot, case):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    viewer, widget = _viewer_with_case(make_napari_viewer, case, show=True)
    t1 = viewer.layers["t1"]
    t1.contrast_limits = (200.0, 1000.0)
    cam = viewer.scene.camera
    zoom, centre = cam.zoom, tuple(cam.center)

    # right drag: window and level change (64 px right, 32 px down), the camera neither zooms nor pans
    _drag_on_canvas(qtbot, viewer, Qt.MouseButton.RightButton, (64, 32))
    assert t1.contrast_limits == pytest.approx([200.0, 1200.0])  # width 1000, level 700
    assert cam.zoom == pytest.approx(zoom) and tuple(cam.center) == pytest.approx(centre)
    assert QApplication.activePopupWidget() is None  # no context menu popped up
    assert cam.mouse_pan is True

    # Ctrl + left drag: the same gesture
    _drag_on_canvas(qtbot, viewer, Qt.MouseButton.LeftButton, (-64, 0), Qt.KeyboardModifier.ControlModifier)
    assert t1.contrast_limits == pytest.approx([700.0 - 375.0, 700.0 + 375.0])  # width 1000 - 250
    assert tuple(cam.center) == pytest.approx(centre)

    # a plain left drag pans and leaves the contrast alone
    before = list(t1.contrast_limits)
    _drag_on_canvas(qtbot, viewer, Qt.MouseButton.LeftButton, (60, 40))
    assert t1.contrast_limits == pytest.approx(before)
    assert tuple(cam.center) != pytest.approx(centre)

    # with the drag mode off, the right drag is vispy's zoom again (what the mode prevents above)
    widget.drag_check.setChecked(False)
    _drag_on_canvas(qtbot, viewer, Qt.MouseButton.RightButton, (64, 32))
    assert t1.contrast_limits == pytest.approx(before)
    assert cam.zoom != pytest.approx(zoom)
    widget.drag_check.setChecked(True)

    # painting keeps the mouse: right drag on a labels layer in paint mode is napari's, not ours
    labels = viewer.layers["labels"]
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    _drag_on_canvas(qtbot, viewer, Qt.MouseButton.RightButton, (64, 32))
    assert t1.contrast_limits == pytest.approx(before)
    # in pan/zoom mode the labels layer lets the drag through to the panel's image layer
    labels.mode = "pan_zoom"
    assert widget.layer is t1
    _drag_on_canvas(qtbot, viewer, Qt.MouseButton.RightButton, (0, -64))
    assert t1.contrast_limits == pytest.approx([before[0] - 187.5, before[1] - 187.5])  # 750/256*64


# ---------------------------------------------------------------------------- memory
def test_each_sequence_keeps_its_own_window(make_napari_viewer, case):
    from napari_mriseg._napari.layers import image_layer_data

    viewer, widget = _viewer_with_case(make_napari_viewer, case)
    t1, flair = viewer.layers["t1"], viewer.layers["flair"]
    widget.apply_preset("ct abdomen")  # t1: width 400, level 50
    viewer.layers.selection.active = flair
    assert widget.layer is flair
    widget.width_spin.setValue(123.0)
    widget.level_spin.setValue(321.0)
    # the labels layer selected: the panel stays on the last image
    viewer.layers.selection.active = viewer.layers["labels"]
    assert widget.layer is flair
    viewer.layers.selection.active = t1
    assert (widget.width_spin.value(), widget.level_spin.value()) == pytest.approx((400.0, 50.0))
    assert t1.contrast_limits == pytest.approx([-150.0, 250.0])
    assert flair.contrast_limits == pytest.approx([321.0 - 61.5, 321.0 + 61.5])
    assert flair.metadata["mriseg"]["window"] == pytest.approx([123.0, 321.0])

    # a window set on the layer's metadata (e.g. by another view) is given back on selection
    flair.metadata["mriseg"]["window"] = [50.0, 100.0]
    viewer.layers.selection.active = flair
    assert flair.contrast_limits == pytest.approx([75.0, 125.0])

    # the sequence's layer made anew (e.g. after co-registration) gets its window back
    viewer.layers.remove(t1)
    t1.contrast_limits = (1.0, 2.0)  # a removed layer is no longer watched
    data, kwargs, _ = image_layer_data(case["t1"], case_id=case.case_id)
    new_t1 = viewer.add_image(data, **kwargs)
    assert new_t1.contrast_limits == pytest.approx([-150.0, 250.0])
    viewer.layers.selection.active = new_t1
    assert widget.layer is new_t1 and widget.width_spin.value() == pytest.approx(400.0)


# ---------------------------------------------------------------------------- looking at it
def test_panel_screenshot_with_histogram(make_napari_viewer, qtbot, case):
    import imageio.v3 as iio

    viewer, widget = _viewer_with_case(make_napari_viewer, case, show=True)
    widget.apply_preset("mri 1-99%")
    widget.width_spin.setValue(widget.width_spin.value() / 2)  # a narrower window: its band sits inside the histogram
    qtbot.waitUntil(lambda: widget.histogram.isVisible())
    SHOTS.mkdir(parents=True, exist_ok=True)
    for log in (False, True):
        widget.log_check.setChecked(log)
        qtbot.wait(50)
        tag = "log" if log else "linear"
        shot = SHOTS / f"window_level_panel_{tag}.png"
        viewer.screenshot(str(shot), canvas_only=False, flash=False)
        keep_screenshot(shot)
        hist_path = SHOTS / f"window_level_histogram_{tag}.png"
        widget.histogram.grab().toImage().save(str(hist_path))
        keep_screenshot(hist_path)
        # the histogram is drawn: bars, and the two window lines at the expected columns
        pixels = iio.imread(hist_path)[..., :3].astype(int)
        bars = np.all(np.abs(pixels - [150, 170, 200]) < 12, axis=-1)
        lines = np.all(np.abs(pixels - [255, 200, 40]) < 25, axis=-1)
        assert bars.sum() > 200
        line_cols = np.flatnonzero(lines.sum(axis=0) > 0.6 * widget.histogram.height())
        lo, hi = widget.histogram.span()
        plot_w = widget.histogram.width() - 12
        expected = [6 + (v - lo) / (hi - lo) * plot_w for v in viewer.layers["t1"].contrast_limits]
        assert line_cols.size >= 2
        assert abs(line_cols.min() - expected[0]) <= 2 and abs(line_cols.max() - expected[1]) <= 2
    assert widget.histogram.hist.counts.sum() > 1000


def test_real_dicom_series_opens_in_its_own_window(make_napari_viewer, qtbot, shared_testdata):
    """A scanner's WindowCenter/WindowWidth (523/1071 in this Siemens T1 series) is the initial
    window and stays one preset away after other windows."""
    from napari_mriseg._napari._window_level import WindowLevelWidget
    from napari_mriseg._napari.layers import image_layer_data
    from napari_mriseg._napari.views import set_plane
    from napari_mriseg.core.case import Case
    from napari_mriseg.core.dicom import read_dicom_series

    volume = read_dicom_series(shared_testdata / "dicom_t1_positions" / "HFS" / "dicom")
    volume = Volume(volume.array, volume.spacing, volume.origin, volume.direction, name="t1", meta=volume.meta)
    assert wl.dicom_window(volume.meta) == (1071.0, 523.0)
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = image_layer_data(volume, case_id="hfs")
    layer = viewer.add_image(data, **kwargs)
    widget = WindowLevelWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Window/level")
    widget.workspace.set_case(Case({"t1": volume}, "t1", None, "hfs"))
    widget.bind(layer)
    assert layer.contrast_limits == pytest.approx([523.0 - 535.5, 523.0 + 535.5])
    assert (widget.width_spin.value(), widget.level_spin.value()) == pytest.approx((1071.0, 523.0))
    assert widget.preset_keys()[0] == "dicom"
    widget.apply_preset("mri 0.5-99.5%")
    assert layer.contrast_limits != pytest.approx([-12.5, 1058.5])
    widget.apply_preset("dicom")
    assert layer.contrast_limits == pytest.approx([-12.5, 1058.5])
    set_plane(viewer, "sagittal")
    viewer.dims.set_point(2, float(np.mean(viewer.dims.range[2][:2])))
    qtbot.wait(50)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "window_level_real_dicom.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)
