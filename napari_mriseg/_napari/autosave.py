"""Never lose work: autosave the corrections of a case, offer them back after a crash, guard the close.

An `Autosaver` is bound to one `Workspace`:

* every edit of the labels (``workspace.labels_edited``, the labels layer's ``data``/``set_data``
  events, e.g. an undo) and every change of the reviewed mask (`Autosaver.notify_changed`, or
  found by a 1 s check) schedules a save; the recovery file is written at most ``interval_s``
  seconds (default 30) after the first unsaved change, hence at most that long after the last one.
  On the GUI thread only the arrays are copied (a few ms); compression and the atomic write run
  in a worker thread, so painting never waits for the disk. Writes never overtake one another.
* when a case is loaded (``workspace.case_changed``) and a recovery file of that case exists, it
  offers to restore it (``ask_restore``, a `QMessageBox` unless replaced, e.g. in tests); the
  labels come back as ONE undo step of the labels layer, the touched and reviewed masks with them.
  A recovery file that does not fit the reopened case (its files or its grid changed) is never
  restored and never overwritten: it is moved aside and the user is told where it is.
* when the work is saved or exported (`mark_saved`, `mark_saved_in`, or ``workspace.dirty``
  turning False) the recovery file is removed.
* closing napari's window with unsaved corrections asks first (``ask_close``: save a recovery file
  and close, or cancel).

The core of the file format is `napari_mriseg.core.recovery` (no Qt).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QLabel, QMessageBox, QWidget

from ..core.convert import grid_from_layer_transform
from ..core.recovery import (
    Recovery,
    RecoveryError,
    SourceStat,
    case_key,
    make_recovery,
    read_recovery,
    recovery_dir,
    recovery_path,
    source_stats,
    write_recovery,
)
from .layers import KEY
from .workspace import Workspace

log = logging.getLogger(__name__)

__all__ = ["Autosaver", "autosaver_of", "mark_saved_in"]

#: Default longest time (s) between a change and its autosave.
DEFAULT_INTERVAL_S = 30.0
#: How often (s) the workspace's ``dirty`` flag and reviewed mask are checked for changes that
#: come without a signal.
POLL_S = 1.0


@dataclass
class _CaseContext:
    """What the autosaver knows of the case being worked on (all on the GUI thread)."""

    key: str
    case_id: str
    sources: tuple[SourceStat, ...]
    path: Path
    layer: Any = None
    touched: np.ndarray | None = None
    reviewed: np.ndarray | None = None


def _digest(rec: Recovery) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (rec.labels, rec.touched, rec.reviewed):
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _layer_grid(layer: Any):
    """The grid of a labels layer's data (its display grid: mm, LPS, array order)."""
    return grid_from_layer_transform(np.shape(layer.data), layer.scale, layer.translate,
                                     layer.affine.affine_matrix)


def _napari_qt_window(viewer: Any) -> tuple[QWidget | None, QWidget | None]:
    """napari's Qt main window of ``viewer`` and its canvas widget, or ``(None, None)``.

    napari has no public hook to veto closing its window; the private access lives in
    `_napari_adapter` (one place for every napari internal). If a napari release renames it, the
    close guard is not installed (autosave and restore still work) and a warning is logged.
    """
    from . import _napari_adapter as adapter

    viewer = adapter.unwrap_viewer(viewer)
    window = getattr(viewer, "window", None)
    main = adapter.main_window(viewer)
    try:
        canvas = adapter.main_qt_viewer(viewer) if main is not None else None
    except AttributeError:
        canvas = None
    if window is not None and main is None:
        log.warning("napari's window has no _qt_window: closing with unsaved corrections will not ask")
    return main, canvas


class Autosaver(QObject):
    """Autosave, restore offer and close guard for one `Workspace` (see the module docstring).

    Parameters
    ----------
    workspace : Workspace
        The case state to protect; the autosaver becomes its child (`autosaver_of` finds it).
    interval_s : float
        Longest delay, in seconds, between a change and the recovery file holding it.
    folder : path, optional
        Recovery folder (default `napari_mriseg.core.recovery.recovery_dir`).
    guard_close : bool
        Ask before napari's window closes with unsaved corrections.
    parent : QObject, optional
        Qt parent; default (and for `autosaver_of` to find it) the workspace.

    Attributes
    ----------
    ask_restore : callable ``(Recovery) -> bool | None``
        Asked when a recovery file of the opened case exists: True restores it, False deletes it,
        None keeps it aside (renamed, so that autosave does not overwrite it).
    ask_close : callable ``() -> bool``
        Asked when the window closes with unsaved work: True saves a recovery file and closes,
        False cancels the close.

    Signals
    -------
    saved(object)
        A recovery file was written (its Path).
    failed(str)
        An autosave failed (the message); the previous recovery file is unchanged.
    restored(object)
        A recovery was put back into the viewer (the `Recovery`).
    discarded(object)
        A recovery file was removed (its Path): work saved, or the user declined it.
    status_changed(str)
        A one-line status for a label (`status_label`).
    """

    saved = Signal(object)
    failed = Signal(str)
    restored = Signal(object)
    discarded = Signal(object)
    status_changed = Signal(str)

    def __init__(self, workspace: Workspace, *, interval_s: float = DEFAULT_INTERVAL_S,
                 folder: str | Path | None = None, guard_close: bool = True,
                 parent: QObject | None = None) -> None:
        super().__init__(parent if parent is not None else workspace)
        self.workspace = workspace
        self.interval_s = float(interval_s)
        self.folder = recovery_dir(folder)
        self.ask_restore: Callable[[Recovery], bool | None] = self._ask_restore_dialog
        self.ask_close: Callable[[], bool] = self._ask_close_dialog
        self.status = "autosave on"
        self.last_saved: Path | None = None
        self._saved_at = ""
        self._label: QLabel | None = None
        self._ctx: _CaseContext | None = None
        self._offered: set[str] = set()
        self._pending = False        # changes not yet captured in a snapshot
        self._review_unsaved = False  # reviewed changes not yet exported/saved
        self._was_dirty = False
        self._reviewed_fp: tuple[int, int] | None = None
        self._worker: Any = None
        self._again = False
        self._failing = False
        # written state per recovery file, shared with the writer thread under the lock
        self._lock = threading.Lock()
        self._seq = 0
        self._written_seq: dict[Path, int] = {}
        self._floor_seq: dict[Path, int] = {}
        self._written_digest: dict[Path, str] = {}

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timer)
        self._poll = QTimer(self)
        self._poll.setInterval(int(POLL_S * 1000))
        self._poll.timeout.connect(self._check_workspace)
        self._poll.start()
        self._to_offer: _CaseContext | None = None
        self._offer_timer = QTimer(self)
        self._offer_timer.setSingleShot(True)
        self._offer_timer.timeout.connect(self._offer_pending)

        workspace.labels_edited.connect(self.notify_changed)
        workspace.case_changed.connect(self._on_case_changed)
        reviewed_changed = getattr(workspace, "reviewed_changed", None)
        if reviewed_changed is not None:  # a future Workspace signal
            reviewed_changed.connect(self.notify_changed)
        # weak: the autosaver must not keep a closed viewer's widgets alive
        self._main_window_ref: Callable[[], QWidget | None] = lambda: None
        self._canvas_ref: Callable[[], QWidget | None] = lambda: None
        if guard_close:
            main, canvas = _napari_qt_window(workspace.viewer)
            if main is not None:
                self._main_window_ref = weakref.ref(main)
                if canvas is not None:
                    self._canvas_ref = weakref.ref(canvas)
                main.installEventFilter(self)
                main.destroyed.connect(self.shutdown)
        if workspace.case is not None:
            self._on_case_changed(workspace.case)

    # ------------------------------------------------------------------ status
    def _set_status(self, text: str) -> None:
        self.status = text
        self.status_changed.emit(text)

    @property
    def status_label(self) -> QLabel:
        """A label that shows the autosave status ("autosaved 12:03:04"), made on first use;
        add it to a panel's layout (which becomes its parent)."""
        if self._label is None:
            label = QLabel(self.status)
            label.setObjectName("mriseg_autosave_status")
            label.setToolTip(f"recovery files: {self.folder}")
            self.status_changed.connect(label.setText)
            label.destroyed.connect(self._forget_label)
            self._label = label
        return self._label

    def _forget_label(self, *_: Any) -> None:
        self._label = None

    @property
    def recovery_file(self) -> Path | None:
        """Where the current case's recovery file is written (None without a case)."""
        return self._ctx.path if self._ctx is not None else None

    @property
    def has_unsaved_work(self) -> bool:
        """True when corrections or reviewed marks were not saved or exported yet."""
        return self._ctx is not None and (bool(self.workspace.dirty) or self._review_unsaved)

    @property
    def is_writing(self) -> bool:
        """True while a recovery file is being written in the worker thread."""
        return self._worker is not None

    # ------------------------------------------------------------------ changes
    def notify_changed(self) -> None:
        """Something of the case changed (labels, reviewed mask): save it within ``interval_s``."""
        self._schedule(announce=True)

    def _schedule(self, *, announce: bool) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        self._watch(ctx)  # the labels layer may have been replaced (e.g. by a new prediction)
        self._capture_masks(ctx)
        self._pending = True
        if self.workspace.dirty:
            self._was_dirty = True  # so that dirty turning False is seen as a save
        if not self._timer.isActive():
            self._timer.start(max(0, int(self.interval_s * 1000)))
            if announce and not self._failing:
                self._set_status("changes not autosaved yet")

    def _capture_masks(self, ctx: _CaseContext) -> None:
        ws = self.workspace
        if ws.touched is not None:
            ctx.touched = ws.touched
        if ws.reviewed is not None:
            ctx.reviewed = ws.reviewed

    def _on_layer_data(self, event: Any = None) -> None:
        # layer.data replaced, or refreshed (an undo/redo, but also a slice change): only worth
        # a save when there is unsaved work; identical snapshots are not rewritten
        if self.workspace.dirty:
            self._schedule(announce=False)

    def _check_workspace(self) -> None:
        """Every `POLL_S`: notice a save/export (``dirty`` became False) and reviewed changes."""
        ctx, ws = self._ctx, self.workspace
        if ctx is None:
            return
        if self._was_dirty and not ws.dirty:
            self.mark_saved()
        self._was_dirty = bool(ws.dirty)
        rev = ws.reviewed
        fp = None if rev is None else (id(rev), int(np.count_nonzero(rev)))
        old, self._reviewed_fp = self._reviewed_fp, fp
        # the same mask with another count, or a new mask that holds marks (a freshly
        # allocated empty mask is no change)
        if fp is not None and fp != old and ((old is not None and old[0] == fp[0]) or fp[1] > 0):
            self._review_unsaved = True
            self.notify_changed()

    # ------------------------------------------------------------------ writing
    def _snapshot(self, ctx: _CaseContext) -> Recovery:
        """Copies of the labels and masks of ``ctx`` (GUI thread; cheap: memory copies only)."""
        layer = ctx.layer
        if layer is None:
            raise RecoveryError("there is no labels layer to autosave")
        if ctx is self._ctx:
            self._capture_masks(ctx)
        labels = np.asarray(layer.data)
        shape = labels.shape

        def fit(mask: np.ndarray | None) -> np.ndarray | None:
            return mask if mask is not None and mask.shape == shape else None

        info = layer.metadata.get(KEY) or {}
        extra = {"layer": layer.name, "display": info.get("display"), "source_grid": info.get("grid")}
        return make_recovery(labels, _layer_grid(layer), touched=fit(ctx.touched), reviewed=fit(ctx.reviewed),
                             case_id=ctx.case_id, sources=ctx.sources, extra=extra)

    def _write(self, rec: Recovery, path: Path, seq: int) -> Path | None:
        """Write ``rec`` unless a newer write or a discard came first (any thread)."""
        digest = _digest(rec)
        with self._lock:
            if seq <= max(self._written_seq.get(path, -1), self._floor_seq.get(path, -1)):
                return None  # stale: a newer snapshot was written, or the work was saved meanwhile
            if self._written_digest.get(path) == digest and path.is_file():
                self._written_seq[path] = seq
                return None  # nothing changed since the last write
            write_recovery(rec, path)
            self._written_seq[path] = seq
            self._written_digest[path] = digest
        return path

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _on_timer(self) -> None:
        ctx = self._ctx
        if ctx is None or not self._pending:
            return
        if self._worker is not None:  # one write at a time; go again as soon as it is done
            self._again = True
            return
        try:
            rec = self._snapshot(ctx)
        except Exception as exc:  # a missing layer: nothing to save
            self._write_failed(exc)
            return
        self._pending = False
        seq = self._next_seq()
        worker = create_worker(self._write, rec, ctx.path, seq, _ignore_errors=True)
        worker.returned.connect(self._written)
        worker.errored.connect(self._write_failed)
        worker.finished.connect(self._write_done)
        self._worker = worker
        worker.start()

    def _written(self, path: Path | None) -> None:
        """A write finished: ``path`` if it wrote, None if the file was already up to date."""
        self._failing = False
        if path is not None and path.is_file():  # (not if the work was saved meanwhile)
            self.last_saved = path
            self._saved_at = time.strftime("%H:%M:%S")
            self.saved.emit(path)
        ctx = self._ctx
        if ctx is not None and not self._pending and self._saved_at and ctx.path.is_file():
            self._set_status(f"autosaved {self._saved_at}")

    def _write_failed(self, exc: BaseException) -> None:
        self._pending = True  # still to be saved
        msg = f"autosave failed: {exc}"
        log.error("%s", msg)
        self._set_status(msg)
        if not self._failing:  # tell once per run of failures, not every interval
            show_error(f"{msg}. Your corrections are still in the viewer; export them or free disk space.")
        self._failing = True
        self.failed.emit(str(exc))
        if not self._timer.isActive() and self._ctx is not None:
            self._timer.start(max(0, int(self.interval_s * 1000)))

    def _write_done(self) -> None:
        self._worker = None
        if self._again:
            self._again = False
            self._on_timer()

    def save_now(self) -> Path | None:
        """Write the recovery file now, on this thread (waits for a write in flight); its path.

        Raises the write's error (`napari_mriseg.core.io.ImageWriteError`...) on failure.
        """
        ctx = self._ctx
        if ctx is None or ctx.layer is None:
            return None
        self._timer.stop()
        rec = self._snapshot(ctx)
        self._pending = False
        self._write(rec, ctx.path, self._next_seq())
        self._written(ctx.path)  # written now, or already up to date
        return ctx.path

    # ------------------------------------------------------------------ saved / discarded
    def mark_saved(self) -> None:
        """The case's work was saved or exported: drop its recovery file and pending saves.

        Call it after a successful export or save (or let ``workspace.dirty`` become False: it
        is noticed within `POLL_S`). Waits for a write in flight, so it cannot reappear after.
        """
        ctx = self._ctx
        self._timer.stop()
        self._pending = False
        self._review_unsaved = False
        self._was_dirty = False
        if ctx is None:
            return
        with self._lock:
            self._floor_seq[ctx.path] = self._seq
            self._written_digest.pop(ctx.path, None)
            try:
                ctx.path.unlink()
                removed = True
            except FileNotFoundError:
                removed = False
        self._set_status(f"saved {time.strftime('%H:%M:%S')}; no recovery needed")
        if removed:
            log.info("recovery file %s removed (work saved)", ctx.path)
            self.discarded.emit(ctx.path)

    # ------------------------------------------------------------------ case changes and restore
    def _watch(self, ctx: _CaseContext) -> None:
        layer = self.workspace.watch_labels()
        if layer is ctx.layer or layer is None:  # unchanged, or deleted: keep saving what we had
            return
        owner = (layer.metadata.get(KEY) or {}).get("case_id")
        if owner is not None and owner != ctx.case_id:
            # the viewer's labels layer belongs to another case (an earlier one still open):
            # never save its voxels as this case's work
            log.warning("labels layer %r belongs to case %r, not %r: not autosaved", layer.name, owner,
                        ctx.case_id)
            return
        if ctx.layer is not None:
            for ev in (ctx.layer.events.data, ctx.layer.events.set_data):
                ev.disconnect(self._on_layer_data)
        ctx.layer = layer
        if layer is not None:
            layer.events.data.connect(self._on_layer_data)
            layer.events.set_data.connect(self._on_layer_data)
            self._capture_masks(ctx)

    def _on_case_changed(self, case: Any) -> None:
        ws = self.workspace
        old = self._ctx
        if case is None:
            self._leave(old)
            self._ctx = None
            return
        stats = source_stats(ws.sources)
        key = case_key(case.case_id, stats)
        if old is not None and old.key == key:  # the same case, e.g. co-registered: keep going
            self._was_dirty = bool(ws.dirty)  # a reload resets dirty: that is no save
            self._watch(old)
            return
        self._leave(old)
        ctx = _CaseContext(key, case.case_id, stats, recovery_path(case.case_id, stats, folder=self.folder))
        self._ctx = ctx
        self._was_dirty = bool(ws.dirty)
        self._reviewed_fp = None
        self._review_unsaved = False
        self._watch(ctx)
        self._set_status("autosave on")
        if key not in self._offered and ctx.path.is_file():
            self._offered.add(key)
            # after the loading panel has finished showing the case, not inside its signal
            self._to_offer = ctx
            self._offer_timer.start(0)

    def _leave(self, old: _CaseContext | None) -> None:
        """Before switching case: write what the old case had not saved yet (synchronously)."""
        self._timer.stop()
        if old is None:
            return
        if self._pending and old.layer is not None:
            try:
                self._write(self._snapshot(old), old.path, self._next_seq())
            except Exception as exc:  # a deleted layer, a full disk: say so, keep going
                log.error("could not autosave case %s before switching: %s", old.case_id, exc)
                show_error(f"could not autosave case {old.case_id} before switching: {exc}")
        self._pending = False
        if old.layer is not None:
            for ev in (old.layer.events.data, old.layer.events.set_data):
                ev.disconnect(self._on_layer_data)

    def _set_aside(self, path: Path, why: str) -> Path:
        """Rename a recovery file that cannot be restored so that autosave never overwrites it."""
        aside = path.with_name(f"{path.name[:-4]}.{why}-{time.strftime('%Y%m%d-%H%M%S')}.npz")
        try:
            path.replace(aside)
        except OSError as exc:
            log.error("could not move %s aside: %s", path, exc)
            return path
        return aside

    def _offer_pending(self) -> None:
        ctx, self._to_offer = self._to_offer, None
        if ctx is not None:
            self._offer(ctx)

    def _offer(self, ctx: _CaseContext) -> None:
        if self._ctx is not ctx or not ctx.path.is_file():
            return
        try:
            rec = read_recovery(ctx.path)
            self._watch(ctx)
            grid = _layer_grid(ctx.layer) if ctx.layer is not None else None
            rec.check_matches(case_id=ctx.case_id, sources=ctx.sources, grid=grid, path=ctx.path)
        except RecoveryError as exc:
            aside = self._set_aside(ctx.path, "damaged" if type(exc) is RecoveryError else "mismatch")
            msg = f"a recovery file of case {ctx.case_id} could not be restored ({exc.message}); kept as {aside}"
            log.warning("%s", msg)
            self._set_status("recovery file not restored (see notifications)")
            show_warning(msg)
            return
        answer = self.ask_restore(rec)
        if answer is None:  # not now: keep it where autosave will not overwrite it
            aside = self._set_aside(ctx.path, "kept")
            self._set_status("recovery file kept for later")
            show_info(f"The autosaved corrections of case {ctx.case_id} were kept as {aside}")
        elif answer:
            self.restore(rec)
        else:
            with self._lock:
                self._floor_seq[ctx.path] = self._seq
                ctx.path.unlink(missing_ok=True)
            self._set_status("recovery file discarded")
            self.discarded.emit(ctx.path)

    def restore(self, rec: Recovery) -> None:
        """Put a recovery back: labels as ONE undo step of the labels layer, masks in the workspace.

        Raises `napari_mriseg.core.recovery.RecoveryMismatchError` if the labels layer's grid differs.
        """
        ws, ctx = self.workspace, self._ctx
        layer = ws.labels_layer(create=True)
        if ctx is not None:
            self._watch(ctx)
        rec.check_matches(case_id=ws.case_id, sources=ctx.sources if ctx else (), grid=_layer_grid(layer),
                          check_files=False)
        data = layer.data
        info = np.iinfo(data.dtype) if np.dtype(data.dtype).kind in "iu" else None
        if info is not None and info.min <= int(rec.labels.min(initial=0)) and int(rec.labels.max(initial=0)) <= info.max:
            changed = np.nonzero(np.asarray(data) != rec.labels)
            if changed[0].size:
                ws.edit_labels(changed, rec.labels[changed])
        else:  # wider labels than the layer holds: replace the data (not undoable)
            layer.data = rec.labels.copy()
        ws.ensure_masks()
        assert ws.touched is not None and ws.reviewed is not None
        ws.touched[...] = rec.touched
        ws.reviewed[...] = rec.reviewed
        ws.dirty = True
        self._was_dirty = True
        self._review_unsaved = bool(rec.reviewed.any())
        self._reviewed_fp = (id(ws.reviewed), int(np.count_nonzero(ws.reviewed)))
        if ctx is not None:
            self._capture_masks(ctx)
        ws.labels_edited.emit()
        self._set_status(f"restored the work autosaved {rec.saved_at_text}")
        show_info(f"Restored the corrections of case {rec.case_id} autosaved {rec.saved_at_text} "
                  "(Ctrl+Z on the labels layer undoes it)")
        self.restored.emit(rec)

    def restore_box(self, rec: Recovery) -> QMessageBox:
        """The question `ask_restore` asks by default ("Restore", "Discard", "Keep for later"); not shown."""
        box = QMessageBox(self._main_window_ref())
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Restore unsaved corrections?")
        box.setText(f"Case {rec.case_id} has corrections that were autosaved on {rec.saved_at_text} "
                    "but never exported (napari was closed or crashed).")
        box.setInformativeText(f"{int(np.count_nonzero(rec.touched))} edited voxels, "
                               f"{int(np.count_nonzero(rec.reviewed))} reviewed voxels. Restore them?\n"
                               "Discard deletes the recovery file; Keep for later sets it aside.")
        restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        later = box.addButton("Keep for later", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(restore)
        box.setEscapeButton(later)
        return box

    def _ask_restore_dialog(self, rec: Recovery) -> bool | None:
        box = self.restore_box(rec)
        box.exec_()
        clicked = box.clickedButton()
        text = clicked.text() if clicked is not None else ""
        return True if text == "Restore" else False if text == "Discard" else None

    # ------------------------------------------------------------------ close guard
    def close_box(self) -> QMessageBox:
        """The question `ask_close` asks by default ("Save recovery and close", "Cancel"); not shown."""
        box = QMessageBox(self._main_window_ref())
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Unsaved corrections")
        box.setText(f"The corrections of case {self.workspace.case_id} are not exported yet.")
        box.setInformativeText("Save them to a recovery file (offered again when you reopen the case) "
                               "and close?")
        box.addButton("Save recovery and close", QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.setEscapeButton(cancel)
        return box

    def _ask_close_dialog(self) -> bool:
        box = self.close_box()
        box.exec_()
        clicked = box.clickedButton()
        return clicked is not None and clicked.text() == "Save recovery and close"

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """Intercept the close of napari's main window (see `_on_close`)."""
        if event.type() == QEvent.Type.Close and obj is self._main_window_ref():
            return self._on_close(event)
        return False

    def _on_close(self, event: QEvent) -> bool:
        """True (and the close ignored) when the user cancels; False lets the window close."""
        if not self.has_unsaved_work:
            return False
        # ``viewer.close()`` closes (hides) the canvas before the window: a script or a test
        # tearing down; nobody can be asked and nothing can be cancelled. Keep the work and go.
        canvas = self._canvas_ref()
        tearing_down = canvas is not None and canvas.isHidden()
        if not tearing_down and not self.ask_close():
            event.ignore()
            return True
        try:
            self.save_now()
        except Exception as exc:
            log.error("could not save the recovery file on close: %s", exc)
            show_error(f"could not save the recovery file ({exc}); the window stays open: export "
                       "your corrections or free disk space first")
            if not tearing_down:
                event.ignore()
                return True
        return False

    def shutdown(self, *_: Any) -> None:
        """Stop the timers and the close guard (done when napari's window is destroyed)."""
        self._timer.stop()
        self._poll.stop()
        main = self._main_window_ref()
        self._main_window_ref = self._canvas_ref = lambda: None
        if main is not None:
            try:
                main.removeEventFilter(self)
            except RuntimeError:  # the window is being destroyed
                pass


def autosaver_of(workspace: Workspace) -> Autosaver | None:
    """The `Autosaver` bound to ``workspace``, if one was made."""
    for child in workspace.children():
        if isinstance(child, Autosaver):
            return child
    return None


def mark_saved_in(workspace: Workspace) -> None:
    """Tell a workspace (and its autosaver) that its work was exported or saved.

    Sets ``workspace.dirty = False`` and removes the case's recovery file. Export and save panels
    call this after a successful write.
    """
    workspace.dirty = False
    saver = autosaver_of(workspace)
    if saver is not None:
        saver.mark_saved()
