"""Linked multi-planar views through napari: shared arrays, one cursor, painting, orientation,
oblique plane, 3D, and screenshots of the layout (open them: $MRISEG_SCREENSHOT_DIR)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import QEvent, QObject, QPointF, Qt
from qtpy.QtGui import QMouseEvent
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_mriseg._napari import _napari_adapter as adapter
from napari_mriseg._napari._multiview import THREE_D_VIEW, MultiViewWidget
from napari_mriseg._napari.layers import image_layer_data, labels_layer_data
from napari_mriseg._napari.views import set_plane
from napari_mriseg.core.reslice import oblique_plane, reslice_array
from napari_mriseg.core.volume import Grid, Volume

from .conftest import ORIENTATIONS, keep_screenshot
from .test_napari_plugin import PLUGIN, _bright_centroid, las_marker_nifti

pytestmark = pytest.mark.gui
SHOTS = Path("/tmp/shots/multiview")


# ---------------------------------------------------------------------------- helpers
def _small_case() -> list[tuple]:
    """t1 (anisotropic, off-origin), a thick-slice t2 over the same box, empty uint8 labels."""
    g1 = Grid((16, 20, 18), (2.0, 1.5, 1.5), (-15.0, -14.0, -12.0))
    k, j, i = np.meshgrid(*[np.arange(n) for n in g1.shape], indexing="ij")
    t1 = Volume.on_grid((100 + 3 * k + 2 * j + i).astype(np.float32), g1, name="t1")
    g2 = Grid((8, 20, 18), (4.0, 1.5, 1.5), (-14.0, -14.0, -12.0))
    t2 = Volume.on_grid(np.random.default_rng(0).random(g2.shape).astype(np.float32) * 50, g2, name="t2")
    return [image_layer_data(t2, case_id="c"), image_layer_data(t1, case_id="c"),
            labels_layer_data(Volume.zeros_like_labels(g1), case_id="c", name="labels")]


def _viewer_with(make_napari_viewer, layers, *, size=(1400, 900)):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*size)
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def _dock(viewer, qtbot) -> MultiViewWidget:
    widget = MultiViewWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="Linked views")
    qtbot.waitUntil(lambda: widget._shown, timeout=5000)
    qtbot.wait(50)
    widget.reset_views()
    return widget


def _send(widget, kind, pos, button=Qt.MouseButton.LeftButton, modifiers=Qt.KeyboardModifier.NoModifier):
    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    buttons = Qt.MouseButton.NoButton if kind == "release" else button
    event = QMouseEvent(types[kind], QPointF(*pos), button if kind != "move" else Qt.MouseButton.NoButton,
                        buttons, modifiers)
    QApplication.sendEvent(widget, event)


def _drag(widget, path, **kw) -> None:
    _send(widget, "press", path[0], **kw)
    for p in path[1:]:
        # vispy drops moves within 10 ms of the last; napari throttles them through a Qt timer
        QTest.qWait(12)
        _send(widget, "move", p, **kw)
    QTest.qWait(12)
    _send(widget, "release", path[-1], **kw)
    QApplication.processEvents()


def _world_at(view, pixel) -> np.ndarray:
    """World position (displayed axes) of a canvas pixel, from napari's public camera model."""
    from napari_mriseg._napari._multiview import _row_col

    model = view.model if hasattr(view, "model") else view
    canvas = view.overlay if hasattr(view, "overlay") else None
    w, h = (canvas.width(), canvas.height()) if canvas is not None else (0, 0)
    cam = model.scene.camera
    row, col = _row_col(model)
    centre = np.zeros(3)
    centre[list(model.dims.displayed)] = cam.center[-2:]
    dx, dy = pixel[0] - w / 2, pixel[1] - h / 2
    return centre + (dy * row + dx * col) / cam.zoom


def _crosses_at(view, c) -> bool:
    """True if every crosshair segment drawn over ``view`` lies on a line through the cursor."""
    lines = view.overlay.lines
    r, col = view.model.dims.displayed[-2:]
    for (x0, y0), (x1, y1), _ in lines:
        world = _world_at(view, ((x0 + x1) / 2, (y0 + y1) / 2))
        axis = r if y0 == y1 else col  # a horizontal line has a constant row value
        if abs(world[axis] - c[axis]) > 1e-6:
            return False
    return len(lines) >= 2  # up to 4: a segment ending at the volume's edge is left out


class _EventCounter(QObject):
    """Counts the events of one type a widget receives (install it as an event filter)."""

    def __init__(self, kind) -> None:
        super().__init__()
        self.kind, self.n = kind, 0

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        self.n += event.type() == self.kind
        return False


def _shot(viewer, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    keep_screenshot(path)
    return path


# ---------------------------------------------------------------------------- tests
def test_views_mirror_the_main_layers_without_copies_and_stay_in_sync(make_napari_viewer, qtbot):
    viewer = _viewer_with(make_napari_viewer, _small_case())
    widget = _dock(viewer, qtbot)
    assert set(widget.views) == {"axial", "coronal", "sagittal"}
    for view in widget.views.values():
        assert [m.name for m in view.mirrors.values()] == ["t2", "t1", "labels"]
        for main, mirror in view.mirrors.items():
            assert mirror.data is main.data  # the same array: no copy of any volume
        assert len(view.model.layers) == 3  # the crosshair is drawn over the canvas, not a layer
    # an image under an opaque image that covers it is not sliced in the views (same picture)
    t1, t2, labels = viewer.layers["t1"], viewer.layers["t2"], viewer.layers["labels"]
    assert t2.visible and not any(v.mirrors[t2].visible for v in widget.views.values())
    # the main layers' state goes to every view...
    t1.contrast_limits = (120, 150)
    t1.opacity = 0.5  # t2 shows through now
    assert all(v.mirrors[t2].visible for v in widget.views.values())
    t2.visible = False
    labels.selected_label = 3
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    for view in widget.views.values():
        m = view.mirrors
        assert tuple(m[t1].contrast_limits) == (120, 150) and m[t1].opacity == 0.5
        assert not m[t2].visible
        assert m[labels].selected_label == 3 and m[labels].mode == "paint"
        assert view.model.layers.selection.active is m[labels]
    # ... and what changes in a view (a key, a W/L drag) goes back to the main layer and the others
    widget.views["coronal"].mirrors[labels].selected_label = 2
    assert labels.selected_label == 2 and widget.views["axial"].mirrors[labels].selected_label == 2
    # the layer order follows the main viewer's
    viewer.layers.move(viewer.layers.index(t2), len(viewer.layers))
    assert [m.name for m in widget.views["sagittal"].model.layers] == [ly.name for ly in viewer.layers]
    # a layer added later is mirrored, a removed one goes away
    viewer.add_image(np.zeros((4, 5, 6), np.float32), name="extra", scale=(10, 10, 10))
    assert all("extra" in v.model.layers for v in widget.views.values())
    viewer.layers.remove("extra")
    assert all(not m.visible for v in widget.views.values() for m in v.model.layers if m.name == "extra")
    qtbot.waitUntil(lambda: all("extra" not in v.model.layers for v in widget.views.values()), timeout=5000)
    # the layout goes away and comes back
    widget.set_linked(False)
    assert widget.views == {} and not widget.linked_check.isChecked()
    widget.set_linked(True)
    assert len(widget.views["axial"].mirrors) == 3
    assert widget.views["axial"].overlay.text() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert widget.views["coronal"].overlay.text() == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert widget.views["sagittal"].overlay.text() == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    # the main canvas' letters follow its plane
    assert widget.main_overlay.text() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    set_plane(viewer, "sagittal")
    assert widget.main_overlay.text() == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    # closing the dock ("x") frees the canvases and disconnects from the main viewer
    viewer.window.remove_dock_widget(widget)
    assert widget.views == {} and widget._main_click not in viewer.mouse_drag_callbacks
    assert widget.main_overlay.text()["top"] == "" and widget.main_overlay.lines == []
    t1.opacity = 0.7  # no error, nothing listening any more
    set_plane(viewer, "axial")
    assert widget.main_overlay.text()["top"] == ""


def test_one_cursor_links_clicks_sliders_and_all_canvases(make_napari_viewer, qtbot):
    viewer = _viewer_with(make_napari_viewer, _small_case())
    widget = _dock(viewer, qtbot)
    ax, cor, sag = (widget.views[n] for n in ("axial", "coronal", "sagittal"))
    # click in the axial view: the cursor moves there in P and L, S stays
    before = widget.cursor
    canvas = adapter.canvas_widget(ax.qt)
    pixel = (canvas.width() / 2 + 40, canvas.height() / 2 - 25)
    expected = _world_at(ax, pixel)
    _drag(canvas, [pixel])
    c = widget.cursor
    np.testing.assert_allclose(c[1:], expected[1:], atol=0.76)  # snapped to the 1.5 mm voxel grid
    np.testing.assert_allclose((c[1:] - (-14.0, -12.0)) / 1.5, np.round((c[1:] - (-14.0, -12.0)) / 1.5))
    assert c[0] == before[0]
    assert c[2] > before[2] and c[1] < before[1]  # right of the centre = patient's left; up = anterior
    # the coronal view slices at the cursor's P, the sagittal one at its L, the main canvas (axial) at S
    assert cor.model.dims.point[1] == pytest.approx(c[1])
    assert sag.model.dims.point[2] == pytest.approx(c[2])
    assert viewer.dims.point[0] == pytest.approx(c[0])
    # the crosshair of every canvas passes through the cursor, the main one's too
    main = SimpleNamespace(model=viewer, overlay=widget.main_overlay)
    assert all(_crosses_at(v, c) for v in (ax, cor, sag, main))
    # moving the slider of a view (or Ctrl+wheel) moves the cursor: main and others follow
    sag.model.dims.set_point(2, c[2] - 6.0)
    assert widget.cursor[2] == pytest.approx(c[2] - 6.0)
    assert all(_crosses_at(v, widget.cursor) for v in (ax, cor, sag))
    viewer.dims.set_point(0, c[0] + 8.0)  # the main canvas' slider
    assert widget.cursor[0] == pytest.approx(c[0] + 8.0)
    assert all(_crosses_at(v, widget.cursor) for v in (ax, cor, sag, main))
    assert ax.model.dims.point[0] == pytest.approx(c[0] + 8.0)
    # panning or zooming a view redraws its crosshair where the cursor now is on the screen
    before_lines = list(cor.overlay.lines)
    cam = cor.model.scene.camera
    cam.center = (cam.center[0], cam.center[1] + 5.0, cam.center[2] - 3.0)
    cam.zoom = cam.zoom * 1.5
    assert cor.overlay.lines != before_lines and _crosses_at(cor, widget.cursor)
    # the readout: mm, voxel indices in the reference file's grid, the value of every sequence
    widget.set_cursor((1.0, -3.5, 3.0))  # on the slice grid (the cursor snaps to it)
    vals = widget.cursor_values()
    t1 = viewer.layers["t1"]
    idx = tuple(np.round(t1.world_to_data((1.0, -3.5, 3.0))).astype(int))
    assert vals["t1"] == pytest.approx(float(t1.data[idx])) and vals["labels"] == 0 and "t2" in vals
    assert widget.cursor_voxel() == ("labels", idx[::-1])
    text = widget.readout.text()
    assert "x +3.0  y -3.5  z +1.0 mm" in text and f"t1 {vals['t1']:.4g}" in text
    assert f"[i j k] {idx[2]} {idx[1]} {idx[0]}" in text
    # a click in the main canvas moves the cursor too (its displayed axes: P and L in axial)
    main_canvas = adapter.canvas_widget(adapter.main_qt_viewer(viewer))
    _drag(main_canvas, [(main_canvas.width() / 2, main_canvas.height() / 2)])
    np.testing.assert_allclose(widget.cursor[1:], viewer.scene.camera.center[1:], atol=0.76)
    assert widget.cursor[0] == pytest.approx(1.0)
    # a view whose slice did not change is not resliced when the cursor moves within its plane
    calls = []
    ax.mirrors[t1].events.set_data.connect(lambda e: calls.append(1))
    widget.set_cursor((1.0, 4.0, -3.0))  # same S: the axial view keeps its slice
    assert calls == []
    # a move of all three slices: each view's layer sliced once, and no new layout asked of the
    # window (the readout repaints itself only; a QLabel's setText re-lays out the dock, then
    # napari's whole main window, which composes once more)
    qtbot.wait(50)  # what earlier steps posted is delivered first
    layout_requests = _EventCounter(QEvent.Type.LayoutRequest)
    widget.installEventFilter(layout_requests)
    sliced = {name: [] for name in widget.views}
    for name, view in widget.views.items():
        view.mirrors[t1].events.set_data.connect(lambda e, n=name: sliced[n].append(1))
    widget.set_cursor((5.0, -6.5, 6.0))
    qtbot.wait(50)
    assert sliced == {"axial": [1], "coronal": [1], "sagittal": [1]}
    assert "z +5.0 mm" in widget.readout.text() and layout_requests.n == 0
    widget.close_views()


@pytest.mark.parametrize("k", [0, 47])  # RAS storage; axes reversed and all flipped
def test_left_hemisphere_marker_appears_on_the_screens_right(make_napari_viewer, qtbot, tmp_path, k):
    path = las_marker_nifti(tmp_path / "vol.nii.gz", ORIENTATIONS[k])
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    layer = viewer.open(str(path), plugin=PLUGIN)[0]
    layer.contrast_limits = (0, 1000)  # body grey, marker white
    widget = _dock(viewer, qtbot)
    centre = layer.data_to_world(np.argwhere(np.asarray(layer.data) > 900).mean(0))
    widget.set_cursor(centre)
    qtbot.wait(20)
    # (marker on the screen's right?, marker up?) in each view
    expected = {"axial": (True, True), "coronal": (True, True), "sagittal": (False, True)}
    for name, (right, up) in expected.items():
        mr, mc, br, bc = _bright_centroid(widget.screenshot_view(name))
        assert (mc > bc) == right, f"{name}: the patient's left is not on the screen's right"
        assert (mr < br) == up, f"{name}: anterior/superior is not up"
    widget.close_views()


def test_painting_in_the_coronal_view_writes_its_slice_and_undoes_in_main(make_napari_viewer, qtbot):
    viewer = _viewer_with(make_napari_viewer, _small_case())
    widget = _dock(viewer, qtbot)
    labels = viewer.layers["labels"]
    touched_events = []
    widget.workspace.watch_labels()
    widget.workspace.labels_edited.connect(lambda: touched_events.append(1))
    cor, ax = widget.views["coronal"], widget.views["axial"]
    canvas = adapter.canvas_widget(cor.qt)
    centre = (canvas.width() / 2, canvas.height() / 2)
    _drag(canvas, [centre])  # pan/zoom mode: a click moves the cursor there
    cursor = widget.cursor
    j = int(np.round(labels.world_to_data(cursor)[1]))
    viewer.layers.selection.active = labels
    labels.mode, labels.brush_size, labels.selected_label = "paint", 3, 2
    axial_partial, axial_full = [], []
    ax.mirrors[labels].events.labels_update.connect(lambda e: axial_partial.append(e.offset))
    ax.mirrors[labels].events.set_data.connect(lambda e: axial_full.append(1))
    qtbot.wait(50)
    axial_before = widget.screenshot_view("axial")
    stroke = [(centre[0] + dx, centre[1]) for dx in range(0, 50, 5)]
    _drag(canvas, stroke)
    painted = np.argwhere(np.asarray(labels.data) == 2)
    assert len(painted) >= 5
    assert set(painted[:, 1]) == {j}, "voxels outside the coronal slice were painted"
    # the stroke runs from the cursor towards the screen's right = the patient's left (+L)
    expected_end = _world_at(cor, stroke[-1])
    end_idx = np.round(labels.world_to_data(np.where([1, 0, 1], expected_end, cursor))).astype(int)
    assert labels.data[tuple(np.round(labels.world_to_data(cursor)).astype(int))] == 2
    assert labels.data[tuple(end_idx)] == 2
    assert painted[:, 2].max() > np.round(labels.world_to_data(cursor)[2])
    # the axial view shows the cursor's slice, which the stroke crossed: the painted box of it was
    # redrawn (a partial texture update, not a new slice of the whole layer), and it shows
    assert axial_partial and not axial_full
    qtbot.wait(50)
    assert np.any(widget.screenshot_view("axial") != axial_before)
    # the stroke is ONE undo step of the main labels layer; the workspace saw the edit
    assert touched_events and widget.workspace.touched[tuple(painted.T)].all()
    labels.undo()
    assert not np.any(np.asarray(labels.data))
    labels.redo()
    assert len(np.argwhere(np.asarray(labels.data) == 2)) == len(painted)
    # Ctrl+Z with the focus in a view undoes on the main layer too
    keymap = cor.mirrors[labels].keymap
    undo = next(f for k, f in keymap.items() if "Z" in str(k) and "Shift" not in str(k))
    undo(cor.mirrors[labels])
    assert not np.any(np.asarray(labels.data))
    widget.close_views()


def test_window_level_drag_in_a_view_changes_the_main_layer(make_napari_viewer, qtbot):
    viewer = _viewer_with(make_napari_viewer, _small_case())
    widget = _dock(viewer, qtbot)
    t1 = viewer.layers["t1"]
    viewer.layers.selection.active = t1
    before = tuple(t1.contrast_limits)
    canvas = adapter.canvas_widget(widget.views["sagittal"].qt)
    c = (canvas.width() / 2, canvas.height() / 2)
    _drag(canvas, [c, (c[0] + 30, c[1]), (c[0] + 60, c[1] + 20)], button=Qt.MouseButton.RightButton)
    after = tuple(t1.contrast_limits)
    assert after != before and (after[1] - after[0]) > (before[1] - before[0])  # dragged right: wider
    assert all(tuple(v.mirrors[t1].contrast_limits) == after for v in widget.views.values())
    # no close_views() here: closing the viewer must free the extra canvases (the fixture fails
    # the test if a QtViewer leaked)


def test_oblique_view_and_3d_with_clipping_through_the_cursor(make_napari_viewer, qtbot):
    viewer = _viewer_with(make_napari_viewer, _small_case())
    widget = _dock(viewer, qtbot)
    t1, labels = viewer.layers["t1"], viewer.layers["labels"]
    labels.data[6:10, 8:14, 5:12] = 3
    labels.refresh()
    widget.oblique_source.setCurrentText("t1")
    widget.set_oblique_angles((25.0, -10.0, 30.0), base="coronal")
    widget.set_oblique(True)
    qtbot.waitUntil(lambda: "oblique image" in widget.views["oblique"].model.layers, timeout=5000)
    shown = widget.views["oblique"].model.layers["oblique image"]
    plane = oblique_plane(widget.cursor, base="coronal", angles_deg=(25.0, -10.0, 30.0))
    from napari_mriseg._napari._multiview import _layer_grid

    expected = reslice_array(np.asarray(t1.data), _layer_grid(t1), plane, order=1)
    np.testing.assert_allclose(shown.data, expected.image)
    assert shown.scale[0] == pytest.approx(1.5)  # auto pixel: the smallest spacing, in mm
    assert 3 in np.asarray(widget.views["oblique"].model.layers["oblique labels"].data)
    assert widget.views["oblique"].overlay.text()["top"] != ""
    # the oblique plane follows the cursor
    widget.set_cursor(widget.cursor + np.array([2.0, 3.0, -1.0]))
    qtbot.waitUntil(lambda: widget._oblique["plane"] is not None
                    and np.allclose(widget._oblique["plane"].point, widget.cursor), timeout=5000)
    # or the plane through a line drawn in the main canvas (axial): it holds the line, superior up
    p0, p1 = np.array([1.0, -10.0, -8.0]), np.array([1.0, 6.0, 9.0])
    shapes = viewer.add_shapes([np.stack([p0, p1])], shape_type="line", name="line")
    widget._oblique_from_selected_line()
    plane = widget.oblique_plane()
    np.testing.assert_allclose(plane.distance(np.stack([p0, p1])), 0, atol=1e-9)
    assert plane.row == (-1.0, 0.0, 0.0)
    qtbot.waitUntil(lambda: widget.views["oblique"].overlay.text()["top"] == "S", timeout=5000)
    viewer.layers.remove(shapes)
    widget.set_oblique_angles((25.0, -10.0, 30.0), base="coronal")
    # 3D: one sequence as a volume, labels as iso-surfaces, a clipping plane through the cursor
    widget.clip_check.setChecked(True)
    widget.clip_plane.setCurrentText("oblique")
    widget.set_3d(True, sequence="t1", rendering="mip")
    assert viewer.dims.ndisplay == 3 and t1.rendering == "mip" and not viewer.layers["t2"].visible
    assert labels.rendering == "iso_categorical"
    assert len(labels.experimental_clipping_planes) == 1  # the labels are cut too
    clip = t1.experimental_clipping_planes[0]
    np.testing.assert_allclose(clip.position, t1.world_to_data(widget.cursor), atol=1e-6)
    n_data = np.asarray(clip.normal)
    n_world = n_data / np.asarray(t1.scale)  # n_data = A^T n_world, A = diag(scale)
    normal = widget.oblique_plane().normal
    normal = normal if normal @ THREE_D_VIEW > 0 else -normal  # napari keeps the far side from the camera
    np.testing.assert_allclose(n_world / np.linalg.norm(n_world), normal, atol=1e-6)
    widget.clip_flip.setChecked(True)
    np.testing.assert_allclose(t1.experimental_clipping_planes[0].normal, -n_data, atol=1e-9)
    widget.set_3d(False)
    assert viewer.dims.ndisplay == 2 and viewer.layers["t2"].visible and not t1.experimental_clipping_planes
    widget.close_views()


@pytest.mark.slow
def test_layout_screenshots_with_a_case_painted_in_the_coronal_view(make_napari_viewer, qtbot):
    """Screenshots to LOOK at: the layout with the phantom case, painted in the coronal view,
    the oblique view and the 3D mode."""
    from napari_mriseg._napari.layers import case_layer_data
    from napari_mriseg.core.phantom import make_phantom_case

    pc = make_phantom_case(1, spacing_mm=2.0, misalign=False)
    viewer = _viewer_with(make_napari_viewer, case_layer_data(pc.case), size=(1600, 1000))
    widget = _dock(viewer, qtbot)
    labels = viewer.layers["labels"]
    tumour = labels.data_to_world(np.argwhere(np.asarray(labels.data) > 0).mean(0))
    widget.set_cursor(tumour)
    viewer.layers.selection.active = labels
    labels.mode, labels.brush_size, labels.selected_label = "paint", 4, 1
    cor = widget.views["coronal"]
    canvas = adapter.canvas_widget(cor.qt)
    cx, cy = canvas.width() / 2, canvas.height() / 2
    before = np.asarray(labels.data).copy()
    _drag(canvas, [(cx - 40 + 4 * t, cy + 30 - 2 * t) for t in range(20)])
    changed = np.argwhere(np.asarray(labels.data) != before)
    assert len(changed) > 0 and len(set(changed[:, 1])) == 1
    labels.mode = "pan_zoom"
    qtbot.wait(100)
    _shot(viewer, "layout_painted_coronal.png")
    widget.set_oblique_angles((20.0, 0.0, 15.0))
    widget.set_oblique(True)
    qtbot.wait(200)
    _shot(viewer, "layout_oblique.png")
    widget.clip_check.setChecked(True)
    widget.set_3d(True, sequence="t1c", rendering="attenuated_mip")
    qtbot.wait(300)
    _shot(viewer, "layout_3d_clipped.png")
    widget.close_views()
