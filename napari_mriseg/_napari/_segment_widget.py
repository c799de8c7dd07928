"""'Segment' dock widget: run a UNet model on the case and put its labels up for correction.

The model's prediction lands in the editable ``labels`` layer as one undo step, without
overwriting the voxels the clinician already edited (the workspace's `touched` mask) unless asked.
The untouched prediction is kept in a hidden ``prediction`` layer and in the workspace for
comparison; optional probability and uncertainty (TTA disagreement) layers; 'Next uncertain
region' moves the view to the largest uncertain region that has not been reviewed yet.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from scipy import ndimage

from ..core.resample import to_display_orientation
from ..core.volume import Volume
from .layers import KEY, image_layer_data, labels_layer_data
from .views import camera
from .workspace import PREDICTION_LAYER, Workspace

log = logging.getLogger(__name__)

#: The model shipped with the plugin (trained on phantoms by scripts/train_demo_model.py).
DEMO_MODEL = Path(__file__).resolve().parents[1] / "sample_data" / "demo_model.mriseg"
#: Voxels whose TTA disagreement is at least this are "uncertain".
UNCERTAIN = 0.25
#: Regions reviewed over this fraction are skipped by 'Next uncertain region'.
REVIEWED_ENOUGH = 0.5


def match_sequences(model_sequences: list[str], case_names: list[str]) -> dict[str, str]:
    """Map each model input to a case sequence by name (exact, then case-insensitive, then
    ignoring separators such as ``T1-ce`` / ``t1ce`` / ``t1c``); '' where nothing matches."""

    def norm(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum()).replace("ce", "c").replace("gd", "c")

    out: dict[str, str] = {}
    for m in model_sequences:
        hit = next((c for c in case_names if c == m), None)
        hit = hit or next((c for c in case_names if c.lower() == m.lower()), None)
        hit = hit or next((c for c in case_names if norm(c) == norm(m)), None)
        out[m] = hit or ""
    return out


class SegmentWidget(QWidget):
    """Run a model on the workspace's case (volume or current slice) in a worker thread."""

    _progress = Signal(int, int)

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace = workspace if workspace is not None else Workspace.of(napari_viewer)
        self.model: Any = None
        self._worker: Any = None
        self._cancel = threading.Event()
        self._visited: list[np.ndarray] = []  # centroids (display voxels) of regions already shown

        # model
        self.model_combo = QComboBox()
        if DEMO_MODEL.exists():
            self.model_combo.addItem("demo model (bundled)", str(DEMO_MODEL))
        self.model_combo.currentIndexChanged.connect(lambda _i: self.load_model(self.model_combo.currentData()))
        browse = QPushButton("Model file…")
        browse.clicked.connect(self._choose_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(browse)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)

        # sequence mapping: model input -> case sequence
        self.mapping = QTableWidget(0, 2)
        self.mapping.setHorizontalHeaderLabels(["model input", "case sequence"])
        self.mapping.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.mapping.verticalHeader().setVisible(False)
        self.check_label = QLabel("")
        self.check_label.setWordWrap(True)
        self.register_btn = QPushButton("Co-register first…")
        self.register_btn.setVisible(False)
        self.register_btn.clicked.connect(self._ask_registration)

        # options
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        if not _cuda_available():
            self.device.model().item(2).setEnabled(False)
            self.device.setItemData(2, "no CUDA device on this machine", Qt.ItemDataRole.ToolTipRole)
        self.precision = QComboBox()
        self.precision.addItems(["auto", "fp32", "bf16"])
        self.precision.setToolTip("auto: float32 on the CPU, mixed precision on CUDA; bf16: about 2x faster "
                                  "on a CPU with bfloat16 units, probabilities within ~5e-2, a few boundary "
                                  "voxels may change label")
        if not _bf16_available():
            self.precision.model().item(2).setEnabled(False)
            self.precision.setItemData(2, "this CPU has no bfloat16 units (AVX512-BF16 or AMX)",
                                       Qt.ItemDataRole.ToolTipRole)
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.9)
        self.overlap.setSingleStep(0.125)
        self.overlap.setValue(0.5)
        self.tta = QCheckBox("mirror TTA")
        self.probabilities = QCheckBox("probability layers")
        self.uncertainty = QCheckBox("uncertainty layer (implies TTA)")
        self.overwrite = QCheckBox("overwrite my edits")
        self.overwrite.setToolTip("off: voxels you painted or erased keep your labels")
        form = QFormLayout()
        form.addRow("device", self.device)
        form.addRow("precision", self.precision)
        form.addRow("window overlap", self.overlap)
        checks = QHBoxLayout()
        for w in (self.tta, self.probabilities):
            checks.addWidget(w)
        form.addRow(checks)
        form.addRow(self.uncertainty)
        form.addRow(self.overwrite)

        # actions
        self.volume_btn = QPushButton("Segment volume")
        self.volume_btn.clicked.connect(lambda: self.run(slice_only=False))
        self.slice_btn = QPushButton("Segment this slice")
        self.slice_btn.clicked.connect(lambda: self.run(slice_only=True))
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        actions = QHBoxLayout()
        actions.addWidget(self.volume_btn)
        actions.addWidget(self.slice_btn)
        actions.addWidget(self.cancel_btn)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.next_btn = QPushButton("Next uncertain region")
        self.next_btn.setEnabled(False)
        self.next_btn.clicked.connect(self.next_uncertain_region)

        layout = QVBoxLayout(self)
        layout.addLayout(model_row)
        layout.addWidget(self.model_info)
        layout.addWidget(self.mapping)
        layout.addWidget(self.check_label)
        layout.addWidget(self.register_btn)
        layout.addLayout(form)
        layout.addLayout(actions)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.next_btn)
        layout.addStretch(1)

        self._progress.connect(self._show_progress)
        self.workspace.case_changed.connect(lambda _c: self.refresh())
        if self.model_combo.count():
            self.load_model(self.model_combo.currentData())
        self.refresh()

    # ------------------------------------------------------------------ model & mapping
    def _choose_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder (*.mriseg)")
        if path:
            self.add_model(path)

    def add_model(self, path: str | Path) -> None:
        """Add a model file to the list and select it."""
        path = str(Path(path))
        idx = self.model_combo.findData(path)
        if idx < 0:
            self.model_combo.addItem(Path(path).name, path)
            idx = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(idx)
        self.load_model(path)

    def load_model(self, path: str | None) -> None:
        """Load (and check) the model at ``path``; show its inputs, labels and geometry."""
        if not path:
            return
        from ..ml.model_file import load_model

        try:
            model = load_model(path)
        except Exception as exc:  # a ModelFileError names the file and the problem
            self.model = None
            self._fail(exc)
            return
        self.model = model
        self.workspace.model, self.workspace.model_path = model, Path(path)
        cfg = model.config
        kind = "3D patches" if cfg.axis_2d is None else f"2D slices along axis {cfg.axis_2d}"
        patch = "x".join(str(p) for p in cfg.patch_size)
        spacing = "x".join(f"{s:g}" for s in cfg.target_spacing)
        labels = ", ".join(f"{v} {n}" for n, v in cfg.labels.items())
        self.model_info.setText(f"{kind}, patch {patch} voxels at {spacing} mm; labels: {labels}")
        self.refresh()

    def refresh(self) -> None:
        """Re-map model inputs to the case's sequences and re-check that they are ready."""
        case = self.workspace.case
        names = list(case.names) if case is not None else []
        wanted = list(self.model.config.sequences) if self.model is not None else []
        previous = self.sequence_mapping()
        auto = match_sequences(wanted, names)
        self.mapping.setRowCount(len(wanted))
        for r, m in enumerate(wanted):
            item = QTableWidgetItem(m)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.mapping.setItem(r, 0, item)
            combo = QComboBox()
            combo.addItems(["", *names])
            choice = previous.get(m) if previous.get(m) in names else auto[m]
            combo.setCurrentText(choice)
            combo.currentTextChanged.connect(lambda _t: self._check())
            self.mapping.setCellWidget(r, 1, combo)
        self.mapping.setFixedHeight(self.mapping.horizontalHeader().height()
                                    + sum(self.mapping.rowHeight(r) for r in range(len(wanted))) + 4)
        self._check()

    def sequence_mapping(self) -> dict[str, str]:
        """Model input name -> case sequence name ('' when unmapped), as shown in the table."""
        out = {}
        for r in range(self.mapping.rowCount()):
            item, combo = self.mapping.item(r, 0), self.mapping.cellWidget(r, 1)
            if item is not None and combo is not None:
                out[item.text()] = combo.currentText()
        return out

    def set_sequence(self, model_input: str, case_sequence: str) -> None:
        """Choose which case sequence feeds ``model_input``."""
        for r in range(self.mapping.rowCount()):
            if self.mapping.item(r, 0).text() == model_input:
                self.mapping.cellWidget(r, 1).setCurrentText(case_sequence)

    def _check(self) -> bool:
        """Say whether the case can be segmented; enable the buttons accordingly."""
        problem, misregistered = self._problem()
        ok = problem == ""
        self.check_label.setText("ready: the mapped sequences share the reference grid" if ok else problem)
        self.check_label.setStyleSheet("" if ok else "color: #e0a030")
        self.register_btn.setVisible(bool(misregistered))
        busy = self._worker is not None
        self.volume_btn.setEnabled(ok and not busy)
        self.slice_btn.setEnabled(ok and not busy)
        return ok

    def _problem(self) -> tuple[str, list[str]]:
        case = self.workspace.case
        if self.model is None:
            return "choose a model", []
        if case is None:
            return "load a case first (Load case)", []
        mapping = self.sequence_mapping()
        missing = [m for m, c in mapping.items() if not c]
        if missing:
            return f"no case sequence for model input(s) {', '.join(missing)}", []
        used = list(dict.fromkeys(mapping.values()))
        if len(used) < len(mapping):
            return "one case sequence is mapped to two model inputs", []
        off = [n for n in used if case[n].grid.mismatch(case.grid) is not None]
        if off:
            return f"not on the reference grid ({case.reference}): {', '.join(off)}; co-register first", off
        return "", []

    def _ask_registration(self) -> None:
        """Bring the Co-register panel forward (in the workflow dock, or as its own dock)."""
        parent = self.parent()
        while parent is not None and not hasattr(parent, "show_panel"):
            parent = parent.parent()
        if parent is not None:
            parent.show_panel("Register")
            return
        from ._register_widget import RegisterWidget

        self.viewer.window.add_dock_widget(RegisterWidget(self.viewer, self.workspace), name="Co-register")

    # ------------------------------------------------------------------ running
    def current_slice_roi(self) -> tuple[slice, slice, slice]:
        """The box of the reference grid (voxels, Z Y X) under the slice shown in the main canvas."""
        case = self.workspace.case
        assert case is not None
        layer = self.workspace.labels_layer(create=True)
        disp, _ = to_display_orientation(Volume.zeros_like_labels(case.grid))
        idx = np.round(layer.world_to_data(self.viewer.dims.point)).astype(int)
        not_shown = [ax for ax in range(3) if ax not in self.viewer.dims.displayed[-3:]] or [0]
        lo = np.zeros(3, int)
        hi = np.array(disp.shape) - 1
        for ax in not_shown[:1]:
            lo[ax] = hi[ax] = int(np.clip(idx[ax], 0, disp.shape[ax] - 1))
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        ref = np.round(case.grid.world_to_index(disp.grid.index_to_world(corners))).astype(int)
        return tuple(slice(int(a), int(b) + 1) for a, b in zip(ref.min(0), ref.max(0)))  # type: ignore[return-value]

    def run(self, *, slice_only: bool = False) -> Any:
        """Segment the volume (or only the current slice) in a worker thread; returns the worker."""
        if not self._check():
            show_error(self.check_label.text())
            return None
        from ..ml.segment import segment

        case = self.workspace.case
        mapping = self.sequence_mapping()
        inputs = {m: case[c] for m, c in mapping.items()}
        roi = self.current_slice_roi() if slice_only else None
        uncertainty = self.uncertainty.isChecked() and not slice_only
        kwargs = dict(device=self.device.currentText(), precision=self.precision.currentText(), tta=self.tta.isChecked() or uncertainty,
                      overlap=self.overlap.value(), return_probabilities=self.probabilities.isChecked()
                      and not slice_only, return_uncertainty=uncertainty, roi=roi,
                      progress=lambda done, total: self._progress.emit(done, total),
                      cancel=self._cancel.is_set)
        self._cancel.clear()
        worker = create_worker(segment, inputs, self.model, _ignore_errors=True, **kwargs)
        worker.returned.connect(lambda result: self._show_result(result, roi))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._done)
        self._worker = worker
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText("segmenting this slice…" if slice_only else "segmenting the volume…")
        self._check()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running segmentation between batches; nothing is changed."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _show_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _show_result(self, result: Any, roi: tuple[slice, ...] | None) -> None:
        ws = self.workspace
        labels_layer = ws.labels_layer(create=True)
        ws.watch_labels()
        ws.ensure_masks()
        new, _, _ = labels_layer_data(result.labels, case_id=ws.case_id)
        current = np.asarray(labels_layer.data)
        region = np.ones(current.shape, bool)
        if roi is not None:  # only the slice that was segmented
            ref_box = np.zeros(result.labels.shape, bool)
            ref_box[roi] = True
            region = to_display_orientation(Volume.on_grid(ref_box.astype(np.uint8), result.labels.grid,
                                                           kind="label"))[0].array.astype(bool)
        write = region & (new != current)
        kept = 0
        if not self.overwrite.isChecked() and ws.touched is not None:
            kept = int(np.count_nonzero(write & ws.touched))
            write &= ~ws.touched
        idx = np.nonzero(write)
        changed = ws.edit_labels(idx, new[idx].astype(current.dtype), by_model=True)
        labels_layer.refresh()

        # the untouched prediction, kept for comparison (hidden; toggle to see it)
        if roi is None or ws.prediction is None:
            ws.prediction = result.labels
        else:
            arr = ws.prediction.array.copy()
            arr[roi] = result.labels.array[roi]
            ws.prediction = ws.prediction.with_array(arr)
        self._set_prediction_layer(ws.prediction)
        if result.probabilities:
            for name, vol in result.probabilities.items():
                if name != "background":
                    self._set_image(f"p({name})", vol, colormap="inferno", limits=(0.0, 1.0))
        if result.uncertainty is not None:
            self._set_image("uncertainty", result.uncertainty, colormap="magma", limits=(0.0, 1.0))
            self._visited = []
        self.next_btn.setEnabled("uncertainty" in self.viewer.layers)
        self.viewer.layers.selection.active = labels_layer
        what = "this slice" if roi is not None else "the volume"
        msg = f"segmented {what}: {changed} voxels changed"
        if kept:
            msg += f", {kept} voxels you edited kept (tick 'overwrite my edits' to replace them)"
        self.status.setText(msg)
        show_info(msg)
        ws.prediction_changed.emit(ws.prediction)

    def _set_prediction_layer(self, prediction: Volume) -> None:
        data, kwargs, _ = labels_layer_data(prediction, case_id=self.workspace.case_id, name=PREDICTION_LAYER)
        if PREDICTION_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREDICTION_LAYER]
            layer.data = data
        else:
            kwargs.update(visible=False, opacity=0.9)
            layer = self.viewer.add_labels(data, **kwargs)
            layer.contour = 1
        layer.editable = False
        layer.metadata[KEY]["role"] = "prediction"

    def _set_image(self, name: str, volume: Volume, *, colormap: str, limits: tuple[float, float]) -> None:
        data, kwargs, _ = image_layer_data(volume.with_array(volume.array, name=name), case_id=self.workspace.case_id)
        kwargs.update(colormap=colormap, contrast_limits=limits, blending="additive", opacity=0.6)
        kwargs["metadata"][KEY]["role"] = "model output"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
        else:
            self.viewer.add_image(data, **kwargs)

    def _fail(self, exc: BaseException) -> None:
        log.error("segment failed: %s", exc)
        self.status.setText(f"error: {exc}")
        show_error(str(exc))

    def _done(self) -> None:
        self._worker = None
        self.cancel_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0 if self._cancel.is_set() else 1)
        if self._cancel.is_set():
            self.status.setText("cancelled: nothing was changed")
        self._check()

    # ------------------------------------------------------------------ review
    def uncertain_regions(self) -> list[tuple[int, np.ndarray, float]]:
        """Uncertain connected regions not yet reviewed, largest first.

        Returns
        -------
        list of (voxel count, centroid in the layer's voxel indices, reviewed fraction)
        """
        if "uncertainty" not in self.viewer.layers:
            return []
        unc = np.asarray(self.viewer.layers["uncertainty"].data) >= UNCERTAIN
        regions, n = ndimage.label(unc)
        if n == 0:
            return []
        sizes = np.bincount(regions.ravel(), minlength=n + 1)
        reviewed = self.workspace.reviewed
        done = (np.bincount(regions.ravel(), weights=reviewed.ravel(), minlength=n + 1)
                if reviewed is not None and reviewed.shape == regions.shape else np.zeros(n + 1))
        centres = ndimage.center_of_mass(unc, regions, range(1, n + 1))
        out = [(int(sizes[i]), np.asarray(centres[i - 1]), float(done[i] / sizes[i])) for i in range(1, n + 1)
               if done[i] / sizes[i] < REVIEWED_ENOUGH]
        return sorted(out, key=lambda r: -r[0])

    def next_uncertain_region(self) -> np.ndarray | None:
        """Move the view to the largest uncertain region not yet reviewed nor shown; returns its
        centre (the uncertainty layer's voxel indices) or None when none is left."""
        for size, centre, frac in self.uncertain_regions():
            if any(np.allclose(centre, v, atol=0.5) for v in self._visited):
                continue
            self._visited.append(centre)
            layer = self.viewer.layers["uncertainty"]
            world = np.asarray(layer.data_to_world(centre))
            for ax in range(3):
                self.viewer.dims.set_point(ax, float(world[ax]))
            shown = list(self.viewer.dims.displayed)
            camera(self.viewer).center = tuple(float(world[a]) for a in shown)
            self.status.setText(f"uncertain region of {size} voxels ({100 * frac:.0f}% reviewed)")
            return centre
        self.status.setText("no uncertain region left to review")
        return None


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - a broken torch install
        return False


def _bf16_available() -> bool:
    """bfloat16 inference on this machine's CPU or GPU (see `napari_mriseg.ml.inference.check_precision`)."""
    try:
        import torch

        from ..ml.inference import cpu_supports_bf16

        return cpu_supports_bf16() or (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:  # pragma: no cover - a broken torch install
        return False


__all__ = ["DEMO_MODEL", "SegmentWidget", "match_sequences"]
