"""'MRI workflow' dock widget: every panel in the order of the work, sharing one workspace.

Load -> Register -> View -> Segment -> Correct -> Export, as tabs of one dock. The dock owns the
`Workspace` (the case, its registration, prediction, edits and review state) and hands it to each
panel; panels opened on their own from the Plugins menu find the same workspace through
`Workspace.of`. Keyboard shortcuts for the frequent actions are bound on the viewer (public
``viewer.bind_key``), on keys napari leaves free; they are listed in `SHORTCUTS`.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QScrollArea, QSplitter, QTabWidget, QVBoxLayout, QWidget

from .workspace import PREDICTION_LAYER, Workspace

#: Key -> (what it does). Keys napari does not use for labels or images (napari 0.9).
SHORTCUTS = {
    ".": "next label (the model's labels in turn)",
    ",": "previous label",
    "G": "show/hide the model's original prediction",
    "U": "go to the next uncertain region",
    "K": "mark the current slice reviewed",
}


class WorkflowWidget(QWidget):
    """All mriseg panels as tabs in the order of the work, with one shared `Workspace`."""

    #: Tab titles, in the order of the work.
    PANELS = ("Load", "Register", "View", "Segment", "Correct", "Export")

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        from ._correct_widget import CorrectWidget
        from ._export_widget import ExportWidget
        from ._load_widget import LoadCaseWidget
        from ._multiview import MultiViewWidget
        from ._register_widget import RegisterWidget
        from ._segment_widget import SegmentWidget
        from ._window_level import WindowLevelWidget

        self.viewer = napari_viewer
        self.workspace = workspace if workspace is not None else Workspace(napari_viewer, parent=self)
        ws = self.workspace
        # window/level above the linked views, the border between them draggable
        view = QSplitter(Qt.Orientation.Vertical)
        self.window_level = WindowLevelWidget(napari_viewer, ws)
        self.multiview = MultiViewWidget(napari_viewer, ws)
        view.addWidget(self.window_level)
        view.addWidget(self.multiview)
        view.setStretchFactor(1, 1)
        self.panels: dict[str, QWidget] = {
            "Load": LoadCaseWidget(napari_viewer, ws),
            "Register": RegisterWidget(napari_viewer, ws),
            "View": view,
            "Segment": SegmentWidget(napari_viewer, ws),
            "Correct": CorrectWidget(napari_viewer, ws),
            "Export": ExportWidget(napari_viewer, ws),
        }
        self.tabs = QTabWidget()
        for name in self.PANELS:
            if name == "View":  # the views need the whole tab, not a scroll area
                self.tabs.addTab(self.panels[name], name)
                continue
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(self.panels[name])
            self.tabs.addTab(scroll, name)
        self.autosave = _make_autosaver(ws)
        self.autosave_label = getattr(self.autosave, "status_label", None) or QLabel("")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.autosave_label)
        ws.case_changed.connect(self._case_changed)
        self.bind_shortcuts()

    # ------------------------------------------------------------------ navigation
    def show_panel(self, name: str) -> QWidget:
        """Bring the tab ``name`` (one of `PANELS`) forward; returns its panel."""
        self.tabs.setCurrentIndex(self.PANELS.index(name))
        return self.panels[name]

    def _case_changed(self, case: Any) -> None:
        if case is not None and self.tabs.currentIndex() == 0:
            mis = case.misregistered()
            self.show_panel("Register" if mis else "Segment")

    # ------------------------------------------------------------------ shortcuts
    def bind_shortcuts(self) -> None:
        """Bind `SHORTCUTS` on the viewer (overwriting nothing napari binds by default)."""
        actions = {".": lambda v: self.step_label(+1), ",": lambda v: self.step_label(-1),
                   "G": lambda v: self.toggle_prediction(), "U": lambda v: self.next_uncertain(),
                   "K": lambda v: self.mark_slice_reviewed()}
        for key, action in actions.items():
            self.viewer.bind_key(key, action, overwrite=True)

    def _label_values(self) -> list[int]:
        model = self.workspace.model
        if model is not None:
            return sorted(int(v) for v in model.config.labels.values())
        from .layers import LABEL_NAMES

        return sorted(LABEL_NAMES)

    def step_label(self, step: int) -> int | None:
        """Select the next (+1) or previous (-1) label of the model on the labels layer."""
        layer = self.workspace.labels_layer()
        if layer is None:
            return None
        values = self._label_values()
        cur = int(layer.selected_label)
        pos = values.index(cur) if cur in values else (-1 if step > 0 else 0)
        layer.selected_label = values[(pos + step) % len(values)]
        self.viewer.layers.selection.active = layer
        return int(layer.selected_label)

    def toggle_prediction(self) -> bool | None:
        """Show or hide the model's original prediction (drawn as contours)."""
        if PREDICTION_LAYER not in self.viewer.layers:
            return None
        layer = self.viewer.layers[PREDICTION_LAYER]
        layer.visible = not layer.visible
        return bool(layer.visible)

    def next_uncertain(self) -> Any:
        """Go to the next uncertain region (Segment panel)."""
        return self.panels["Segment"].next_uncertain_region()

    def mark_slice_reviewed(self) -> Any:
        """Mark the slice shown as reviewed (Correct panel)."""
        return self.panels["Correct"].mark_slice_reviewed()


def _make_autosaver(ws: Workspace) -> Any:
    from .autosave import Autosaver

    return Autosaver(ws, parent=ws)


__all__ = ["SHORTCUTS", "WorkflowWidget"]
