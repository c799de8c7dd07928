"""``mriseg demo``: napari with the sample case and the plugin docked; ``--headless`` writes what
the demo shows (screenshots of the three planes and of the window, the labels, a case summary)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MriSegError
from ._sample_data import SAMPLE_CASE
from .views import PLANES, set_plane

log = logging.getLogger(__name__)
PLUGIN = "napari-mriseg"


def open_demo_viewer(*, show: bool = True) -> tuple[Any, Any]:
    """A napari viewer with the MRI workflow dock (all panels) and the sample case loaded in it.

    Returns ``(viewer, load_widget)`` once the case is on screen (the workflow dock is
    ``load_widget.parent()``'s ancestor; its panels share the load widget's workspace).
    """
    import napari
    from qtpy.QtWidgets import QApplication

    if not SAMPLE_CASE.is_dir():
        raise MriSegError("the sample case is missing; reinstall napari-mriseg", path=SAMPLE_CASE)
    viewer = napari.Viewer(title="napari-mriseg demo", show=show)
    _, workflow = viewer.window.add_plugin_dock_widget(PLUGIN, "MRI workflow")
    widget = workflow.show_panel("Load")
    widget.scan(str(SAMPLE_CASE))
    worker = widget.load()
    deadline = time.monotonic() + 120
    while (worker.is_running or widget.case is None) and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    if widget.case is None:
        raise MriSegError(f"the sample case did not load: {widget.status.text()}", path=SAMPLE_CASE)
    focus_on_labels(viewer)
    return viewer, widget


def focus_on_labels(viewer: Any) -> None:
    """Put the cursor (all three planes) at the centre of the labels, if any are drawn."""
    labels = [lay for lay in viewer.layers if lay.__class__.__name__ == "Labels"]
    if not labels or not np.any(labels[0].data):
        return
    lay = labels[0]
    centre = np.argwhere(lay.data > 0).mean(0)
    viewer.dims.point = tuple(lay.data_to_world(centre))


def run_demo() -> None:
    """Open the interactive demo and run napari's event loop until the window is closed."""
    import napari

    open_demo_viewer(show=True)
    napari.run()


def run_headless(out: Path) -> list[Path]:
    """Run the demo without user interaction and write its outputs to ``out``.

    Writes ``screenshot_{axial,coronal,sagittal}.png`` (canvas), ``screenshot_window.png`` (the
    whole window with the docked plugin), ``labels.nii.gz`` (through the plugin's writer) and
    ``case.json`` (the case summary). Returns the written paths.
    """
    from ..core.info import case_summary

    out.mkdir(parents=True, exist_ok=True)
    viewer, widget = open_demo_viewer(show=True)
    written: list[Path] = []
    try:
        viewer.window.resize(1400, 900)
        for plane in PLANES:
            set_plane(viewer, plane)
            path = out / f"screenshot_{plane}.png"
            viewer.screenshot(str(path), canvas_only=True, flash=False)
            written.append(path)
        set_plane(viewer, "axial")
        path = out / "screenshot_window.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        written.append(path)
        labels = next(lay for lay in viewer.layers if lay.__class__.__name__ == "Labels")
        written += [Path(p) for p in labels.save(str(out / "labels.nii.gz"), plugin=PLUGIN)]
        path = out / "case.json"
        path.write_text(json.dumps(case_summary(widget.case), indent=2))
        written.append(path)
    finally:
        viewer.close()
    return written
