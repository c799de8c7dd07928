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
5. Speed of a cursor move (four canvases resliced at once): `set_dims_point` slices each layer
   once where napari slices twice (``ViewerModel._update_layers`` is connected to both
   ``dims.events.point`` and ``dims.events.current_step``); `mute_thumbnail` stops a mirror layer
   from recomputing a thumbnail no layer list shows (``Layer._update_thumbnail``);
   `skip_unchanged_matrix` keeps a mirror's vispy layer from rebuilding its transform on every
   new slice when nothing the transform depends on changed (``VispyCanvas.layer_to_visual``,
   the vispy layer's ``_on_data_change`` / ``_on_matrix_change``, ``Layer._transforms``).
6. Speed of a brush stroke seen in other canvases: `refresh_labels_box` redraws only the painted
   box of a labels layer's current slice (a partial texture update, napari's own path for its
   brush: ``Labels._slice``, ``_get_pt_not_disp``, ``_accumulate_updated_slice``,
   ``_partial_labels_refresh``, ``colormap._data_to_texture``) instead of re-slicing the layer.

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
    "mute_thumbnail",
    "refresh_labels_box",
    "set_dims_point",
    "skip_unchanged_matrix",
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
_PRIVATE_VISPY_LAYER = ("_on_data_change", "_on_matrix_change")
_PRIVATE_LABELS_PARTIAL = ("_slice", "_get_pt_not_disp", "_accumulate_updated_slice", "_partial_labels_refresh",
                           "_updated_slice")


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
    missing += [f"ViewerModel.{name}" for name in ("scene", "mouse_drag_callbacks", "dims", "_update_layers")
                if not hasattr(ViewerModel(), name)]
    missing += [f"Layer.{name}" for name in ("_update_thumbnail", "_transforms") if not hasattr(probe, name)]
    missing += [f"Labels.{name}" for name in _PRIVATE_LABELS_PARTIAL if not hasattr(probe, name)]
    missing += [f"Labels.colormap.{name}" for name in ("_data_to_texture",) if not hasattr(probe.colormap, name)]
    from napari._vispy.layers.base import VispyBaseLayer

    missing += [f"VispyBaseLayer.{name}" for name in _PRIVATE_VISPY_LAYER if not hasattr(VispyBaseLayer, name)]
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


# ---------------------------------------------------------------------------- speed
def set_dims_point(model: Any, point: Any) -> None:
    """Set ``model.dims.point`` (world coordinates), slicing each layer of ``model`` once.

    napari connects ``ViewerModel._update_layers`` to both ``dims.events.point`` and
    ``dims.events.current_step``; a new point changes both, so a plain assignment runs the whole
    slicing machinery twice (the second pass finds nothing new, at about a sixth of the cost of
    the first). The second is blocked here; everything else listening to ``current_step`` (the
    dims sliders) still hears it.
    """
    with model.dims.events.current_step.blocker(model._update_layers):
        model.dims.point = tuple(point)


def _no_thumbnail(*_: Any, **__: Any) -> None:
    """A thumbnail update that does nothing (see `mute_thumbnail`)."""


def mute_thumbnail(layer: Any) -> None:
    """Stop ``layer`` from recomputing its thumbnail on every new slice.

    For a layer in a canvas without a layer list (an extra canvas' mirror of a main layer): its
    thumbnail is never shown, and recomputing it costs about 0.3 ms per layer and slice.
    """
    layer._update_thumbnail = _no_thumbnail


def skip_unchanged_matrix(qt_viewer: Any, layer: Any) -> bool:
    """Let the vispy layer of ``layer`` in the canvas of ``qt_viewer`` skip rebuilding its
    transform on a new slice when nothing it depends on changed.

    napari's vispy layer recomputes its node's transform after every new slice
    (``_on_data_change`` calls ``_on_matrix_change``: simplified transform chain, vispy matrix
    events), about 0.8 ms per layer and slice. The result depends only on the node, the displayed
    axes, the layer's transforms and units: the transform events (scale, translate, rotate,
    shear, affine, units) still rebuild it at once; a new slice rebuilds it only if the node, the
    displayed axes, the layer's dimensionality, its units scale or its tile transform changed.
    Multiscale layers are left alone. Returns False (changing nothing) when the layer has no
    vispy layer in that canvas.
    """
    import weakref

    visual = qt_viewer.canvas.layer_to_visual.get(layer)
    if visual is None or getattr(layer, "multiscale", False):
        return False
    cls, ref = type(visual), weakref.ref(visual)
    state: dict[str, Any] = {"key": None, "in_data": False}

    def key(vis: Any) -> tuple:
        si = vis.layer._slice_input
        return (id(vis.node), si.ndisplay, tuple(si.displayed), vis.layer.ndim,
                tuple(vis._world_to_layer_units_scale), vis.layer._transforms[0].affine_matrix.tobytes())

    def on_matrix_change(*args: Any) -> None:
        vis = ref()
        if vis is None:  # pragma: no cover - the canvas is gone
            return
        k = key(vis)
        if state["in_data"] and k == state["key"]:
            return
        cls._on_matrix_change(vis, *args)
        state["key"] = k

    def on_data_change(*args: Any) -> None:
        vis = ref()
        if vis is None:  # pragma: no cover - the canvas is gone
            return
        state["in_data"] = True
        try:
            cls._on_data_change(vis, *args)
        finally:
            state["in_data"] = False

    visual._on_matrix_change = on_matrix_change
    visual._on_data_change = on_data_change
    return True


def refresh_labels_box(layer: Any, lo: Any, hi: Any) -> bool:
    """Redraw the data-index box ``[lo, hi)`` of labels ``layer``'s current 2D slice from its data.

    For voxels written into the layer's array from elsewhere (a stroke painted in another canvas
    on the same array): a partial texture update of just that box, as napari does for its own
    brush, instead of `Layer.refresh` (a new slice of the whole layer, a full texture upload and
    a thumbnail). Returns True when the slice is up to date (also when the box misses it), False
    when the layer cannot be updated this way (3D display, hidden or not loaded, data that is
    not a numpy array the slice is a view of): then call ``layer.refresh()``.

    Parameters
    ----------
    layer : napari.layers.Labels
    lo, hi : sequence of int
        Box corners in the layer's data indices (all axes, array order); ``hi`` exclusive.
    """
    si = layer._slice_input
    data = layer.data
    if (si.ndisplay != 2 or not layer.visible or not layer.loaded or len(lo) != layer.ndim
            or not isinstance(data, np.ndarray)):
        return False
    image = layer._slice.image
    raw, view = image.raw, image.view
    if not (isinstance(raw, np.ndarray) and np.shares_memory(raw, data)):
        return False
    lo = np.maximum(np.asarray(lo, int), 0)
    hi = np.minimum(np.asarray(hi, int), np.asarray(data.shape))
    box = [slice(int(a), int(b)) for a, b in zip(lo, hi)]
    for axis, index in layer._get_pt_not_disp().items():
        if not lo[axis] <= index < hi[axis]:
            return True  # the box misses the slice shown
        box[axis] = slice(int(index), int(index) + 1)
    sub = tuple(box[a] for a in si.displayed)  # the slice's axes are the displayed ones, in order
    if any(s.stop <= s.start for s in sub):
        return True
    if layer.contour == 0 and not np.shares_memory(view, raw):
        view[sub] = layer.colormap._data_to_texture(raw[sub])
    layer._accumulate_updated_slice(tuple(box))
    layer._partial_labels_refresh()  # emits labels_update(data, offset): the vispy texture's box
    return True
