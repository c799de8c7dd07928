"""The adapter: the one module touching napari internals. A napari upgrade must break HERE, loudly."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from napari_mriseg._napari import _napari_adapter as adapter
from napari_mriseg._napari._napari_adapter import NapariCompatibilityError
from napari_mriseg.core.errors import MriSegError


def test_the_installed_napari_passes_the_check():
    import napari

    assert adapter.check_napari() == napari.__version__


@pytest.mark.parametrize("version", ["0.8.4", "0.10.0", "1.2.0", "0.10.0rc1"])
def test_untested_versions_fail_loudly_naming_this_adapter(version, monkeypatch):
    monkeypatch.delenv(adapter.ALLOW_ENV, raising=False)
    with pytest.raises(NapariCompatibilityError) as err:
        adapter.check_napari(version)
    msg = str(err.value)
    assert f"napari {version}" in msg and "_napari_adapter.py" in msg and "pip install 'napari>=0.9.0,<0.10'" in msg
    assert isinstance(err.value, MriSegError) and isinstance(err.value, RuntimeError)
    # the escape hatch lets a developer try it (the private names are still checked)
    monkeypatch.setenv(adapter.ALLOW_ENV, "1")
    assert adapter.check_napari(version) == version


def test_an_unreadable_version_and_a_missing_internal_fail_too(monkeypatch):
    with pytest.raises(NapariCompatibilityError, match="cannot read the napari version"):
        adapter.check_napari("not-a-version")
    monkeypatch.setattr(adapter, "_PRIVATE_LABELS", (*adapter._PRIVATE_LABELS, "_gone_in_napari_1_0"))
    with pytest.raises(NapariCompatibilityError, match=r"Labels\._gone_in_napari_1_0.*_napari_adapter\.py"):
        adapter.check_napari()


def _shared_labels():
    from napari.layers import Labels

    data = np.zeros((6, 8, 9), np.uint8)
    main, mirror = Labels(data, name="labels"), Labels(data, name="labels")
    assert main.data is mirror.data
    return main, mirror


def test_a_stroke_in_a_mirror_becomes_an_undo_step_of_the_main_layer():
    main, mirror = _shared_labels()
    seen = []
    main.events.paint.connect(lambda e: seen.append(e.value))
    moved = []
    mirror.events.paint.connect(lambda e: moved.append(adapter.move_undo_step(mirror, main, e.value)))
    mirror.n_edit_dimensions, mirror.brush_size = 2, 3
    with mirror.block_history():  # one stroke: two brush steps
        mirror.paint((3, 4, 4), 2)
        mirror.paint((3, 4, 6), 2)
    painted = np.argwhere(main.data == 2)
    assert moved == [True] and len(painted) > 5 and set(painted[:, 0]) == {3}
    assert len(seen) == 1 and len(main._undo_history) == 1 and len(mirror._undo_history) == 0
    main.undo()
    assert not main.data.any()
    main.redo()
    assert len(np.argwhere(main.data == 2)) == len(painted)
    # an item that is not the mirror's last undo step is left alone
    assert adapter.move_undo_step(mirror, main, [("not", "an", "atom")]) is False
    assert len(main._undo_history) == 1


def test_slice_token_tells_a_refresh_from_a_new_slice():
    from napari.components import ViewerModel

    model = ViewerModel()
    layer = model.add_labels(np.zeros((5, 6, 7), np.uint8))
    token = adapter.slice_token(layer)
    layer.data[2, 3, 3] = 1
    layer.refresh()
    assert adapter.slice_token(layer) is token
    model.dims.set_point(0, 4)
    assert adapter.slice_token(layer) is not token


@pytest.mark.gui
def test_extra_canvas_lifecycle_and_the_main_window(make_napari_viewer, qtbot):
    from napari.components import ViewerModel
    from napari.qt import QtViewer
    from qtpy.QtWidgets import QWidget

    viewer = make_napari_viewer(show=True)
    assert isinstance(adapter.main_qt_viewer(viewer), QtViewer)
    assert adapter.main_window(viewer) is viewer.window._qt_window
    assert isinstance(adapter.canvas_widget(adapter.main_qt_viewer(viewer)), QWidget)

    model, qt = adapter.make_canvas("extra")
    assert isinstance(model, ViewerModel) and isinstance(qt, QtViewer) and qt.viewer is model
    model.add_image(np.arange(60, dtype=np.float32).reshape(3, 4, 5) * 10)
    qt.resize(200, 150)
    qt.show()
    drawn = []
    adapter.draw_emitter(qt).connect(lambda e: drawn.append(1))
    model.dims.set_point(0, 2)
    qtbot.waitUntil(lambda: bool(drawn), timeout=5000)
    shot = adapter.canvas_screenshot(qt)
    assert shot.ndim == 3 and shot.shape[2] == 4 and shot.dtype == np.uint8 and shot[..., :3].max() > 0
    assert isinstance(adapter.canvas_widget(qt), QWidget)
    adapter.close_canvas(qt)
    adapter.close_canvas(qt)  # twice is harmless
    del qt
    qtbot.wait(50)
    gc.collect()
    assert len(model.layers) == 0
    # the fixture fails the test if a QtViewer instance leaked


# ---------------------------------------------------------------------------- speed helpers
def _model_with_two_layers():
    from napari.components import ViewerModel

    model = ViewerModel()
    image = model.add_image(np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7))
    labels = model.add_labels(np.zeros((5, 6, 7), np.uint8))
    return model, image, labels


def test_set_dims_point_slices_each_layer_once_where_napari_slices_twice():
    model, image, labels = _model_with_two_layers()
    calls = {image: 0, labels: 0}
    for layer in (image, labels):
        original = layer._slice_dims

        def counted(*args, _ly=layer, _orig=original, **kwargs):
            calls[_ly] += 1
            return _orig(*args, **kwargs)

        layer._slice_dims = counted
    # napari's own path: _update_layers hears both dims.events.point and current_step. If this
    # fails, napari slices once by itself and set_dims_point can become a plain assignment.
    model.dims.point = (3.0, *model.dims.point[1:])
    assert calls == {image: 2, labels: 2}
    token = adapter.slice_token(labels)
    calls.update({image: 0, labels: 0})
    adapter.set_dims_point(model, (1.0, *model.dims.point[1:]))
    assert calls == {image: 1, labels: 1}
    assert model.dims.point[0] == 1.0 and model.dims.current_step[0] == 1
    assert adapter.slice_token(labels) is not token  # sliced at the new point...
    np.testing.assert_array_equal(image._slice.image.raw, image.data[1])  # ...with the new voxels


def test_mute_thumbnail_keeps_a_mirror_from_recomputing_its_thumbnail():
    from napari.components import ViewerModel

    model = ViewerModel()
    data = np.zeros((4, 16, 16), np.uint8)
    data[3] = 2  # only the last slice is labelled: its thumbnail differs from the others'
    shown, muted = model.add_labels(data), model.add_labels(data)
    adapter.mute_thumbnail(muted)
    model.dims.set_point(0, 0)
    before_shown, before_muted = shown.thumbnail.copy(), muted.thumbnail.copy()
    model.dims.set_point(0, 3)
    assert not np.array_equal(shown.thumbnail, before_shown)  # napari recomputes it...
    np.testing.assert_array_equal(muted.thumbnail, before_muted)  # ...not for the muted layer
    np.testing.assert_array_equal(muted._slice.image.raw, data[3])  # which is still sliced


def test_refresh_labels_box_redraws_voxels_painted_elsewhere():
    from napari.components import ViewerModel

    data = np.zeros((6, 8, 9), np.uint8)
    model = ViewerModel()
    layer = model.add_labels(data)
    model.dims.order = (1, 0, 2)  # a coronal-like slice: displayed axes (0, 2), sliced along 1
    model.dims.set_point(1, 4)
    assert layer._slice_input.displayed == [0, 2]
    events = []
    layer.events.labels_update.connect(lambda e: events.append((tuple(e.offset), np.asarray(e.data).copy())))
    data[2:4, 4, 3:6] = 5  # painted through another layer sharing the array (another canvas)
    data[2:4, 5, 3:6] = 7  # ... and on another slice
    assert adapter.refresh_labels_box(layer, (2, 4, 3), (4, 6, 6)) is True
    assert len(events) == 1 and events[0][0] == (2, 3)  # offset on the displayed axes (0, 2)
    fresh = Labels_view_after_refresh(layer)
    np.testing.assert_array_equal(layer._slice.image.view, fresh)  # same as a whole new slice
    assert np.any(fresh != fresh.flat[0])
    # a box that misses the slice shown redraws nothing
    assert adapter.refresh_labels_box(layer, (0, 6, 0), (2, 8, 2)) is True and len(events) == 1
    # not possible in 3D: the caller refreshes the whole layer
    model.dims.ndisplay = 3
    assert adapter.refresh_labels_box(layer, (2, 4, 3), (4, 6, 6)) is False


def Labels_view_after_refresh(layer):  # noqa: N802 - reads as what it returns
    """The displayed slice of ``layer`` after napari re-slices it from scratch (a copy)."""
    view = layer._slice.image.view.copy()
    layer.refresh()
    fresh = layer._slice.image.view.copy()
    layer._slice.image.view[...] = view  # leave the partially refreshed state for the caller
    return fresh


@pytest.mark.gui
def test_skip_unchanged_matrix_keeps_the_transform_right(make_napari_viewer, qtbot):
    from napari._vispy.layers.base import VispyBaseLayer

    viewer = make_napari_viewer(show=True)
    model, qt = adapter.make_canvas("extra")
    qt.resize(200, 150)
    qt.show()
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    kw = {"scale": (3.0, 1.5, 0.5), "translate": (-4.0, 2.0, 7.0)}
    fast, plain = model.add_image(data, **kw), model.add_image(data, **kw)
    runs = []
    original = VispyBaseLayer._on_matrix_change

    def counting(self, *args):
        runs.append(self.layer)
        return original(self, *args)

    VispyBaseLayer._on_matrix_change = counting
    try:
        assert adapter.skip_unchanged_matrix(qt, fast) is True
        assert adapter.skip_unchanged_matrix(qt, object()) is False  # not a layer of this canvas
        visuals = qt.canvas.layer_to_visual

        def same() -> bool:
            return np.allclose(visuals[fast].node.transform.matrix, visuals[plain].node.transform.matrix)

        for z in (1.0, 7.0, 13.0):
            model.dims.set_point(0, z)
            assert same()
        assert runs.count(plain) >= 3 and runs.count(fast) <= 1  # new slices: only the first rebuilt it
        for layer in (fast, plain):
            layer.scale = (3.0, 2.5, 1.0)  # a transform event still rebuilds it at once
        assert same()
        model.dims.order = (1, 0, 2)  # other displayed axes: rebuilt on the new slice
        assert same()
        model.dims.ndisplay = 3  # a new node
        assert same()
        model.dims.ndisplay = 2
        assert same()
    finally:
        VispyBaseLayer._on_matrix_change = original
        adapter.close_canvas(qt)
    del viewer
