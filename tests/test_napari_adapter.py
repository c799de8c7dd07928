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
