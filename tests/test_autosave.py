"""Never lose work: autosave within the interval, painting never blocked, restore after a SIGKILL,
a close guard that asks only when there is unsaved work."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_mriseg.core import recovery as rc

from .conftest import keep_screenshot

pytestmark = pytest.mark.gui

SHOTS = Path("/tmp/shots/autosave")


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory) -> Path:
    """A copy of the shipped phantom case (`make_phantom_case(42, spacing_mm=2.0)`, 109x123x101)."""
    from napari_mriseg._napari._sample_data import SAMPLE_CASE

    folder = tmp_path_factory.mktemp("cases") / "phantom_case"
    shutil.copytree(SAMPLE_CASE, folder)
    return folder


def _open_case(viewer, workspace, folder: Path):
    """What the Load panel does: layers first, then the workspace's case (with its sources)."""
    from napari_mriseg._napari.layers import case_layer_data
    from napari_mriseg.core.case import load_entries, scan_case

    entries = scan_case(folder)
    case = load_entries(entries)
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    workspace.set_case(case, sources=[e.path for e in entries])
    return workspace.watch_labels()


def _never_asked(*args):
    raise AssertionError("no question expected here")


def _box(shape, label_slices=(slice(10, 20), slice(20, 35), slice(15, 30))):
    z, y, x = np.mgrid[label_slices]
    return (z.ravel(), y.ravel(), x.ravel())


def test_edits_are_saved_within_the_interval_and_not_before(make_napari_viewer, qtbot, tmp_path, case_folder):
    from napari_mriseg._napari.autosave import Autosaver, autosaver_of, mark_saved_in
    from napari_mriseg._napari.workspace import Workspace

    viewer = make_napari_viewer()
    ws = Workspace(viewer)
    saver = Autosaver(ws, interval_s=0.4, folder=tmp_path / "rec")
    saver.ask_restore = _never_asked
    assert autosaver_of(ws) is saver
    layer = _open_case(viewer, ws, case_folder)
    path = saver.recovery_file
    assert path.parent == tmp_path / "rec" and not path.exists()
    saves: list[float] = []
    saver.saved.connect(lambda p: saves.append(time.monotonic()))

    t0 = time.monotonic()
    assert ws.edit_labels(_box(layer.data.shape), 2) > 0
    qtbot.wait(200)  # half the interval: nothing written yet
    assert not path.exists() and saves == []
    assert saver.status == "changes not autosaved yet"
    qtbot.waitUntil(lambda: bool(saves), timeout=10000)
    latency = saves[0] - t0
    assert 0.38 <= latency < 3.0, latency
    rec = rc.read_recovery(path)
    assert np.array_equal(rec.labels, layer.data) and np.array_equal(rec.touched, ws.touched)
    assert int(rec.touched.sum()) == 10 * 15 * 15 and rec.case_id == case_folder.name
    assert saver.status.startswith("autosaved ")

    # a brush stroke (napari's own paint) and a reviewed slice (no signal: found by the 1 s check)
    layer.brush_size = 5
    layer.paint((30, 30, 25), 3)
    ws.reviewed[12] = True
    qtbot.waitUntil(lambda: len(saves) >= 2 and rc.read_recovery(path).reviewed[12].all(), timeout=10000)
    rec = rc.read_recovery(path)
    assert rec.labels[30, 30, 25] == 3 and np.array_equal(rec.labels, layer.data)
    assert np.array_equal(rec.reviewed, ws.reviewed) and int(rec.reviewed.sum()) == np.prod(layer.data.shape[1:])

    # an export says "saved": the recovery file goes; so does a workspace whose dirty flag is reset
    mark_saved_in(ws)
    assert not path.exists() and ws.dirty is False and saver.status.startswith("saved")
    ws.edit_labels(_box(layer.data.shape, (slice(1, 3),) * 3), 1)
    qtbot.waitUntil(path.exists, timeout=10000)
    ws.dirty = False  # e.g. an exporter that does not know the autosaver
    qtbot.waitUntil(lambda: not path.exists(), timeout=5000)


def test_painting_is_not_blocked_while_a_save_runs(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A 155x240x240 case (a BraTS volume): the GUI thread only copies, the worker compresses."""
    from napari_mriseg._napari.autosave import Autosaver
    from napari_mriseg._napari.layers import case_layer_data
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.case import Case
    from napari_mriseg.core.volume import Volume

    real_savez = rc._savez

    def slow_disk(fh, arrays):
        time.sleep(0.6)
        real_savez(fh, arrays)

    monkeypatch.setattr(rc, "_savez", slow_disk)
    viewer = make_napari_viewer()
    ws = Workspace(viewer)
    saver = Autosaver(ws, interval_s=0.05, folder=tmp_path / "rec")
    saver.ask_restore = _never_asked
    shape = (155, 240, 240)
    image = Volume(np.zeros(shape, np.int16), spacing=(1.0, 1.0, 1.0))
    labels = np.zeros(shape, np.uint8)
    labels[40:100, 60:180, 50:200] = 1
    labels = Volume(labels, kind="label")
    case = Case({"t1": image}, labels=labels, case_id="big")
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    ws.set_case(case)  # an in-memory case: keyed by its id
    layer = ws.watch_labels()
    writes: list[object] = []
    saver.saved.connect(writes.append)

    ws.edit_labels(_box(shape), 2)
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: saver.is_writing, timeout=5000)
    assert time.perf_counter() - t0 < 1.0  # the snapshot itself is quick
    layer.brush_size = 9
    paint_s = []
    for z in (60, 70, 80):
        t = time.perf_counter()
        layer.paint((z, 120, 120), 3)
        paint_s.append(time.perf_counter() - t)
    assert saver.is_writing and writes == []  # the paints happened while the file was being written
    assert max(paint_s) < 0.25, paint_s
    qtbot.waitUntil(lambda: len(writes) >= 2, timeout=20000)  # the paints are saved after
    rec = rc.read_recovery(saver.recovery_file)
    assert rec.labels[80, 120, 120] == 3 and np.array_equal(rec.labels, layer.data)


EDITOR = textwrap.dedent('''
    """A clinician's session that will be killed: load, correct, wait for the autosave."""
    import sys
    from pathlib import Path

    import numpy as np
    from napari.components import ViewerModel
    from qtpy.QtWidgets import QApplication

    from napari_mriseg._napari.autosave import Autosaver
    from napari_mriseg._napari.layers import case_layer_data
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.case import load_entries, scan_case

    folder, expected = Path(sys.argv[1]), Path(sys.argv[2])
    app = QApplication([])
    viewer = ViewerModel()  # no canvas: napari's layer model, as the widgets see it
    ws = Workspace(viewer)
    saver = Autosaver(ws, interval_s=0.2)  # folder: $MRISEG_RECOVERY_DIR
    entries = scan_case(folder)
    case = load_entries(entries)
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    ws.set_case(case, sources=[e.path for e in entries])
    layer = ws.watch_labels()
    z, y, x = np.mgrid[45:59, 50:72, 40:61]
    ws.edit_labels((z.ravel(), y.ravel(), x.ravel()), 2)
    layer.brush_size = 7
    layer.paint((52, 45, 50), 3)
    ws.reviewed[45:59] = True
    saver.notify_changed()

    def saved(path):
        if not np.array_equal(np.load(path)["reviewed"], ws.reviewed):
            return  # not everything in yet: wait for the next save
        np.savez(expected, labels=layer.data, reviewed=ws.reviewed, touched=ws.touched)
        print("SAVED", path, flush=True)

    saver.saved.connect(saved)
    app.exec_()  # runs until killed
''')


def _read_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").split("\n")[:-1]:  # complete lines only
                if line.startswith(prefix):
                    return line
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the editor never printed {prefix!r}: {buf.decode(errors='replace')[-2000:]}\n"
                         f"{proc.stderr.read().decode(errors='replace')[-3000:]}")


def test_killed_session_is_restored_exactly(make_napari_viewer, qtbot, tmp_path, case_folder):
    from napari_mriseg._napari._load_widget import LoadCaseWidget
    from napari_mriseg._napari.autosave import Autosaver
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.io import read_volume

    recdir, expected = tmp_path / "recovery", tmp_path / "expected.npz"
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", rc.ENV_DIR: str(recdir)}
    proc = subprocess.Popen([sys.executable, str(script), str(case_folder), str(expected)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # meanwhile a fresh napari starts (it opens the case only after the kill)
    viewer = make_napari_viewer(show=True)
    ws = Workspace(viewer)
    saver = Autosaver(ws, interval_s=30, folder=recdir)
    offers: list[rc.Recovery] = []
    saver.ask_restore = lambda rec: offers.append(rec) or True
    loader = LoadCaseWidget(viewer, ws)
    viewer.window.add_dock_widget(loader, name="Load case")
    status = saver.status_label
    assert saver.status_label is status
    viewer.window.add_dock_widget(status, name="autosave", area="bottom")
    try:
        line = _read_line(proc, "SAVED", timeout=90)
        assert proc.poll() is None  # still running: it is killed, it does not exit
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    saved_path = Path(line.split(" ", 1)[1])
    assert saved_path.parent == recdir and [p.name for p in recdir.iterdir()] == [saved_path.name]
    want = np.load(expected)
    original = read_volume(case_folder / "labels.nii.gz", kind="label").array
    assert int(np.count_nonzero(want["labels"] != original)) > 1000  # real corrections to lose
    assert int(want["reviewed"].sum()) == 14 * np.prod(original.shape[1:])

    # the same case is opened through the Load panel of the fresh napari; the restore is offered
    loader.scan(str(case_folder))
    loader.load()
    qtbot.waitUntil(lambda: len(offers) == 1 and saver.status.startswith("restored"), timeout=30000)
    layer = ws.labels_layer()
    assert offers[0].case_id == case_folder.name
    assert np.array_equal(layer.data, want["labels"])  # zero voxel mismatches
    assert np.array_equal(ws.reviewed, want["reviewed"]) and np.array_equal(ws.touched, want["touched"])
    assert ws.dirty and status.text().startswith("restored the work autosaved")
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "restored_after_kill.png"
    viewer.dims.set_point(0, float(layer.data_to_world((52, 0, 0))[0]))
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)
    # the restore is ONE undo step
    layer.undo()
    assert np.array_equal(layer.data, original)
    layer.redo()
    assert np.array_equal(layer.data, want["labels"])
    saver.mark_saved()
    assert not saved_path.exists()


def test_a_recovery_that_does_not_fit_is_set_aside_not_restored(qtbot, tmp_path):
    from napari.components import ViewerModel

    from napari_mriseg._napari.autosave import Autosaver
    from napari_mriseg._napari.layers import case_layer_data
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.case import Case
    from napari_mriseg.core.volume import Grid, Volume

    case = Case({"t1": Volume(np.zeros((6, 8, 9), np.int16), spacing=(2.0, 1.0, 1.0))}, case_id="small")
    stale = rc.make_recovery(np.ones((6, 8, 9), np.uint8), Grid((6, 8, 9), (2.0, 1.0, 1.5)), case_id="small")
    path = rc.write_recovery(stale, folder=tmp_path / "rec")
    viewer = ViewerModel()  # the layer model is all this needs
    ws = Workspace(viewer)
    saver = Autosaver(ws, folder=tmp_path / "rec")
    saver.ask_restore = _never_asked
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    ws.set_case(case)
    qtbot.waitUntil(lambda: "not restored" in saver.status, timeout=5000)
    assert not path.exists() and not ws.labels_layer().data.any()
    aside = list((tmp_path / "rec").glob("*.mismatch-*.npz"))
    assert len(aside) == 1 and np.array_equal(rc.read_recovery(aside[0]).labels, stale.labels)


def test_close_guard_asks_only_with_unsaved_work(make_napari_viewer, qtbot, tmp_path, case_folder):
    from napari_mriseg._napari.autosave import Autosaver, mark_saved_in
    from napari_mriseg._napari.workspace import Workspace

    # dirty: the user cancels, then saves and closes
    viewer = make_napari_viewer(show=True)
    ws = Workspace(viewer)
    saver = Autosaver(ws, interval_s=600, folder=tmp_path / "rec")
    saver.ask_restore = _never_asked
    layer = _open_case(viewer, ws, case_folder)
    ws.edit_labels(_box(layer.data.shape), 1)
    answers, asked = [False, True], []
    saver.ask_close = lambda: asked.append(1) or answers.pop(0)
    main = viewer.window._qt_window  # what the user's click on the window's close button closes
    assert main.close() is False
    assert asked == [1] and main.isVisible()  # cancelled: still open, nothing written
    assert not saver.recovery_file.exists()
    assert main.close() is True
    assert asked == [1, 1] and not main.isVisible()
    assert np.array_equal(rc.read_recovery(saver.recovery_file).labels, layer.data)

    # clean: closes without a question
    viewer2 = make_napari_viewer()
    ws2 = Workspace(viewer2)
    saver2 = Autosaver(ws2, interval_s=600, folder=tmp_path / "rec2")
    saver2.ask_restore = _never_asked
    saver2.ask_close = _never_asked
    layer2 = _open_case(viewer2, ws2, case_folder)
    ws2.edit_labels(_box(layer2.data.shape), 1)
    mark_saved_in(ws2)  # exported
    assert viewer2.window._qt_window.close() is True  # not vetoed

    # a script's viewer.close() cannot be asked: the work goes to the recovery file instead
    viewer3 = make_napari_viewer()
    ws3 = Workspace(viewer3)
    saver3 = Autosaver(ws3, interval_s=600, folder=tmp_path / "rec3")
    saver3.ask_restore = saver3.ask_close = _never_asked
    layer3 = _open_case(viewer3, ws3, case_folder)
    ws3.edit_labels(_box(layer3.data.shape), 3)
    expected = np.array(layer3.data)
    viewer3.close()
    assert np.array_equal(rc.read_recovery(saver3.recovery_file).labels, expected)


def _answer(qtbot, button_text: str) -> None:
    """Click ``button_text`` in the next message box that shows up (as a user would)."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    def click() -> None:
        for w in QApplication.topLevelWidgets():
            if isinstance(w, QMessageBox) and w.isVisible():
                for b in w.buttons():
                    if b.text() == button_text:
                        b.click()
                        return
        QTimer.singleShot(50, click)

    QTimer.singleShot(50, click)


def test_the_questions_as_the_user_sees_them(make_napari_viewer, qtbot, tmp_path):
    from napari_mriseg._napari.autosave import Autosaver
    from napari_mriseg._napari.layers import case_layer_data
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.case import Case
    from napari_mriseg.core.volume import Volume

    case = Case({"t1": Volume(np.zeros((6, 8, 9), np.int16))}, case_id="case_042")
    viewer = make_napari_viewer()
    ws = Workspace(viewer)
    saver = Autosaver(ws, folder=tmp_path / "rec")
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    ws.set_case(case)
    layer = ws.watch_labels()
    ws.edit_labels(_box(layer.data.shape, (slice(1, 4),) * 3), 2)
    ws.reviewed[1] = True
    saver.save_now()
    rec = rc.read_recovery(saver.recovery_file)

    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, box in (("restore_question", saver.restore_box(rec)), ("close_question", saver.close_box())):
        box.show()
        qtbot.waitExposed(box)
        box.grab().save(str(SHOTS / f"{name}.png"))
        keep_screenshot(SHOTS / f"{name}.png")
        box.close()
        box.deleteLater()

    _answer(qtbot, "Keep for later")
    assert saver._ask_restore_dialog(rec) is None
    _answer(qtbot, "Restore")
    assert saver._ask_restore_dialog(rec) is True
    _answer(qtbot, "Cancel")
    assert saver._ask_close_dialog() is False
    _answer(qtbot, "Save recovery and close")
    assert saver._ask_close_dialog() is True

    # "Keep for later" when the case is opened again: set aside, never overwritten by autosave
    from napari.components import ViewerModel

    viewer2 = ViewerModel()
    ws2 = Workspace(viewer2)
    saver2 = Autosaver(ws2, folder=tmp_path / "rec")
    saver2.ask_restore = lambda rec: None
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer2, f"add_{kind}")(data, **kwargs)
    ws2.set_case(case)
    qtbot.waitUntil(lambda: saver2.status == "recovery file kept for later", timeout=5000)
    kept = list((tmp_path / "rec").glob("*.kept-*.npz"))
    assert not saver2.recovery_file.exists() and len(kept) == 1
    assert np.array_equal(rc.read_recovery(kept[0]).labels, rec.labels)


def test_switching_case_writes_the_pending_work_of_the_first(qtbot, tmp_path):
    from napari.components import ViewerModel

    from napari_mriseg._napari.autosave import Autosaver
    from napari_mriseg._napari.layers import case_layer_data
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.case import Case
    from napari_mriseg.core.volume import Volume

    viewer = ViewerModel()
    ws = Workspace(viewer)
    saver = Autosaver(ws, interval_s=600, folder=tmp_path / "rec")
    saver.ask_restore = _never_asked
    first, second = (Case({"t1": Volume(np.zeros((6, 8, 9), np.int16))}, case_id=c) for c in ("a", "b"))
    for data, kwargs, kind in case_layer_data(first):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    ws.set_case(first)
    layer = ws.watch_labels()
    ws.edit_labels(_box(layer.data.shape, (slice(1, 4),) * 3), 2)
    path_a = saver.recovery_file
    assert not path_a.exists()  # 600 s to go
    viewer.layers.clear()
    for data, kwargs, kind in case_layer_data(second):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    ws.set_case(second)  # the pending work of "a" is written before "b" takes over
    assert np.array_equal(rc.read_recovery(path_a).labels, layer.data)
    assert saver.recovery_file != path_a and not saver.recovery_file.exists()
