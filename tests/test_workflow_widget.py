"""The MRI workflow dock through napari: one workspace, panels in the order of the work, shortcuts,
and the whole loop from 'Load case' to 'Export' driven through the panels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mriseg._napari._segment_widget import DEMO_MODEL
from napari_mriseg._napari._workflow import SHORTCUTS, WorkflowWidget

from .conftest import keep_screenshot

pytestmark = [pytest.mark.gui,
              pytest.mark.skipif(not DEMO_MODEL.exists(), reason="the demo model is made by scripts/train_demo_model.py")]
PLUGIN = "napari-mriseg"


def _wait(qtbot, predicate, timeout=90000):
    qtbot.waitUntil(predicate, timeout=timeout)


def test_every_panel_is_in_the_plugins_menu_and_the_dock_is_in_work_order(make_napari_viewer):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    widgets = [w.display_name for w in pm.get_manifest(PLUGIN).contributions.widgets]
    assert widgets == ["MRI workflow", "Load case", "Co-register", "Window/level", "Linked views", "Segment",
                       "Correct", "Export"]
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "MRI workflow")
    assert [dock.tabs.tabText(i) for i in range(dock.tabs.count())] == list(WorkflowWidget.PANELS)
    ws = dock.workspace
    assert all(getattr(p, "workspace", ws) is ws for p in dock.panels.values())
    # a panel opened on its own joins the same workspace
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    assert seg.workspace is ws


def test_load_register_segment_correct_export_through_the_panels(make_napari_viewer, qtbot, tmp_path):
    from napari_mriseg.core.dataset import read_dataset
    from napari_mriseg.core.io import read_volume
    from napari_mriseg.core.phantom import make_phantom_case, write_phantom_case

    pc = make_phantom_case(9201, spacing_mm=2.0, misalign=True)
    folder = write_phantom_case(pc, tmp_path / "case9201")
    (folder / "labels.nii.gz").unlink()  # a new case: no labels yet
    viewer = make_napari_viewer(show=True)
    dock = WorkflowWidget(viewer)
    viewer.window.add_dock_widget(dock, name="MRI workflow")
    ws = dock.workspace

    # Load
    load = dock.show_panel("Load")
    load.scan(str(folder))
    load.load()
    _wait(qtbot, lambda: ws.case is not None)
    assert set(ws.case.misregistered()) == {"t1c", "t2", "flair"}
    assert dock.tabs.tabText(dock.tabs.currentIndex()) == "Register"  # the next step comes forward
    seg = dock.panels["Segment"]
    assert not seg.volume_btn.isEnabled() and seg.register_btn.isVisibleTo(seg)

    # Register
    reg = dock.panels["Register"]
    assert reg.register() is not None
    _wait(qtbot, lambda: ws.registration is not None and not reg.running)
    assert not ws.case.misregistered()

    # Segment
    dock.show_panel("Segment")
    assert seg.volume_btn.isEnabled(), seg.check_label.text()
    seg.run()
    _wait(qtbot, lambda: seg._worker is None and ws.prediction is not None)
    labels = viewer.layers["labels"]
    assert (labels.data > 0).sum() > 500

    # Correct: clean up, a hand edit, review a slice; each one undo step
    correct = dock.show_panel("Correct")
    before = labels.data.copy()
    correct.set_label(2)
    correct.fill_holes()
    _wait(qtbot, lambda: not correct.busy)
    tumour = np.argwhere(labels.data > 0)
    z = int(np.median(tumour[:, 0]))
    viewer.dims.set_current_step(0, z)
    ws.edit_labels(tuple(tumour[tumour[:, 0] == z][:20].T), 0)  # the clinician erases a little
    assert ws.touched.sum() == 20 and ws.dirty
    dock.mark_slice_reviewed()  # the 'K' shortcut's action
    assert ws.reviewed[z].all() and ws.reviewed.sum() == ws.reviewed[z].size
    assert dock.step_label(+1) == 3 and dock.step_label(+1) == 1 and dock.step_label(-1) == 3
    assert dock.toggle_prediction() is True and dock.toggle_prediction() is False
    assert not np.array_equal(labels.data, before)

    # Export
    export = dock.show_panel("Export")
    dataset = tmp_path / "Dataset007_Panels"
    export.dataset_edit.setText(str(dataset))
    export.ignore_check.setChecked(True)
    assert export.export() is not None
    _wait(qtbot, lambda: getattr(export, "last_result", None) is not None)
    info = read_dataset(dataset)
    assert len(info.cases) == 1 and info.channel_names == ("t1", "t1c", "t2", "flair")
    written = read_volume(export.last_result.labels).array
    from napari_mriseg._napari.layers import layer_to_volume

    expect = layer_to_volume(labels).array
    ignore = info.ignore_value
    reviewed_ref = written != ignore
    assert reviewed_ref.sum() == ws.reviewed.sum()  # only the reviewed slice is labelled; the rest is 'ignore'
    assert np.count_nonzero(written[reviewed_ref] != expect[reviewed_ref]) == 0
    _wait(qtbot, lambda: not ws.dirty)
    shot = tmp_path / "workflow_export.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)


def test_shortcuts_are_bound_on_keys_napari_leaves_free(make_napari_viewer):
    from napari.utils.shortcuts import default_shortcuts

    taken = {str(k) for keys in default_shortcuts.values() for k in keys}
    assert not set(SHORTCUTS) & taken
    viewer = make_napari_viewer()
    WorkflowWidget(viewer)
    assert set(SHORTCUTS) <= {str(k) for k in viewer.keymap}
