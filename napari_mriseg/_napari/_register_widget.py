"""'Co-register' dock widget: align the sequences of the case onto the reference grid, check the
alignment by eye (checkerboard or fade), list the transforms, save them, undo.

The registration itself is `napari_mriseg.core.registration.register_case`, run in a worker thread
on the case *as loaded* (native grids). The worker only calls a plain progress callback that
stores the latest figures in a `_Job` and answers False once Cancel was pressed; a timer on the GUI
thread shows them. Layers are touched only when a result arrives: each moving sequence's image
layer is replaced, at the same place in the layer list, by the resampled volume on the reference
grid (same name, colormap, contrast limits, opacity, blending, visibility); the original layer
objects are kept, so 'Undo registration' puts them back voxel for voxel.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.case import Case
from ..core.convert import layer_kwargs
from ..core.registration import (
    TRANSFORMS,
    CaseRegistration,
    RegistrationCancelled,
    register_case,
    write_registration,
)
from ..core.registration_quality import rotation_angle_deg
from ..core.resample import resample_to_grid, to_display_orientation
from ..core.volume import Grid, Volume
from .layers import KEY, LABELS_LAYER, display_window, grid_to_dict, image_layer_data, labels_layer_data
from .workspace import Workspace

log = logging.getLogger(__name__)

#: Name of the layer that shows the checkerboard or the fade.
CHECK_LAYER = "alignment check"
CHECK_MODES = ("checkerboard", "fade")
#: Start of the optimisation: label shown -> `register_case`'s ``initialization``.
STARTS = {"centres of mass": "moments", "rotation search (large motion)": "search", "grid centres": "geometry",
          "scanner alignment": "none"}
#: Rows of the transforms table (one column per registered sequence).
TABLE_ROWS = ("rotation x (°)", "rotation y (°)", "rotation z (°)", "translation x (mm)", "translation y (mm)",
              "translation z (mm)", "final metric", "identity metric", "max corner shift (mm)", "B-spline max (mm)",
              "check")
_LABELS_KEY = "\0labels"  # key of the labels layer among the replaced layers


# --------------------------------------------------------------------------- pure helpers
def euler_angles_deg(matrix: np.ndarray) -> tuple[float, float, float]:
    """Angles (degrees) about the x, y and z axes (LPS: L, P, S) of the rotation nearest to a
    (3, 3) linear map, in ITK's Euler3DTransform convention ``R = Rz @ Rx @ Ry``."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, float))
    r = u @ vt
    ax = float(np.arcsin(np.clip(r[2, 1], -1.0, 1.0)))
    if abs(np.cos(ax)) > 1e-9:
        ay = float(np.arctan2(-r[2, 0], r[2, 2]))
        az = float(np.arctan2(-r[0, 1], r[1, 1]))
    else:  # gimbal lock: put everything into z
        ay, az = 0.0, float(np.arctan2(r[1, 0], r[0, 0]))
    return tuple(float(np.degrees(a)) for a in (ax, ay, az))  # type: ignore[return-value]


def _linear(transform: Any) -> Any:
    """The first linear (matrix) transform inside ``transform`` (itself if it is one)."""
    import SimpleITK as sitk

    if transform.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(transform)
        parts = [comp.GetNthTransform(i).Downcast() for i in range(comp.GetNumberOfTransforms())]
    else:
        parts = [transform.Downcast()]
    return next((p for p in parts if hasattr(p, "GetMatrix")), None)


def transform_figures(registration: CaseRegistration) -> list[dict[str, Any]]:
    """One row of figures per registered sequence, as the table shows them.

    Returns
    -------
    list of dict
        ``name``; ``rotation_deg`` (x, y, z: degrees about the L, P, S axes through the transform's
        centre, Euler3D convention); ``translation_mm`` (x, y, z: LPS mm, ITK's translation of the
        linear part: reference world -> sequence world); ``angle_deg`` (total rotation);
        ``metric_final`` and ``metric_identity`` (Mattes MI, lower is better);
        ``max_corner_shift_mm``; ``bspline_max_mm``; ``plausible``; ``problems``.
    """
    rows = []
    for name, res in registration.results.items():
        lin = _linear(res.transform)
        matrix = np.eye(3) if lin is None else np.asarray(lin.GetMatrix(), float).reshape(3, 3)
        shift = (0.0, 0.0, 0.0) if lin is None else tuple(float(t) for t in lin.GetTranslation())
        q = res.quality
        rows.append({"name": name, "rotation_deg": euler_angles_deg(matrix), "translation_mm": shift,
                     "angle_deg": rotation_angle_deg(matrix), "metric_final": q.metric_final,
                     "metric_identity": q.metric_identity, "max_corner_shift_mm": q.max_corner_shift_mm,
                     "bspline_max_mm": q.bspline_max_mm, "plausible": q.plausible, "problems": list(q.problems)})
    return rows


def normalised(array: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """``array`` mapped linearly from ``limits`` (display contrast limits) to [0, 1], float32."""
    lo, hi = float(limits[0]), float(limits[1])
    out = (np.asarray(array, np.float32) - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-12))
    return np.clip(out, 0.0, 1.0, out=out)


def checkerboard(reference: np.ndarray, moving: np.ndarray, spacing: tuple[float, ...], square_mm: float) -> np.ndarray:
    """Cubes of ``square_mm`` (mm along each axis) taken alternately from ``reference`` (the cube
    holding voxel 0) and ``moving``; both (Z, Y, X) on one grid of voxel size ``spacing`` (mm)."""
    n = [max(1, int(round(square_mm / s))) for s in spacing]
    parity = sum(np.arange(size).reshape([-1 if a == k else 1 for a in range(3)]) // n[k]
                 for k, size in enumerate(reference.shape)) % 2
    return np.where(parity == 0, reference, moving)


def fade(reference: np.ndarray, moving: np.ndarray, fraction: float) -> np.ndarray:
    """``(1 - fraction) * reference + fraction * moving`` (float32): 0 shows the reference only."""
    f = np.float32(min(max(fraction, 0.0), 1.0))
    return (np.float32(1.0) - f) * reference + f * moving


# --------------------------------------------------------------------------- worker job
@dataclass
class _Job:
    """What the worker thread shares with the GUI: plain Python, no Qt."""

    case: Case
    reference: str
    names: list[str]
    transform: str
    cancel: threading.Event = field(default_factory=threading.Event)
    latest: tuple[float, str] = (0.0, "starting")

    def progress(self, fraction: float, message: str) -> bool:
        """`register_case`'s callback: remember the figures; False (stop) once cancelled."""
        self.latest = (float(fraction), str(message))
        return not self.cancel.is_set()


@dataclass
class _CheckCache:
    key: tuple
    reference: np.ndarray  # display orientation, normalised to [0, 1]
    moving: np.ndarray
    grid: Grid             # display grid


class RegisterWidget(QWidget):
    """Co-register the case's sequences onto a reference, check, list, save and undo."""

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        #: The shared state of this viewer's case (see `workspace.Workspace`).
        self.workspace = workspace if workspace is not None else Workspace.of(napari_viewer)
        self._job: _Job | None = None
        self._worker: Any = None
        self._save_worker: Any = None
        self._loaded: Case | None = None
        #: Replaced layers: key -> (original layer or None, its index); and their replacements.
        self._originals: dict[str, tuple[Any, int]] = {}
        self._replacements: dict[str, Any] = {}
        self._check_cache: _CheckCache | None = None

        # -- registration
        self.reference = QComboBox()
        self.reference.currentTextChanged.connect(self._reference_changed)
        self.moving = QListWidget()
        self.moving.setMaximumHeight(90)
        self.transform = QComboBox()
        self.transform.addItems(TRANSFORMS)
        self.start = QComboBox()
        self.start.addItems(list(STARTS))
        self.register_btn = QPushButton("Register")
        self.register_btn.clicked.connect(self.register)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)

        form = QFormLayout()
        form.addRow("reference", self.reference)
        form.addRow("moving", self.moving)
        form.addRow("transform", self.transform)
        form.addRow("start", self.start)
        buttons = QHBoxLayout()
        buttons.addWidget(self.register_btn)
        buttons.addWidget(self.cancel_btn)
        reg_box = QGroupBox("Co-register")
        reg_layout = QVBoxLayout(reg_box)
        reg_layout.addLayout(form)
        reg_layout.addLayout(buttons)
        reg_layout.addWidget(self.progress)
        reg_layout.addWidget(self.status)

        # -- alignment check
        self.check_btn = QPushButton("Show check")
        self.check_btn.setCheckable(True)
        self.check_btn.toggled.connect(self.update_check)
        self.compare = QComboBox()
        self.compare.currentTextChanged.connect(lambda _: self.update_check())
        self.mode = QComboBox()
        self.mode.addItems(CHECK_MODES)
        self.mode.currentTextChanged.connect(self._mode_changed)
        self.square = QSlider(Qt.Orientation.Horizontal)
        self.square.setRange(2, 80)
        self.square.setValue(20)
        self.square.valueChanged.connect(lambda _: self.update_check())
        self.square_label = QLabel()
        self.fade = QSlider(Qt.Orientation.Horizontal)
        self.fade.setRange(0, 100)
        self.fade.setValue(50)
        self.fade.valueChanged.connect(lambda _: self.update_check())
        self.fade_label = QLabel()
        check_box = QGroupBox("Alignment check")
        check_form = QFormLayout(check_box)
        top = QHBoxLayout()
        top.addWidget(self.compare, 1)
        top.addWidget(self.mode)
        top.addWidget(self.check_btn)
        check_form.addRow("compare", top)
        check_form.addRow(self.square_label, self.square)
        check_form.addRow(self.fade_label, self.fade)

        # -- transforms
        self.table = QTableWidget(len(TABLE_ROWS), 0)
        self.table.setVerticalHeaderLabels(list(TABLE_ROWS))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Transforms map the reference world to each sequence's world (ITK convention), "
                              "LPS millimetres: x = patient's left, y = posterior, z = superior.")
        self.undo_btn = QPushButton("Undo registration")
        self.undo_btn.clicked.connect(self.undo)
        self.save_btn = QPushButton("Save transforms…")
        self.save_btn.clicked.connect(lambda: self.save_transforms())
        out_row = QHBoxLayout()
        out_row.addWidget(self.undo_btn)
        out_row.addWidget(self.save_btn)
        tx_box = QGroupBox("Applied transforms")
        tx_layout = QVBoxLayout(tx_box)
        tx_layout.addWidget(self.table)
        tx_layout.addLayout(out_row)

        layout = QVBoxLayout(self)
        layout.addWidget(reg_box)
        layout.addWidget(check_box)
        layout.addWidget(tx_box, 1)

        self.workspace.case_changed.connect(self._case_changed)
        self._mode_changed(self.mode.currentText())
        self._case_changed(self.workspace.case)

    # ------------------------------------------------------------------ case and lists
    def _case_changed(self, _case: Any = None) -> None:
        loaded = self.workspace.loaded_case
        if loaded is not self._loaded:  # a new case: what we kept belongs to the old one
            self._loaded = loaded
            self._originals.clear()
            self._replacements.clear()
            self._check_cache = None
            self.reference.blockSignals(True)
            self.reference.clear()
            if loaded is not None:
                self.reference.addItems(list(loaded.names))
                self.reference.setCurrentText(loaded.reference)
            self.reference.blockSignals(False)
            self._reference_changed(self.reference.currentText())
            self.status.setText("" if loaded is not None else "load a case first")
        self._refresh_table()
        self._refresh_buttons()
        self.update_check()

    def _reference_changed(self, reference: str) -> None:
        names = [n for n in (self._loaded.names if self._loaded is not None else ()) if n != reference]
        self.moving.clear()
        for n in names:
            item = QListWidgetItem(n)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.moving.addItem(item)
        current = self.compare.currentText()
        self.compare.blockSignals(True)
        self.compare.clear()
        self.compare.addItems(names)
        if current in names:
            self.compare.setCurrentText(current)
        self.compare.blockSignals(False)
        self.update_check()

    @property
    def running(self) -> bool:
        """True while a registration runs in the worker thread."""
        return self._job is not None

    @property
    def saving(self) -> bool:
        """True while `save_transforms` writes in its worker thread."""
        return self._save_worker is not None

    def moving_names(self) -> list[str]:
        """The sequences ticked for registration."""
        return [self.moving.item(i).text() for i in range(self.moving.count())
                if self.moving.item(i).checkState() == Qt.CheckState.Checked]

    def _refresh_buttons(self) -> None:
        running = self._job is not None
        self.register_btn.setEnabled(self._loaded is not None and not running)
        self.cancel_btn.setEnabled(running)
        applied = self.workspace.registration is not None
        self.undo_btn.setEnabled(applied and bool(self._replacements) and not running)
        self.save_btn.setEnabled(applied and self._save_worker is None)

    # ------------------------------------------------------------------ registering
    def register(self) -> Any:
        """Start `register_case` on the loaded case in a worker thread; returns the worker (None
        when nothing can be registered; the status says why)."""
        case = self.workspace.loaded_case
        if case is None or self._job is not None:
            return None
        reference, names = self.reference.currentText() or case.reference, self.moving_names()
        if not names:
            self._fail(ValueError("tick at least one moving sequence to register"))
            return None
        if reference != case.reference and self._labels_drawn():
            self._fail(ValueError(f"labels were drawn on the {case.reference} grid: keep {case.reference} as "
                                  f"the reference, or clear the labels, to register onto {reference}"))
            return None
        job = _Job(case, reference, names, self.transform.currentText())
        worker = create_worker(register_case, case, reference=reference, transform=job.transform, names=names,
                               initialization=STARTS[self.start.currentText()], progress=job.progress,
                               _ignore_errors=True)
        worker.returned.connect(lambda result, job=job: self._apply(job, result))
        worker.errored.connect(lambda exc, job=job: self._failed(job, exc))
        worker.finished.connect(lambda job=job: self._finished(job))
        self._job, self._worker = job, worker
        self.progress.setValue(0)
        self.status.setText(f"registering {', '.join(names)} onto {reference} ({job.transform})…")
        self._refresh_buttons()
        self._timer.start()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running registration to stop (its progress callback then returns False)."""
        if self._job is not None:
            self._job.cancel.set()
            self.status.setText("cancelling…")

    def _poll(self) -> None:
        if self._job is not None:
            fraction, message = self._job.latest
            self.progress.setValue(int(round(1000 * fraction)))
            if not self._job.cancel.is_set():
                self.status.setText(message)

    def _failed(self, job: _Job, exc: BaseException) -> None:
        if job is not self._job:
            return
        self._timer.stop()  # the status now tells the outcome, not the last iteration
        if isinstance(exc, RegistrationCancelled):
            self._cancelled()
        else:
            self._fail(exc)

    def _cancelled(self) -> None:
        self.status.setText("cancelled: the case and its layers are unchanged")
        show_info("Registration cancelled; nothing was changed")

    def _fail(self, exc: BaseException) -> None:
        log.error("registration: %s", exc)
        self.status.setText(f"error: {exc}")
        show_error(str(exc))

    def _finished(self, job: _Job) -> None:
        if job is not self._job:
            return
        self._timer.stop()
        self._job, self._worker = None, None
        self.progress.setValue(0)
        self._refresh_buttons()

    def _apply(self, job: _Job, result: CaseRegistration) -> None:
        if job is not self._job:
            return
        self._timer.stop()
        if job.cancel.is_set():  # Cancel pressed while the last step finished: honour it
            self._cancelled()
            return
        if self.workspace.loaded_case is not job.case:
            self.status.setText("a new case was loaded meanwhile: the registration was discarded")
            return
        self._replace_layers(result)
        self.workspace.apply_registration(result)
        rows = transform_figures(result)
        bad = [r["name"] for r in rows if not r["plausible"]]
        msg = (f"registered {', '.join(result.results)} onto {result.case.reference} ({result.transform_type}) in "
               f"{sum(r.seconds for r in result.results.values()):.1f} s")
        if bad:
            msg += f"; check {', '.join(bad)}: the result looks implausible (see the table)"
            show_warning(msg)
        self.status.setText(msg)
        self._refresh_buttons()

    # ------------------------------------------------------------------ layers
    def _sequence_layer(self, name: str) -> Any:
        case_id = self._loaded.case_id if self._loaded is not None else ""
        images = [ly for ly in self.viewer.layers if ly.__class__.__name__ == "Image"]
        for ly in images:
            info = ly.metadata.get(KEY) or {}
            if info.get("role") == "image" and info.get("name") == name and info.get("case_id", "") == case_id:
                return ly
        return next((ly for ly in images if ly.name == name and (ly.metadata.get(KEY) or {}).get("role") != "check"),
                    None)

    def _labels_drawn(self) -> bool:
        layer = self.workspace.labels_layer()
        return layer is not None and bool(np.any(np.asarray(layer.data)))

    def _swap(self, key: str, old: Any, new: Any) -> Any:
        """Put ``new`` where ``old`` is (or on top of the sequences), keeping the first original;
        returns the layer taken out (None if there was none)."""
        layers = self.viewer.layers
        current = self._replacements.get(key, old)
        if current is not None and current in layers:
            index = layers.index(current)
            layers.remove(current)
        else:
            index = len(layers) - (CHECK_LAYER in layers)
        if key not in self._originals:
            self._originals[key] = (old, index)
        layers.insert(index, new)
        self._replacements[key] = new
        return current

    def _replace_layers(self, result: CaseRegistration) -> None:
        from napari.layers import Image, Labels

        loaded, case = self._loaded, result.case
        assert loaded is not None
        active = self.viewer.layers.selection.active
        swapped: dict[Any, Any] = {}
        for name in case.names:
            if case[name] is loaded[name]:  # kept as loaded (the reference, or already on its grid)
                if name in self._replacements:  # replaced by an earlier registration: put it back
                    swapped.update(self._restore(name))
                continue
            old = self._replacements.get(name)
            old = self._sequence_layer(name) if old is None else old
            data, kwargs, _ = image_layer_data(case[name], case_id=loaded.case_id)
            if old is not None:
                kwargs.update(name=old.name, colormap=old.colormap, contrast_limits=tuple(old.contrast_limits),
                              gamma=old.gamma, opacity=old.opacity, blending=old.blending, visible=old.visible)
            new = Image(data, **kwargs)
            swapped[self._swap(name, old, new)] = new
        labels = self.workspace.labels_layer()
        if labels is not None and case.reference != loaded.reference:  # empty: checked before starting
            data, kwargs, _ = labels_layer_data(Volume.zeros_like_labels(case.grid), case_id=loaded.case_id,
                                                name=LABELS_LAYER)
            new = Labels(data, **kwargs)
            swapped[self._swap(_LABELS_KEY, labels, new)] = new
        elif _LABELS_KEY in self._replacements and case.reference == loaded.reference:
            swapped.update(self._restore(_LABELS_KEY))
        self._check_cache = None
        self._reselect(active, swapped)

    def _reselect(self, active: Any, mapping: dict[Any, Any]) -> None:
        """Make ``active`` (or what replaced it) the selected layer again."""
        target = mapping.get(active, active)
        if target is not None and target in self.viewer.layers:
            self.viewer.layers.selection.active = target

    def _restore(self, key: str) -> dict[Any, Any]:
        """Put the original layer of ``key`` back where its replacement is; {replacement: original}."""
        layers = self.viewer.layers
        old, index = self._originals.pop(key)
        new = self._replacements.pop(key, None)
        if new is not None and new in layers:
            index = layers.index(new)
            layers.remove(new)
        if old is not None and old not in layers:
            layers.insert(min(index, len(layers)), old)
        return {new: old}

    def undo(self) -> None:
        """Put the original layers back (the same layer objects, voxels untouched) and make the
        loaded case current again."""
        if self._job is not None:
            return
        active = self.viewer.layers.selection.active
        back: dict[Any, Any] = {}
        for key in reversed(list(self._originals)):
            back.update(self._restore(key))
        self._check_cache = None
        self._reselect(active, back)
        self.workspace.apply_registration(None)
        self.status.setText("registration undone: the sequences are back on their own grids")

    # ------------------------------------------------------------------ transforms table
    def _refresh_table(self) -> None:
        reg = self.workspace.registration
        rows = transform_figures(reg) if reg is not None else []
        self.table.setColumnCount(len(rows))
        self.table.setHorizontalHeaderLabels([row["name"] for row in rows])
        for c, row in enumerate(rows):
            identity = row["metric_identity"]
            cells = [*(f"{a:.2f}" for a in row["rotation_deg"]), *(f"{t:.2f}" for t in row["translation_mm"]),
                     f"{row['metric_final']:.4f}", "n/a" if identity is None else f"{identity:.4f}",
                     f"{row['max_corner_shift_mm']:.2f}", f"{row['bspline_max_mm']:.2f}",
                     "ok" if row["plausible"] else "implausible"]
            for r, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                if TABLE_ROWS[r] == "check":
                    item.setToolTip("; ".join(row["problems"]) or "no problem found")
                    if not row["plausible"]:
                        item.setForeground(Qt.GlobalColor.red)
                self.table.setItem(r, c, item)

    def table_figures(self) -> dict[str, dict[str, str]]:
        """The table as text: ``{sequence: {row label: cell}}``."""
        return {self.table.horizontalHeaderItem(c).text(): {label: self.table.item(r, c).text()
                                                            for r, label in enumerate(TABLE_ROWS)}
                for c in range(self.table.columnCount())}

    def save_transforms(self, folder: str | Path | None = None) -> Any:
        """Write the applied registration (``.tfm`` per sequence, resampled volumes, JSON report)
        into ``folder`` (asked for when None) in a worker thread; returns the worker, or None.

        An existing, non-empty folder is only written into after the user confirms overwriting.
        """
        reg = self.workspace.registration
        if reg is None:
            self._fail(ValueError("nothing to save: register the sequences first"))
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder for the transforms")
            if not folder:
                return None
        out = Path(folder)
        overwrite = False
        if out.is_dir() and any(out.iterdir()):
            answer = QMessageBox.question(
                self, "Overwrite?", f"{out} is not empty. Overwrite the registration files in it?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                self.status.setText(f"not saved: {out} was left as it is")
                return None
            overwrite = True
        worker = create_worker(write_registration, reg, out, overwrite=overwrite, _ignore_errors=True)
        worker.returned.connect(lambda path: self.status.setText(f"saved transforms and report to {path}"))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._save_finished)
        self._save_worker = worker
        self.status.setText(f"saving to {out}…")
        self._refresh_buttons()
        worker.start()
        return worker

    def _save_finished(self) -> None:
        self._save_worker = None
        self._refresh_buttons()

    # ------------------------------------------------------------------ alignment check
    def _mode_changed(self, mode: str) -> None:
        self.square.setEnabled(mode == "checkerboard")
        self.fade.setEnabled(mode == "fade")
        self.update_check()

    def _limits(self, name: str, volume: Volume) -> tuple[float, float]:
        layer = self._replacements.get(name) or self._sequence_layer(name)
        return tuple(layer.contrast_limits) if layer is not None else display_window(volume)  # type: ignore[return-value]

    def _check_images(self) -> _CheckCache | None:
        case, name, reference = self.workspace.case, self.compare.currentText(), self.reference.currentText()
        if case is None or not name or reference not in case.names or name not in case.names:
            return None
        ref, mov = case[reference], case[name]
        key = (id(ref), id(mov), self._limits(reference, ref), self._limits(name, mov))
        if self._check_cache is None or self._check_cache.key != key:
            on_ref = resample_to_grid(mov, ref.grid)  # identity: the scanner's alignment before registering
            r_disp, _ = to_display_orientation(ref.with_array(normalised(ref.array, key[2])))
            m_disp, _ = to_display_orientation(on_ref.with_array(normalised(on_ref.array, key[3])))
            self._check_cache = _CheckCache(key, r_disp.array, m_disp.array, r_disp.grid)
        return self._check_cache

    def check_image(self) -> np.ndarray | None:
        """The checkerboard or fade of the reference and the compared sequence (display orientation
        of the reference grid, values 0..1), or None without a case."""
        cache = self._check_images()
        if cache is None:
            return None
        if self.mode.currentText() == "checkerboard":
            return checkerboard(cache.reference, cache.moving, cache.grid.spacing, float(self.square.value()))
        return fade(cache.reference, cache.moving, self.fade.value() / 100.0)

    def update_check(self, *_: Any) -> None:
        """Redraw (or remove) the alignment-check layer from the current controls."""
        self.square_label.setText(f"square {self.square.value()} mm")
        self.fade_label.setText(f"fade {self.fade.value()} %")
        layers = self.viewer.layers
        image = self.check_image() if self.check_btn.isChecked() else None
        if image is None:
            if CHECK_LAYER in layers:
                layers.remove(layers[CHECK_LAYER])
            return
        assert self._check_cache is not None
        grid = grid_to_dict(self._check_cache.grid)
        meta = {KEY: {"role": "check", "grid": grid, "name": self.compare.currentText(),
                      "reference": self.reference.currentText(), "mode": self.mode.currentText()}}
        if CHECK_LAYER in layers and (layers[CHECK_LAYER].metadata.get(KEY) or {}).get("grid") == grid:
            layer = layers[CHECK_LAYER]
            layer.data = image
            layer.metadata = meta
        else:
            if CHECK_LAYER in layers:
                layers.remove(layers[CHECK_LAYER])
            self.viewer.add_image(image, name=CHECK_LAYER, colormap="gray", contrast_limits=(0.0, 1.0),
                                  metadata=meta, **layer_kwargs(self._check_cache.grid))
