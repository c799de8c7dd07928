"""The state of the case being worked on in one napari viewer, held by one explicit object.

Every panel (Load, Register, View, Segment, Correct, Export) reads and changes the case through
the `Workspace` it was given; nothing lives in module globals. The workspace is owned by a dock
widget: the first panel that needs one creates it, and panels opened later in the same viewer find
it through the viewer's dock widgets (`Workspace.of`), so they all share one.

Layers keep their own geometry (``layer.metadata["mriseg"]``, see `layers`); the workspace keeps
what layers cannot: the `Case` as loaded and as co-registered, the registration results, the model,
the labels layer being corrected, the original prediction, and the masks of voxels the clinician
touched and reviewed (on the labels layer's display grid, axis order of ``layer.data``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal

from ..core.case import Case
from .layers import KEY, LABELS_LAYER, labels_layer_data

if TYPE_CHECKING:  # pragma: no cover
    from ..core.registration import CaseRegistration
    from ..core.volume import Volume

__all__ = ["LABELS_LAYER", "PREDICTION_LAYER", "Workspace"]

#: Name of the layer holding the model's untouched prediction.
PREDICTION_LAYER = "prediction"


class Workspace(QObject):
    """One case in one viewer: what was loaded, registered, predicted, corrected and reviewed.

    Signals
    -------
    case_changed(object)
        A case was loaded or replaced (e.g. by its co-registered version); the new `Case` or None.
    registration_changed(object)
        Registrations were applied or undone; the current `CaseRegistration` or None.
    prediction_changed(object)
        A model prediction arrived; the prediction `Volume` (reference grid) or None.
    labels_edited()
        The labels changed (a brush stroke, a panel's operation, or the model's output).
    reviewed_changed()
        Slices or regions were marked reviewed (`reviewed` changed).
    """

    case_changed = Signal(object)
    registration_changed = Signal(object)
    prediction_changed = Signal(object)
    labels_edited = Signal()
    reviewed_changed = Signal()

    def __init__(self, viewer: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        #: The case as loaded from disk (native grids), kept so registration can be undone.
        self.loaded_case: Case | None = None
        #: The case the panels work on: the loaded case, or its co-registered version.
        self.case: Case | None = None
        #: Where the case came from (folder or files), for provenance.
        self.sources: list[Path] = []
        #: Registration results applied to `case` (None when the case is as loaded).
        self.registration: CaseRegistration | None = None
        #: Path of the model used for the last prediction, and its loaded object.
        self.model_path: Path | None = None
        self.model: Any = None
        #: The last prediction on the reference grid (labels `Volume`), kept for comparison.
        self.prediction: Volume | None = None
        #: Voxels the clinician changed since the last prediction (bool, labels layer's array shape).
        self.touched: np.ndarray | None = None
        #: Voxels the clinician marked as reviewed (bool, labels layer's array shape).
        self.reviewed: np.ndarray | None = None
        #: True when the labels changed since they were last saved or exported.
        self.dirty = False
        self._watched: Any = None
        self._model_writing = False

    # ------------------------------------------------------------------ finding it
    @classmethod
    def of(cls, viewer: Any) -> Workspace:
        """The workspace of ``viewer``: the one a docked mriseg panel owns, or a new one.

        A new workspace has no owner yet; the panel that asked for it becomes its owner by being
        docked (it must keep it as ``self.workspace``).
        """
        window = getattr(viewer, "window", None)
        docks = getattr(window, "dock_widgets", None) or {}
        for widget in docks.values():
            found = _find_workspace(widget, viewer)
            if found is not None:
                return found
        return cls(viewer)

    # ------------------------------------------------------------------ case
    def set_case(self, case: Case | None, *, sources: list[Path] | None = None) -> None:
        """Start work on a newly loaded ``case``: forget registrations, prediction and masks."""
        self.loaded_case = case
        self.case = case
        self.sources = list(sources or [])
        self.registration = None
        self.prediction = None
        self.touched = None
        self.reviewed = None
        self.dirty = False
        self.case_changed.emit(case)

    def apply_registration(self, registration: CaseRegistration | None) -> None:
        """Replace the working case by ``registration.case`` (None: back to the loaded case)."""
        self.registration = registration
        self.case = registration.case if registration is not None else self.loaded_case
        self.registration_changed.emit(registration)
        self.case_changed.emit(self.case)

    @property
    def case_id(self) -> str:
        """The case's identifier ('' when no case is loaded)."""
        return self.case.case_id if self.case is not None else ""

    # ------------------------------------------------------------------ layers
    def image_layers(self) -> list[Any]:
        """The viewer's image layers that belong to the current case, in layer order."""
        return [ly for ly in self.viewer.layers if ly.__class__.__name__ == "Image"
                and (ly.metadata.get(KEY) or {}).get("role") == "image"
                and (ly.metadata.get(KEY) or {}).get("case_id", "") == self.case_id]

    def labels_layer(self, *, create: bool = False) -> Any:
        """The labels layer being corrected (named `LABELS_LAYER`), or None.

        With ``create``, an empty one is added on the reference grid when there is none.
        """
        layers = self.viewer.layers
        if LABELS_LAYER in layers:
            return layers[LABELS_LAYER]
        if not create or self.case is None:
            return None
        from ..core.volume import Volume

        data, kwargs, _ = labels_layer_data(Volume.zeros_like_labels(self.case.grid), case_id=self.case_id,
                                            name=LABELS_LAYER)
        return self.viewer.add_labels(data, **kwargs)

    def watch_labels(self) -> Any:
        """Track edits of the labels layer (brush, fill, panels) in `touched`; returns the layer.

        Safe to call repeatedly: the layer is connected once.
        """
        layer = self.labels_layer()
        if layer is None or layer is self._watched:
            return layer
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._on_paint)
        layer.events.paint.connect(self._on_paint)
        self._watched = layer
        self.ensure_masks()
        return layer

    def _on_paint(self, event: Any) -> None:
        self.dirty = True
        if self._model_writing:  # the model's own output is not a clinician's edit
            self.labels_edited.emit()
            return
        self.ensure_masks()
        assert self.touched is not None
        for atom in event.value or ():
            if hasattr(atom, "slice_key"):  # napari's masked-paint atom: a box and a mask in it
                box = self.touched[atom.slice_key]
                if atom.mask is None:
                    box[...] = True
                else:
                    box[atom.mask] = True
            else:  # (indices, old values, new values)
                self.touched[tuple(atom[0])] = True
        self.labels_edited.emit()

    def edit_labels(self, indices: tuple[np.ndarray, ...], values: Any, *, by_model: bool = False) -> int:
        """Set labels voxels as ONE undoable step of napari's history (Ctrl+Z undoes it).

        Parameters
        ----------
        indices : tuple of int arrays
            Voxel indices in the labels layer's array (its axis order).
        values : int or int array
            The new label(s), broadcast against ``indices``.
        by_model : bool
            The change is a model's prediction, not a clinician's edit: `touched` is left as is.

        Returns
        -------
        int
            The number of voxels whose label changed.
        """
        layer = self.watch_labels()
        if layer is None:
            raise RuntimeError("no labels layer to edit")
        before = np.asarray(layer.data[indices])
        changed = int(np.count_nonzero(before != values))
        if changed:
            self._model_writing = by_model
            try:
                with layer.block_history():
                    layer.data_setitem(indices, values)
            finally:
                self._model_writing = False
        return changed

    def ensure_masks(self) -> None:
        """Allocate the touched/reviewed masks to the labels layer's shape if they do not fit."""
        layer = self.labels_layer()
        if layer is None:
            return
        shape = np.shape(layer.data)
        if self.touched is None or self.touched.shape != shape:
            self.touched = np.zeros(shape, bool)
        if self.reviewed is None or self.reviewed.shape != shape:
            self.reviewed = np.zeros(shape, bool)


def _find_workspace(widget: Any, viewer: Any) -> Workspace | None:
    """The `Workspace` held by ``widget`` (a dock widget or its inner widget) for ``viewer``."""
    seen = [widget]
    inner = getattr(widget, "widget", None)
    if callable(inner):
        try:
            seen.append(inner())
        except TypeError:  # pragma: no cover - a widget() needing arguments
            pass
    for w in seen:
        ws = getattr(w, "workspace", None)
        if isinstance(ws, Workspace) and _unwrap(ws.viewer) is _unwrap(viewer):
            return ws
    return None


def _unwrap(viewer: Any) -> Any:
    """The viewer behind napari's ``PublicOnlyProxy`` (what plugin widgets are given)."""
    return getattr(viewer, "__wrapped__", viewer)
