"""The ONLY module of napari-mriseg that touches napari's private API.

napari has no public multi-canvas API (NAP-9, "multiple viewports", is a draft); its own
"multiple viewer widget" example builds extra canvases from a `ViewerModel` and a `QtViewer`.
The linked views (`_multiview`) need exactly four things napari does not offer publicly, and get
them here, nowhere else:

1. `make_canvas` / `close_canvas` / `canvas_screenshot` / `canvas_widget` / `draw_emitter`: an
   extra canvas (a ``QtViewer`` on its own ``ViewerModel``) embedded in a dock widget, its
   teardown, its GL widget (to draw orientation letters over it) and its draw event (benchmarks);
   `main_qt_viewer` / `main_window`: the same for the main viewer (``viewer.window._qt_viewer``,
   ``viewer.window._qt_window``: the latter to free the extra canvases when the window closes).
2. `move_undo_step`: a stroke painted in an extra canvas is recorded in the undo history of that
   canvas' mirror of the labels layer; it is moved onto the main labels layer
   (``Labels._undo_history`` / ``_redo_history`` / ``_append_to_undo_history``), so napari's
   Ctrl+Z in the main window undoes it and ``events.paint`` reports it there.
3. `slice_token`: identity of a layer's current slice request (``Layer._slice_input``), to tell a
   refresh of the same slice (its voxels changed: undo, redo) from a move to another slice.
4. `unwrap_viewer`: napari hands a plugin's dock widget a ``PublicOnlyProxy`` of the viewer; the
   views need the viewer itself (the layers they mirror must be the objects napari's events
   carry, ``is`` comparisons included, and 1-3 above reach behind the proxy).

`check_napari` runs when the views are built: outside the napari versions this adapter was tested
with (`TESTED_NAPARI`), or when one of the private names is gone, it raises
`NapariCompatibilityError` naming this file: a napari upgrade breaks one place, loudly. Set the
environment variable ``MRISEG_ALLOW_UNTESTED_NAPARI=1`` to try an untested version anyway (the
private names are still checked).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.errors import MriSegError

__all__ = [
    "TESTED_NAPARI",
    "NapariCompatibilityError",
    "canvas_screenshot",
    "canvas_widget",
    "check_napari",
    "close_canvas",
    "draw_emitter",
    "main_qt_viewer",
    "main_window",
    "make_canvas",
    "move_undo_step",
    "slice_token",
    "unwrap_viewer",
]

#: napari versions this adapter was written and tested against: ``low <= version < high``.
TESTED_NAPARI = ("0.9.0", "0.10")
#: Environment variable that lets an untested napari version through the version check.
ALLOW_ENV = "MRISEG_ALLOW_UNTESTED_NAPARI"
_THIS_FILE = "napari_mriseg/_napari/_napari_adapter.py"
#: The private names used here: (where, attribute).
_PRIVATE_LABELS = ("_undo_history", "_redo_history", "_append_to_undo_history", "_slice_input")


class NapariCompatibilityError(MriSegError, RuntimeError):
    """The installed napari is not one the linked views were tested with, or lacks an internal."""


def _fix() -> str:
    low, high = TESTED_NAPARI
    return (f"fix: install a tested napari (pip install 'napari>={low},<{high}'), or update {_THIS_FILE} "
            f"and run tests/test_napari_adapter.py (set {ALLOW_ENV}=1 to try this napari anyway)")


def check_napari(version: str | None = None) -> str:
    """Raise `NapariCompatibilityError` unless napari is a tested version with the internals used.

    Parameters
    ----------
    version : str, optional
        Version to check (default: the installed napari's).

    Returns
    -------
    str
        The version checked.
    """
    from packaging.version import InvalidVersion, Version

    if version is None:
        import napari

        version = napari.__version__
    low, high = TESTED_NAPARI
    try:
        v = Version(version)
    except InvalidVersion as exc:
        raise NapariCompatibilityError(f"cannot read the napari version {version!r}; {_fix()}") from exc
    if not (Version(low) <= Version(v.base_version) < Version(high)) and os.environ.get(ALLOW_ENV) != "1":
        raise NapariCompatibilityError(
            f"napari {version} is outside the versions the linked views were tested with "
            f"(>={low},<{high}); they use napari internals (extra canvases, the labels undo history); {_fix()}")
    _check_private_api()
    return version


def _check_private_api() -> None:
    from napari.components import ViewerModel
    from napari.layers import Labels
    from napari.qt import QtViewer

    probe = Labels(np.zeros((2, 2), np.uint8))
    missing = [f"Labels.{name}" for name in _PRIVATE_LABELS if not hasattr(probe, name)]
    missing += [f"QtViewer.{name}" for name in ("screenshot", "close") if not hasattr(QtViewer, name)]
    from napari._vispy.canvas import VispyCanvas

    missing += [f"VispyCanvas.{name}" for name in ("native",) if not hasattr(VispyCanvas, name)]
    from napari._qt.qt_main_window import Window

    missing += [f"Window.{name}" for name in ("_qt_viewer",) if not hasattr(Window, name)]
    missing += [f"ViewerModel.{name}" for name in ("scene", "mouse_drag_callbacks", "dims")
                if not hasattr(ViewerModel(), name)]
    if missing:
        raise NapariCompatibilityError(f"this napari lacks internals the linked views use: {', '.join(missing)}; "
                                       f"{_fix()}")


def unwrap_viewer(viewer: Any) -> Any:
    """The napari `Viewer` behind the ``PublicOnlyProxy`` napari gives plugin widgets (or ``viewer``)."""
    return getattr(viewer, "__wrapped__", viewer)


# ---------------------------------------------------------------------------- extra canvases
def make_canvas(title: str) -> tuple[Any, Any]:
    """A new ``(ViewerModel, QtViewer)`` pair: an extra napari canvas, as a QWidget to embed.

    The `ViewerModel` is napari's public viewer model (layers, dims, camera, mouse callbacks);
    the `QtViewer` widget holds its vispy canvas and dims sliders (no welcome screen).
    """
    from napari.components import ViewerModel
    from napari.qt import QtViewer

    model = ViewerModel(title=title)
    return model, QtViewer(model, show_welcome_screen=False)


def close_canvas(qt_viewer: Any) -> None:
    """Tear down a canvas made by `make_canvas`: its GL canvas is deleted and the widget freed.

    Safe on a widget whose C++ side is already gone.
    """
    try:
        qt_viewer.viewer.layers.clear()
        qt_viewer.close()  # QtViewer.closeEvent deletes the vispy canvas and stops the dims
        qt_viewer.setParent(None)
        qt_viewer.deleteLater()
    except RuntimeError:  # pragma: no cover - wrapped C++ object already deleted
        pass


def canvas_screenshot(qt_viewer: Any) -> np.ndarray:
    """The canvas of ``qt_viewer`` as an ``(h, w, 4)`` uint8 RGBA array (no flash)."""
    return np.asarray(qt_viewer.screenshot(flash=False))


def canvas_widget(qt_viewer: Any) -> Any:
    """The QWidget (vispy's QOpenGLWidget) that shows the canvas of ``qt_viewer``."""
    return qt_viewer.canvas.native


def draw_emitter(qt_viewer: Any) -> Any:
    """vispy's ``draw`` event of the canvas of ``qt_viewer`` (emitted after each redraw)."""
    return qt_viewer.canvas._scene_canvas.events.draw


def main_qt_viewer(viewer: Any) -> Any:
    """The `QtViewer` of a napari `Viewer`'s own window (its main canvas)."""
    return viewer.window._qt_viewer


def main_window(viewer: Any) -> Any:
    """The QMainWindow of a napari `Viewer` (None for a viewer without a window)."""
    window = getattr(viewer, "window", None)
    return getattr(window, "_qt_window", None)


# ---------------------------------------------------------------------------- labels internals
def move_undo_step(source: Any, target: Any, item: list) -> bool:
    """Move the undo step ``item`` just recorded by labels layer ``source`` onto ``target``.

    Call it from ``source.events.paint`` (``item`` is ``event.value``). Afterwards ``target.undo()``
    undoes the stroke (both layers share one data array), ``source`` keeps no history of it, and
    ``target.events.paint`` has been emitted with ``item``. Returns False (and changes nothing)
    if ``item`` is not ``source``'s last undo step.
    """
    history = source._undo_history
    if not history or history[-1] is not item:
        return False
    history.pop()
    source._redo_history.clear()
    target._redo_history.clear()  # a new edit drops the redo queue, as napari's own strokes do
    target._append_to_undo_history(item)  # appends and emits target.events.paint(value=item)
    return True


def slice_token(layer: Any) -> object:
    """An object that stays the same (``is``) while ``layer`` shows the same slice.

    napari replaces a layer's slice input whenever its dims point, order or ndisplay change; a
    refresh of the same slice (undo, redo, new voxels) keeps it.
    """
    return layer._slice_input
