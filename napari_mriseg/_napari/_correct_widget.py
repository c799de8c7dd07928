"""'Correct' dock widget: the clean-up tools beside napari's own paint, erase, fill and polygon.

Every operation acts on the workspace's labels layer (named "labels"), is computed by a pure
function of `napari_mriseg.core.label_ops` in a worker thread on a snapshot of the labels, is
filtered by the overwrite policy, and lands through `Workspace.edit_labels`: one napari undo step
(Ctrl+Z undoes it). The masked brush and the seed click are the two interactive tools; a brush stroke
is one undo step too. A table shows per label the voxel count, the volume and the agreement with the
model's original prediction, refreshed (debounced) after edits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core import label_ops as ops
from ..core.convert import from_layer, grid_from_layer_transform
from ..core.errors import MriSegError, check_choice
from ..core.resample import resample_to_grid, to_display_orientation
from .layers import KEY, LABEL_NAMES
from .workspace import Workspace

log = logging.getLogger(__name__)

#: Name of the temporary layer that shows an interpolation before it is applied.
PREVIEW_LAYER = "interpolation preview"
_POLICY_TEXT = {"background": "only background", "selected": "background + selected label", "all": "all labels"}
_STATS_COLUMNS = ["label", "name", "voxels", "mm³", "mL", "Dice", "Δ volume"]


def _spin(lo: float, hi: float, value: float, *, step: float = 1.0, decimals: int = 1, suffix: str = "",
          prefix: str = "") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    if prefix:
        box.setPrefix(prefix)
    box.setRange(lo, hi)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    if suffix:
        box.setSuffix(suffix)
    return box


def _label_text(value: int) -> str:
    return f"{value} {LABEL_NAMES.get(value, 'background' if value == 0 else '')}".strip()


class CorrectWidget(QWidget):
    """Interpolate, clean up, grow/shrink, combine, masked-paint, region-grow, review, measure."""

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        #: The shared state of this viewer's case (see `workspace.Workspace`).
        self.workspace = workspace if workspace is not None else Workspace.of(napari_viewer)
        #: Per-label statistics shown in the table (`label_ops.LabelStats`).
        self.stats: list[ops.LabelStats] = []
        #: Voxels changed by the last operation.
        self.last_changed = 0
        self._layer: Any = None
        self._worker: Any = None
        self._pred: tuple[Any, np.ndarray | None] = (None, None)
        self._intensity_cache: tuple[Any, np.ndarray | None] = (None, None)
        self._brush_layer: Any = None
        self._seed_on = False
        self._stats_timer = QTimer(self)
        self._stats_timer.setSingleShot(True)
        self._stats_timer.setInterval(400)
        self._stats_timer.timeout.connect(self.refresh_stats)
        self._build()
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self.viewer.dims.events.order.connect(self._show_axis)
        self.workspace.prediction_changed.connect(self.schedule_stats)
        self.workspace.case_changed.connect(self.schedule_stats)
        self.workspace.labels_edited.connect(self.schedule_stats)
        self._layers_changed()

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        self.label_combo = QComboBox()
        for v in LABEL_NAMES:
            self.label_combo.addItem(_label_text(v), v)
        self.label_combo.currentIndexChanged.connect(self._label_chosen)
        self.policy_combo = QComboBox()
        for p in ops.POLICIES:
            self.policy_combo.addItem(_POLICY_TEXT[p], p)
        self.policy_combo.setToolTip("which voxels an operation may change")
        head = QFormLayout()
        head.addRow("label", self.label_combo)
        head.addRow("may overwrite", self.policy_combo)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_interpolate(), "Interpolate")
        self.tabs.addTab(self._build_clean(), "Clean up")
        self.tabs.addTab(self._build_combine(), "Combine")
        self.tabs.addTab(self._build_paint(), "Paint / grow")
        self.tabs.addTab(self._build_review(), "Review")

        self.table = QTableWidget(0, len(_STATS_COLUMNS))
        self.table.setHorizontalHeaderLabels(_STATS_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.tabs)
        layout.addWidget(QLabel("per label (vs the original prediction)"))
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)

    def _button(self, text: str, slot: Callable[[], Any], tip: str = "") -> QPushButton:
        btn = QPushButton(text)
        btn.clicked.connect(lambda _=False: self._guard(slot))
        if tip:
            btn.setToolTip(tip)
        return btn

    def _build_interpolate(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        self.axis_label = QLabel("")
        lay.addWidget(QLabel("Draw the label on a few slices, then fill the slices between them."))
        lay.addWidget(self.axis_label)
        row = QHBoxLayout()
        self.preview_btn = self._button("Preview", self.preview_interpolation)
        self.apply_interp_btn = self._button("Apply", self.apply_interpolation)
        self.cancel_interp_btn = self._button("Cancel", self.cancel_preview)
        for b in (self.preview_btn, self.apply_interp_btn, self.cancel_interp_btn):
            row.addWidget(b)
        lay.addLayout(row)
        lay.addStretch(1)
        return page

    def _build_clean(self) -> QWidget:
        page = QWidget()
        grid = QGridLayout(page)
        self.holes_mode = QComboBox()
        self.holes_mode.addItems(["3D", "per slice"])
        grid.addWidget(self.holes_mode, 0, 0)
        grid.addWidget(self._button("Fill holes", self.fill_holes), 0, 1)
        self.islands_mm3 = _spin(0, 1e7, 100.0, step=50, suffix=" mm³", prefix="smaller than ")
        grid.addWidget(self.islands_mm3, 1, 0)
        grid.addWidget(self._button("Remove islands", self.remove_islands, "erase pieces smaller than this"), 1, 1)
        self.all_labels = QCheckBox("all labels")
        grid.addWidget(self.all_labels, 2, 0)
        grid.addWidget(self._button("Keep largest", self.keep_largest), 2, 1)
        self.margin_mm = _spin(0.1, 100, 2.0, step=0.5, suffix=" mm", prefix="by ")
        grid.addWidget(self.margin_mm, 3, 0)
        row = QHBoxLayout()
        row.addWidget(self._button("Grow", lambda: self.grow(+1)))
        row.addWidget(self._button("Shrink", lambda: self.grow(-1)))
        grid.addLayout(row, 3, 1)
        return page

    def _build_combine(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.a_combo, self.b_combo, self.target_combo = QComboBox(), QComboBox(), QComboBox()
        for v in LABEL_NAMES:
            for combo in (self.a_combo, self.b_combo, self.target_combo):
                combo.addItem(_label_text(v), v)
        self.target_combo.addItem("0 background (erase)", 0)
        self.b_combo.setCurrentIndex(min(1, self.b_combo.count() - 1))
        self.op_combo = QComboBox()
        self.op_combo.addItems(list(ops.COMBINE_OPS))
        self.b_source = QComboBox()
        self.b_source.addItems(["labels", "prediction"])
        form.addRow("A (labels)", self.a_combo)
        form.addRow("operation", self.op_combo)
        b_row = QHBoxLayout()
        b_row.addWidget(self.b_source)
        b_row.addWidget(self.b_combo, 1)
        form.addRow("B from", b_row)
        form.addRow("into", self.target_combo)
        form.addRow(self._button("Apply", self.combine))
        return page

    def _build_paint(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.sequence_combo = QComboBox()
        self.sequence_combo.currentIndexChanged.connect(self._sequence_chosen)
        form.addRow("sequence", self.sequence_combo)
        self.lo_spin, self.hi_spin = _spin(-1e9, 1e9, 0.0), _spin(-1e9, 1e9, 1000.0)
        rng = QHBoxLayout()
        rng.addWidget(self.lo_spin)
        rng.addWidget(QLabel("to"))
        rng.addWidget(self.hi_spin)
        form.addRow("intensity", rng)
        self.brush_btn = QPushButton("Masked brush")
        self.brush_btn.setCheckable(True)
        self.brush_btn.setToolTip("paint the selected label only where the sequence is within the range "
                                  "(brush size: the layer's); one undo step per stroke")
        self.brush_btn.toggled.connect(lambda on: self._toggle(self.set_masked_brush, on))
        form.addRow(self.brush_btn)
        self.tolerance = _spin(0, 1e9, 100.0, step=10)
        form.addRow("tolerance ±", self.tolerance)
        self.radius_mm = _spin(0, 500, 30.0, step=5, suffix=" mm")
        self.radius_mm.setToolTip("grow no further than this from the seed (0: no limit)")
        form.addRow("max radius", self.radius_mm)
        self.slice_only = QCheckBox("this slice only")
        form.addRow(self.slice_only)
        self.seed_btn = QPushButton("Grow from clicked seed")
        self.seed_btn.setCheckable(True)
        self.seed_btn.toggled.connect(lambda on: self._toggle(self.set_seed_mode, on))
        form.addRow(self.seed_btn)
        return page

    def _build_review(self) -> QWidget:
        page = QWidget()
        grid = QGridLayout(page)
        grid.addWidget(self._button("Mark slice reviewed", self.mark_slice_reviewed), 0, 0, 1, 2)
        self.review_margin = _spin(0, 200, 5.0, suffix=" mm", prefix="label + ")
        self.review_margin.setToolTip("the selected label and this margin around it")
        grid.addWidget(self.review_margin, 1, 0)
        grid.addWidget(self._button("Mark region reviewed", self.mark_region_reviewed), 1, 1)
        self.reviewed_label = QLabel("reviewed: 0%")
        grid.addWidget(self.reviewed_label, 2, 0, 1, 2)
        return page

    # ------------------------------------------------------------------ state
    def labels(self) -> Any:
        """The labels layer being corrected; `MriSegError` when there is none."""
        layer = self.workspace.labels_layer()
        if layer is None:
            raise MriSegError("no labels layer: load a case (and segment it) first")
        return layer

    def selected_label(self) -> int:
        return int(self.label_combo.currentData())

    def policy(self) -> str:
        return str(self.policy_combo.currentData())

    def set_policy(self, policy: str) -> None:
        check_choice("policy", policy, ops.POLICIES)
        self.policy_combo.setCurrentIndex(ops.POLICIES.index(policy))

    def set_label(self, value: int) -> None:
        """Select ``value`` in the label choice (added if it is not listed)."""
        i = self.label_combo.findData(int(value))
        if i < 0:
            self.label_combo.addItem(_label_text(int(value)), int(value))
            i = self.label_combo.count() - 1
        self.label_combo.setCurrentIndex(i)

    @staticmethod
    def spacing(layer: Any) -> np.ndarray:
        """Voxel size (mm, array order) of a layer made by `layers` (axis-aligned display grid)."""
        return np.abs(np.asarray(layer.scale, dtype=float)[-3:])

    def view_axis(self) -> int:
        """The labels array axis across the current 2D view (the slider's axis)."""
        layer = self.labels()
        return int(self.viewer.dims.order[-3]) - (self.viewer.dims.ndim - layer.ndim)

    def current_index(self, axis: int) -> int:
        """The labels array index of the slice shown, along ``axis``."""
        layer = self.labels()
        pos = layer.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(pos[axis])), 0, layer.data.shape[axis] - 1))

    def _label_chosen(self) -> None:
        layer = self.workspace.labels_layer()
        if layer is not None and self.label_combo.currentData() is not None:
            layer.selected_label = self.selected_label()

    def _layer_label_changed(self, event: Any = None) -> None:
        if self._layer is not None and self._layer.selected_label != self.label_combo.currentData():
            self.label_combo.blockSignals(True)
            self.set_label(self._layer.selected_label)
            self.label_combo.blockSignals(False)

    def _layers_changed(self, event: Any = None) -> None:
        layer = self.workspace.labels_layer()
        if layer is not self._layer:
            if self._layer is not None:
                self.set_masked_brush(False)
                for ev, slot in self._layer_slots():
                    ev.disconnect(slot)
            self._layer = layer
            self._pred = (None, None)
            if layer is not None:
                self.workspace.watch_labels()
                for ev, slot in self._layer_slots():
                    ev.connect(slot)
                self._label_chosen()
            self.schedule_stats()
        names = [ly.name for ly in self.viewer.layers if ly.__class__.__name__ == "Image"
                 and (ly.metadata.get(KEY) or {}).get("role") != "preview"]
        if names != [self.sequence_combo.itemText(i) for i in range(self.sequence_combo.count())]:
            current = self.sequence_combo.currentText()
            self.sequence_combo.blockSignals(True)
            self.sequence_combo.clear()
            self.sequence_combo.addItems(names)
            self.sequence_combo.blockSignals(False)
            reference = self.workspace.case.reference if self.workspace.case is not None else ""
            if current in names:
                self.sequence_combo.setCurrentText(current)
            elif names:
                self.sequence_combo.setCurrentText(reference if reference in names else names[0])
                self._sequence_chosen()
        self._show_axis()

    def _show_axis(self, event: Any = None) -> None:
        if self.workspace.labels_layer() is not None:
            self.axis_label.setText(f"along array axis {self.view_axis()} (the view's slider)")
            self._show_reviewed()

    def _layer_slots(self) -> list[tuple[Any, Callable[..., Any]]]:
        ev = self._layer.events
        return [(ev.paint, self.schedule_stats), (ev.set_data, self.schedule_stats),
                (ev.selected_label, self._layer_label_changed)]

    def _sequence_chosen(self) -> None:
        name = self.sequence_combo.currentText()
        if name in self.viewer.layers:
            lo, hi = (float(v) for v in self.viewer.layers[name].contrast_limits)
            self.lo_spin.setValue(lo + 0.5 * (hi - lo))
            self.hi_spin.setValue(hi)
            self.tolerance.setValue(round(0.1 * (hi - lo), 1))

    # ------------------------------------------------------------------ running operations
    def _guard(self, slot: Callable[[], Any]) -> Any:
        try:
            return slot()
        except Exception as exc:  # shown to the user; the viewer stays usable
            self._fail(exc)
            return None

    def _toggle(self, setter: Callable[[bool], None], on: bool) -> None:
        try:
            setter(on)
        except Exception as exc:
            self._fail(exc)
            setter(False)

    def _run(self, what: str, compute: Callable[[np.ndarray], np.ndarray], *, selected: int | None = None,
             policy: str | None = None, on_result: Callable[[Any], None] | None = None) -> Any:
        """Compute ``compute(snapshot)`` in a worker; apply the allowed change as one undo step."""
        if self._worker is not None:
            raise MriSegError("another operation is still running")
        layer = self.labels()
        before = np.array(layer.data)
        policy = self.policy() if policy is None else policy
        sel = self.selected_label() if selected is None else selected

        def job() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
            return ops.policy_change(before, compute(before), policy=policy, selected=sel)

        worker = create_worker(job, _ignore_errors=True)
        worker.returned.connect(on_result or (lambda change: self._apply(what, change, policy, sel)))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._done)
        self._worker = worker
        self.tabs.setEnabled(False)
        self.status.setText(f"{what}…")
        worker.start()
        return worker

    def _apply(self, what: str, change: tuple[tuple[np.ndarray, ...], np.ndarray], policy: str, sel: int) -> None:
        layer = self.labels()
        # the voxels may have been painted while the worker ran: check the policy against them again
        idx, values = ops.filter_change(layer.data, change[0], change[1], policy=policy, selected=sel)
        self.last_changed = self.workspace.edit_labels(idx, values) if idx[0].size else 0
        self.status.setText(f"{what}: {self.last_changed} voxel(s) changed (Ctrl+Z undoes)")
        self.schedule_stats()

    def _done(self) -> None:
        self._worker = None
        self.tabs.setEnabled(True)

    def _fail(self, exc: BaseException) -> None:
        log.error("correction failed: %s", exc)
        self.status.setText(f"error: {exc}")
        show_error(str(exc))

    @property
    def busy(self) -> bool:
        """True while an operation runs in its worker thread."""
        return self._worker is not None

    # ------------------------------------------------------------------ the operations
    def fill_holes(self) -> Any:
        label = self.selected_label()
        axis = self.view_axis() if self.holes_mode.currentText() == "per slice" else None
        return self._run("fill holes", lambda a: ops.fill_holes(a, label, axis=axis))

    def remove_islands(self) -> Any:
        label = None if self.all_labels.isChecked() else self.selected_label()
        mm3, spacing = self.islands_mm3.value(), self.spacing(self.labels())
        return self._run("remove islands",
                         lambda a: ops.remove_islands(a, label, min_volume_mm3=mm3, spacing=spacing),
                         policy=None if label is not None else "all")  # it only erases what it cleans

    def keep_largest(self) -> Any:
        label = None if self.all_labels.isChecked() else self.selected_label()
        return self._run("keep largest", lambda a: ops.keep_largest_component(a, label),
                         policy=None if label is not None else "all")  # it only erases what it cleans

    def grow(self, sign: int) -> Any:
        label, spacing = self.selected_label(), self.spacing(self.labels())
        margin = math.copysign(self.margin_mm.value(), sign)
        return self._run("grow" if sign > 0 else "shrink",
                         lambda a: ops.grow(a, label, margin_mm=margin, spacing=spacing))

    def combine(self) -> Any:
        a, b, target = (int(c.currentData()) for c in (self.a_combo, self.b_combo, self.target_combo))
        op = self.op_combo.currentText()
        other = None
        if self.b_source.currentText() == "prediction":
            other = self._prediction_display(self.labels())
            if other is None:
                raise MriSegError("no prediction on the labels grid to combine with: segment the case first")
        return self._run(f"{op} into {target}", lambda arr: ops.combine_labels(arr, op, a, b, target=target,
                                                                             other=other),
                         selected=target or a)  # erasing the result (target 0) removes label A

    def _interpolation(self) -> Callable[[np.ndarray], np.ndarray]:
        label, axis, spacing = self.selected_label(), self.view_axis(), self.spacing(self.labels())
        return lambda a: ops.interpolate_label(a, label, axis=axis, spacing=spacing, only_empty=False)

    def preview_interpolation(self) -> Any:
        """Show the interpolated voxels (after the policy) in a temporary layer; nothing changes yet."""
        return self._run("interpolation preview", self._interpolation(), on_result=self._show_preview)

    def apply_interpolation(self) -> Any:
        self.cancel_preview()
        return self._run("interpolate", self._interpolation())

    def cancel_preview(self) -> None:
        """Remove the interpolation preview (nothing was applied)."""
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PREVIEW_LAYER)
            self.status.setText("interpolation preview removed")

    def _show_preview(self, change: tuple[tuple[np.ndarray, ...], np.ndarray]) -> None:
        layer = self.labels()
        data = np.zeros(layer.data.shape, layer.data.dtype)
        data[change[0]] = change[1]
        self.cancel_preview()
        self.viewer.add_labels(data, name=PREVIEW_LAYER, scale=layer.scale, translate=layer.translate,
                               affine=layer.affine.affine_matrix, colormap=layer.colormap.copy(), opacity=0.9,
                               metadata={KEY: {"role": "preview"}})
        self.viewer.layers.selection.active = layer
        n = int(change[0][0].size)
        self.status.setText(f"preview: {n} voxel(s) would be filled; Apply or Cancel")

    # ------------------------------------------------------------------ masked brush
    def intensity(self) -> np.ndarray:
        """The chosen sequence on the labels layer's grid (resampled by world position if needed)."""
        layer, name = self.labels(), self.sequence_combo.currentText()
        if name not in self.viewer.layers:
            raise MriSegError("choose the sequence whose intensity limits the painting")
        img = self.viewer.layers[name]
        key = (id(img), id(img.data), layer.data.shape, tuple(layer.scale), tuple(layer.translate))
        if self._intensity_cache[0] == key:
            return self._intensity_cache[1]  # type: ignore[return-value]
        grid = grid_from_layer_transform(layer.data.shape, layer.scale, layer.translate, layer.affine.affine_matrix)
        vol = from_layer(np.asarray(img.data), img.scale, img.translate, img.affine.affine_matrix, kind="image")
        arr = np.asarray(resample_to_grid(vol, grid).array)
        self._intensity_cache = (key, arr)
        return arr

    def set_masked_brush(self, on: bool) -> None:
        """Turn the masked brush on (the labels layer paints only within the intensity range) or off."""
        if not on:
            layer, self._brush_layer = self._brush_layer, None
            if layer is not None:
                if self._brush_stroke in layer.mouse_drag_callbacks:
                    layer.mouse_drag_callbacks.remove(self._brush_stroke)
                layer.events.mode.disconnect(self._layer_mode_changed)
                layer.mouse_pan = str(layer.mode) == "pan_zoom"
                layer.cursor = "standard"
                layer.help = ""
            self.brush_btn.blockSignals(True)
            self.brush_btn.setChecked(False)
            self.brush_btn.blockSignals(False)
            return
        if self._brush_layer is not None:
            return
        layer = self.labels()
        self.intensity()  # fail now, not at the first stroke
        self.set_seed_mode(False)
        self.viewer.layers.selection.active = layer
        layer.mode = "pan_zoom"
        layer.mouse_drag_callbacks.append(self._brush_stroke)
        layer.mouse_pan = False
        layer.cursor = "circle"
        layer.cursor_size = abs(layer.brush_size * float(np.min(self.spacing(layer)[1:])))
        layer.help = "masked brush: paints only where the sequence is within the range"
        layer.events.mode.connect(self._layer_mode_changed)
        self._brush_layer = layer
        self.brush_btn.blockSignals(True)
        self.brush_btn.setChecked(True)
        self.brush_btn.blockSignals(False)

    def _layer_mode_changed(self, event: Any = None) -> None:
        self.set_masked_brush(False)  # the user picked one of napari's tools

    def _dab_change(self, layer: Any, last: np.ndarray | None, pos: np.ndarray,
                    axes: list[int]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """The allowed change of the brush moving from ``last`` to ``pos`` (data coordinates)."""
        spacing = self.spacing(layer)
        # napari's brush: radius floor(size / 2) + 0.5 pixels of the finest displayed axis
        radius_mm = (math.floor(layer.brush_size / 2) + 0.5) * float(min(spacing[a] for a in axes))
        label, intensity = int(layer.selected_label), self.intensity()
        start = pos if last is None else last
        steps = max(1, math.ceil(float(np.linalg.norm((pos - start) * spacing)) / (radius_mm / 2)))
        parts = [ops.masked_brush(layer.data, intensity, start + (pos - start) * k / steps, label=label,
                                  radius_mm=radius_mm, spacing=spacing, lo=self.lo_spin.value(),
                                  hi=self.hi_spin.value(), axes=axes, policy=self.policy(), selected=label)
                 for k in range(1, steps + 1)]
        idx = tuple(np.concatenate([p[0][d] for p in parts]) for d in range(3))
        _, first = np.unique(np.ravel_multi_index(idx, layer.data.shape), return_index=True)  # dabs overlap
        return tuple(i[first] for i in idx), np.concatenate([p[1] for p in parts])[first]

    def _brush_stroke(self, layer: Any, event: Any) -> Any:
        """napari drag callback: one masked stroke = one undo step (napari's own block_history)."""
        offset = self.viewer.dims.ndim - layer.ndim
        axes = [int(d) - offset for d in event.dims_displayed]
        if len(axes) != 2:
            self.status.setText("the masked brush paints in a 2D view: switch the canvas to 2D")
            return
        last, painted = None, 0
        with layer.block_history():
            while True:
                pos = np.asarray(layer.world_to_data(event.position), float)[-3:]
                try:
                    idx, values = self._dab_change(layer, last, pos, axes)
                except Exception as exc:  # an error must not leave the stroke half-open
                    self._fail(exc)
                    return
                if idx[0].size:
                    layer.data_setitem(idx, values)
                    painted += int(idx[0].size)
                last = pos
                yield
                if event.type != "mouse_move":
                    break
        self.status.setText(f"masked stroke: {painted} voxel(s) painted (Ctrl+Z undoes)")
        self.schedule_stats()

    # ------------------------------------------------------------------ region growing
    def set_seed_mode(self, on: bool) -> None:
        """Turn the seed click on: each click in the canvas grows a region from the clicked voxel."""
        callbacks = self.viewer.mouse_drag_callbacks
        if on and not self._seed_on:
            self.set_masked_brush(False)
            layer = self.labels()
            self.intensity()
            layer.mode = "pan_zoom"
            callbacks.append(self._seed_click)
        elif not on and self._seed_on and self._seed_click in callbacks:
            callbacks.remove(self._seed_click)
        self._seed_on = bool(on)
        self.seed_btn.blockSignals(True)
        self.seed_btn.setChecked(self._seed_on)
        self.seed_btn.blockSignals(False)

    def _seed_click(self, viewer: Any, event: Any) -> Any:
        """napari drag callback: a click (not a drag, which pans) grows a region from its position."""
        start_pos, start_px = np.asarray(event.position, float), np.asarray(event.pos, float)
        in_2d = len(event.dims_displayed) == 2
        yield
        while event.type == "mouse_move":
            if np.linalg.norm(np.asarray(event.pos, float) - start_px) > 4:
                return  # a drag: the camera pans
            yield
        layer = self.workspace.labels_layer()
        if not in_2d:
            self.status.setText("click the seed in a 2D view: switch the canvas to 2D")
        elif layer is not None:
            self._guard(lambda: self.grow_from_seed(layer.world_to_data(start_pos)[-3:]))

    def grow_from_seed(self, seed: Any) -> Any:
        """Region growing from ``seed`` (labels data coordinates) into the selected label."""
        layer = self.labels()
        seed = tuple(int(round(float(v))) for v in seed)
        if not all(0 <= v < n for v, n in zip(seed, layer.data.shape, strict=True)):
            raise MriSegError(f"the seed {seed} is outside the labels volume {layer.data.shape}")
        intensity, label, spacing = self.intensity(), self.selected_label(), self.spacing(layer)
        tol, radius = self.tolerance.value(), self.radius_mm.value() or None
        axis = self.view_axis() if self.slice_only.isChecked() else None
        return self._run(f"grow from {seed}", lambda a: ops.paint_mask(a, ops.region_grow(
            intensity, seed, tolerance=tol, spacing=spacing, max_radius_mm=radius, slice_axis=axis), label))

    # ------------------------------------------------------------------ review
    def _reviewed_changed(self) -> None:
        # the reviewed mask is work to keep: it changes what an export writes (the ignore label)
        self.workspace.dirty = True
        signal = getattr(self.workspace, "reviewed_changed", None)  # requested Workspace signal
        (signal if signal is not None else self.workspace.labels_edited).emit()
        self._show_reviewed()

    def mark_slice_reviewed(self) -> None:
        """Mark the slice shown (across the view's axis) as reviewed."""
        self.labels()
        self.workspace.ensure_masks()
        axis = self.view_axis()
        index = self.current_index(axis)
        key = [slice(None)] * 3
        key[axis] = slice(index, index + 1)
        self.workspace.reviewed[tuple(key)] = True  # type: ignore[index]
        self.status.setText(f"slice {index} of axis {axis} marked reviewed")
        self._reviewed_changed()

    def mark_region_reviewed(self) -> None:
        """Mark the selected label and the margin around it as reviewed."""
        layer = self.labels()
        self.workspace.ensure_masks()
        mask = np.asarray(layer.data) == self.selected_label()
        if not mask.any():
            raise MriSegError(f"label {_label_text(self.selected_label())} is not drawn: nothing to mark")
        region = ops.dilate_mask(mask, margin_mm=self.review_margin.value(), spacing=self.spacing(layer))
        self.workspace.reviewed |= region  # type: ignore[operator]
        self.status.setText(f"{int(region.sum())} voxels around label {self.selected_label()} marked reviewed")
        self._reviewed_changed()

    def reviewed_fraction(self) -> float:
        return ops.reviewed_fraction(self.workspace.reviewed)

    def _show_reviewed(self) -> None:
        rev = self.workspace.reviewed
        text = f"reviewed: {self.reviewed_fraction():.1%} of the volume"
        if rev is not None and self._layer is not None and rev.shape == self._layer.data.shape:
            axis = self.view_axis()
            full = int(np.count_nonzero(np.moveaxis(rev, axis, 0).reshape(rev.shape[axis], -1).all(axis=1)))
            text += f"; {full}/{rev.shape[axis]} slices of axis {axis}"
        self.reviewed_label.setText(text)

    # ------------------------------------------------------------------ statistics
    def schedule_stats(self, *_: Any) -> None:
        """Refresh the table soon (debounced: painting stays fast)."""
        self._stats_timer.start()

    def _prediction_display(self, layer: Any) -> np.ndarray | None:
        pred = self.workspace.prediction
        if pred is None:
            return None
        if self._pred[0] is not pred:
            self._pred = (pred, np.asarray(to_display_orientation(pred)[0].array))
        arr = self._pred[1]
        return arr if arr is not None and arr.shape == np.shape(layer.data) else None

    def refresh_stats(self) -> list[ops.LabelStats]:
        """Recompute the per-label table now; returns the rows."""
        self._stats_timer.stop()
        layer = self.workspace.labels_layer()
        if layer is None:
            self.stats = []
            self.table.setRowCount(0)
            return self.stats
        data = np.asarray(layer.data)
        self.stats = ops.label_stats(data, self.spacing(layer), reference=self._prediction_display(layer),
                                     include=tuple(LABEL_NAMES))
        self.table.setRowCount(len(self.stats))
        for r, s in enumerate(self.stats):
            cells = [str(s.label), LABEL_NAMES.get(s.label, ""), f"{s.voxels}", f"{s.volume_mm3:.0f}",
                     f"{s.volume_ml:.2f}", "–" if s.dice is None else f"{s.dice:.3f}",
                     "–" if s.volume_change_pct is None else f"{s.volume_change_pct:+.1f}%"]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self._show_reviewed()
        return self.stats
