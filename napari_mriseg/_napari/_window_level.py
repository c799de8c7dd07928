"""Window/level: a panel bound to the selected image layer, and a radiology-style W/L mouse drag.

Public API (reused by the multi-planar views):

* `get_window`, `set_window`: a layer's window ``(width, level)`` <-> its ``contrast_limits``.
* `remember_window`, `remembered_window`, `restore_window`: each sequence keeps its own window
  in ``layer.metadata["mriseg"]["window"] = [width, level]``.
* `attach_window_level_drag(viewer, target=...)`: right-button drag, or Ctrl + left drag, on any
  napari viewer (or `ViewerModel` of an extra canvas): horizontal = window, vertical = level.
* `WindowLevelWidget`: the dock panel (fields, presets, histogram, the drag mode switch).

How the drag stays out of napari's way (napari 0.9.2): a viewer ``mouse_drag_callbacks``
generator sees every press first. It acts only for the right button, or the left button with
Control, and only while the active layer is in ``pan_zoom`` mode (napari's own rule for its
Alt-drag zoom box), so painting, erasing, filling and napari's right-button encircle-fill stroke of
a labels layer keep the mouse. A left drag without modifier is never taken: panning works as
before. vispy's 2D camera zooms on a right drag; during a W/L drag the camera's ``mouse_pan`` is
switched off (the press reaches napari before the camera) and restored on release. napari 0.9.2
shows no context menu on the canvas, so a right press opens none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..core import windowing as wl
from ..core.errors import OptionError
from .layers import KEY
from .views import camera
from .workspace import Workspace

log = logging.getLogger(__name__)

__all__ = [
    "HistogramView",
    "WindowLevelDrag",
    "WindowLevelWidget",
    "attach_window_level_drag",
    "default_target",
    "get_window",
    "is_window_layer",
    "is_window_level_gesture",
    "remember_window",
    "remembered_window",
    "restore_window",
    "set_window",
]

#: The preset key of the file's own DICOM window (besides `windowing.preset_names`).
DICOM_PRESET = "dicom"


# ---------------------------------------------------------------------------- layer windows
def is_window_layer(layer: Any) -> bool:
    """True for a layer that has a window: a napari single-channel (not RGB) image layer."""
    return isinstance(layer, Image) and not layer.rgb


def get_window(layer: Any) -> tuple[float, float]:
    """``(width, level)`` of an image layer's contrast limits (the layer's intensity units)."""
    return wl.limits_to_window(*layer.contrast_limits)


def set_window(layer: Any, width: float, level: float) -> None:
    """Show ``layer`` through the window ``(width, level)``: sets its ``contrast_limits``
    (napari widens ``contrast_limits_range`` when the window reaches beyond it)."""
    layer.contrast_limits = wl.window_to_limits(width, level)


def remember_window(layer: Any) -> tuple[float, float]:
    """Store the layer's current window in ``layer.metadata["mriseg"]["window"]``; returns it."""
    width, level = get_window(layer)
    layer.metadata.setdefault(KEY, {})["window"] = [width, level]
    return width, level


def remembered_window(layer: Any) -> tuple[float, float] | None:
    """The window stored by `remember_window`, or None."""
    stored = (layer.metadata.get(KEY) or {}).get("window")
    if stored is None or len(stored) != 2:
        return None
    return float(stored[0]), float(stored[1])


def restore_window(layer: Any) -> bool:
    """Give ``layer`` back its remembered window; False if it has none (nothing changes)."""
    stored = remembered_window(layer)
    if stored is None or stored[0] <= 0:
        return False
    if not np.allclose(get_window(layer), stored, rtol=1e-9, atol=1e-9):
        set_window(layer, *stored)
    return True


def _sequence_key(layer: Any) -> tuple[str, str]:
    info = layer.metadata.get(KEY) or {}
    return str(info.get("case_id", "")), str(info.get("name") or layer.name)


# ---------------------------------------------------------------------------- the mouse drag
def is_window_level_gesture(event: Any) -> bool:
    """True for the W/L gesture: a right-button press, or a left-button press with Control."""
    control = any(m == "Control" for m in (getattr(event, "modifiers", ()) or ()))  # vispy Keys == str
    return event.button == 2 or (event.button == 1 and control)


def _pan_zoom_mode(viewer: Any) -> bool:
    active = viewer.layers.selection.active
    return active is None or getattr(active, "mode", "pan_zoom") == "pan_zoom"


def default_target(viewer: Any) -> Any:
    """The layer a W/L drag adjusts by default: the active layer if it has a window, else the
    top visible image layer (None when there is none)."""
    active = viewer.layers.selection.active
    if is_window_layer(active):
        return active
    return next((ly for ly in reversed(viewer.layers) if is_window_layer(ly) and ly.visible), None)


class WindowLevelDrag:
    """A W/L drag mode on one viewer; made by `attach_window_level_drag`.

    Attributes
    ----------
    viewer
        The napari `Viewer` or `ViewerModel` whose ``mouse_drag_callbacks`` hold this object.
    target : callable
        ``target() -> layer or None``: the image layer a drag adjusts.
    enabled : bool
        While False, presses are ignored (the callback stays attached).
    on_change : callable or None
        ``on_change(layer, width, level)`` after each step of a drag.
    """

    def __init__(self, viewer: Any, target: Callable[[], Any] | None = None,
                 on_change: Callable[[Any, float, float], None] | None = None) -> None:
        self.viewer = viewer
        self.target = target if target is not None else (lambda: default_target(viewer))
        self.on_change = on_change
        self.enabled = True
        self.dragging = False

    def __call__(self, viewer: Any, event: Any):  # a napari mouse-drag generator
        if not (self.enabled and event.type == "mouse_press" and is_window_level_gesture(event)
                and _pan_zoom_mode(viewer)):
            return
        layer = self.target()
        if not is_window_layer(layer):
            return
        cam = camera(viewer)
        was_panning = cam.mouse_pan
        cam.mouse_pan = False  # vispy's camera would zoom on a right drag and pan on the left one
        width0, level0 = get_window(layer)
        lo, hi = layer.contrast_limits_range
        span = float(hi) - float(lo)
        x0, y0 = float(event.pos[0]), float(event.pos[1])
        self.dragging = True
        try:
            event.handled = True
            yield
            while event.type == "mouse_move":
                width, level = wl.drag_window(width0, level0, float(event.pos[0]) - x0,
                                              float(event.pos[1]) - y0, data_range=span)
                set_window(layer, width, level)
                if self.on_change is not None:
                    self.on_change(layer, width, level)
                event.handled = True
                yield
        finally:
            self.dragging = False
            active = viewer.layers.selection.active
            cam.mouse_pan = active.mouse_pan if active is not None else was_panning

    def detach(self) -> None:
        """Remove the drag from the viewer's ``mouse_drag_callbacks`` (safe to call twice, and
        after the viewer is torn down: this runs from a Qt ``destroyed`` signal, where an
        exception would abort the process)."""
        callbacks = getattr(self.viewer, "mouse_drag_callbacks", None)
        if callbacks is not None and self in callbacks:
            callbacks.remove(self)


def attach_window_level_drag(viewer: Any, *, target: Callable[[], Any] | None = None,
                             on_change: Callable[[Any, float, float], None] | None = None,
                             ) -> WindowLevelDrag:
    """Give ``viewer`` the radiology W/L mouse drag.

    Right-button drag, or Ctrl + left drag: horizontal changes the window (right = wider),
    vertical the level (down = higher, darker), by `napari_mriseg.core.windowing.drag_window`
    (a 256-pixel drag moves either by the window's width at the press). Only while the active
    layer is in pan/zoom mode, so painting keeps the mouse; a plain left drag still pans.

    Parameters
    ----------
    viewer
        A napari `Viewer` or `ViewerModel` (e.g. the model behind an extra canvas).
    target : callable, optional
        ``target() -> image layer or None``: what to adjust; default `default_target`.
    on_change : callable, optional
        ``on_change(layer, width, level)`` after each step of a drag.

    Returns
    -------
    WindowLevelDrag
        ``.enabled`` switches it off and on; ``.detach()`` removes it.
    """
    drag = WindowLevelDrag(viewer, target, on_change)
    viewer.mouse_drag_callbacks.append(drag)
    return drag


# ---------------------------------------------------------------------------- histogram view
class HistogramView(QWidget):
    """A histogram of intensities with the current window drawn on it, painted with QPainter.

    The window shows as a shaded band between two vertical lines (its contrast limits) and the
    grey ramp the window maps intensities onto (black at the low limit, white at the high one).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.hist: wl.Histogram | None = None
        self.limits: tuple[float, float] | None = None
        self.log = False
        self.setMinimumHeight(110)
        self.setMaximumHeight(220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_histogram(self, hist: wl.Histogram | None) -> None:
        self.hist = hist
        self.update()

    def set_limits(self, limits: tuple[float, float] | None) -> None:
        self.limits = None if limits is None else (float(limits[0]), float(limits[1]))
        self.update()

    def set_log(self, log: bool) -> None:
        self.log = bool(log)
        self.update()

    def span(self) -> tuple[float, float]:
        """The intensity span on the x axis: the histogram's bins and the window, both whole."""
        lo, hi = (float(self.hist.edges[0]), float(self.hist.edges[-1])) if self.hist is not None else (0.0, 1.0)
        if self.limits is not None:
            lo, hi = min(lo, self.limits[0]), max(hi, self.limits[1])
        return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect())
        p.fillRect(rect, QColor(30, 32, 38))
        text_h = p.fontMetrics().height()
        plot = rect.adjusted(6, 6, -6, -(text_h + 6))
        if self.hist is None or plot.width() < 4 or plot.height() < 4:
            p.setPen(QColor(170, 170, 170))
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "no image layer")
            p.end()
            return
        lo, hi = self.span()

        def x_of(v: float) -> float:
            return plot.left() + (v - lo) / (hi - lo) * plot.width()

        if self.limits is not None:  # the window's band behind the bars
            band = QRectF(QPointF(x_of(self.limits[0]), plot.top()), QPointF(x_of(self.limits[1]), plot.bottom()))
            p.fillRect(band, QColor(255, 200, 40, 40))
        heights = self.hist.heights(log=self.log)
        path = QPainterPath(QPointF(x_of(self.hist.edges[0]), plot.bottom()))
        for i, h in enumerate(heights):
            y = plot.bottom() - float(h) * plot.height()
            path.lineTo(x_of(self.hist.edges[i]), y)
            path.lineTo(x_of(self.hist.edges[i + 1]), y)
        path.lineTo(x_of(self.hist.edges[-1]), plot.bottom())
        path.closeSubpath()
        p.fillPath(path, QBrush(QColor(150, 170, 200)))

        if self.limits is not None:
            x0, x1 = x_of(self.limits[0]), x_of(self.limits[1])
            p.setPen(QPen(QColor(220, 220, 220), 1.2, Qt.PenStyle.DashLine))
            p.drawLine(QPointF(x0, plot.bottom()), QPointF(x1, plot.top()))
            p.setPen(QPen(QColor(255, 200, 40), 2))
            p.drawLine(QPointF(x0, plot.top()), QPointF(x0, plot.bottom()))
            p.drawLine(QPointF(x1, plot.top()), QPointF(x1, plot.bottom()))

        p.setPen(QColor(200, 200, 200))
        base = QRectF(plot.left(), plot.bottom() + 2, plot.width(), text_h + 2)
        p.drawText(base, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, f"{lo:.4g}")
        p.drawText(base, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop, f"{hi:.4g}")
        p.drawText(base, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
                   "log count" if self.log else "count")
        p.end()


# ---------------------------------------------------------------------------- the panel
def _decimals(span: float) -> int:
    """Spin-box decimals for data spanning ``span`` intensity units (about 4 significant digits)."""
    if not span > 0 or not math.isfinite(span):
        return 2
    return int(min(6, max(1, 3 - math.floor(math.log10(span)))))


class WindowLevelWidget(QWidget):
    """Window and level of the selected image layer: fields, presets, histogram and W/L drag.

    The panel follows the selected image layer (selecting a labels layer keeps the last image);
    ``window``/``level`` fields and the layer's ``contrast_limits`` stay in sync both ways; every
    image layer's window is remembered in its metadata (and per case and sequence name, for a
    layer made anew, e.g. after co-registration) and given back when the layer is selected again.
    """

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        #: The shared state of this viewer's case (see `workspace.Workspace`).
        self.workspace = workspace if workspace is not None else Workspace.of(napari_viewer)
        #: The image layer the panel shows and changes (None when the viewer has none).
        self.layer: Any = None
        self._samples: dict[int, tuple[np.ndarray, wl.Histogram]] = {}
        #: Windows by (case id, sequence name): given to a layer made anew for the same sequence.
        self.memory: dict[tuple[str, str], tuple[float, float]] = {}
        self._syncing = False
        self._applying = False
        self._connections: list[tuple[Any, Callable]] = []

        self.layer_label = QLabel("no image layer")
        self.layer_label.setWordWrap(True)
        self.width_spin = self._spin(minimum=1e-6)
        self.level_spin = self._spin(minimum=-1e9)
        self.width_spin.valueChanged.connect(self._on_width)
        self.level_spin.valueChanged.connect(self._on_level)
        self.limits_label = QLabel("")
        form = QFormLayout()
        form.addRow("window", self.width_spin)
        form.addRow("level", self.level_spin)
        form.addRow("limits", self.limits_label)

        self.preset = QComboBox()
        self.preset.activated.connect(self._on_preset)
        self.histogram = HistogramView()
        self.log_check = QCheckBox("log scale")
        self.log_check.toggled.connect(self.histogram.set_log)
        self.drag_check = QCheckBox("W/L drag (right button or Ctrl+left)")
        self.drag_check.setToolTip("drag horizontally: window; vertically: level "
                                   "(active layer in pan/zoom mode)")
        self.drag_check.setChecked(True)
        self.drag_check.toggled.connect(self._on_drag_toggled)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        checks = QHBoxLayout()
        checks.addWidget(self.log_check)
        checks.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.layer_label)
        layout.addLayout(form)
        layout.addWidget(self.preset)
        layout.addWidget(self.histogram, 1)
        layout.addLayout(checks)
        layout.addWidget(self.drag_check)
        layout.addWidget(self.status)
        layout.addStretch(1)

        #: The W/L mouse drag on the main canvas; it adjusts the panel's layer.
        self.drag = attach_window_level_drag(self.viewer, target=lambda: self.layer)
        self._connect(self.viewer.layers.selection.events.active, self._on_active)
        self._connect(self.viewer.layers.events.inserted, self._on_inserted)
        self._connect(self.viewer.layers.events.removed, self._on_removed)
        for layer in self.viewer.layers:
            self._watch(layer)
        connections, drag = self._connections, self.drag
        self.destroyed.connect(lambda *_: _disconnect(connections, drag))
        self._fill_presets()
        self._on_active()

    # ------------------------------------------------------------------ wiring
    @staticmethod
    def _spin(*, minimum: float) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(minimum, 1e9)
        spin.setKeyboardTracking(False)
        spin.setDecimals(2)
        return spin

    def _connect(self, emitter: Any, callback: Callable) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _watch(self, layer: Any) -> None:
        if is_window_layer(layer):
            self._connect(layer.events.contrast_limits, self._on_layer_contrast)
            self._connect(layer.events.data, self._on_layer_data)

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        if not is_window_layer(layer):
            return
        key = _sequence_key(layer)
        if remembered_window(layer) is None and key[0] and key in self.memory:  # a case's sequence
            set_window(layer, *self.memory[key])
        else:
            restore_window(layer)
        self._watch(layer)
        remember_window(layer)

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        self._samples.pop(id(layer), None)
        for emitter, cb in [c for c in self._connections if getattr(c[0], "source", None) is layer]:
            emitter.disconnect(cb)
            self._connections.remove((emitter, cb))
        if layer is self.layer:
            self.bind(default_target(self.viewer))

    def _on_active(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if is_window_layer(active):
            self.bind(active)
        elif self.layer is None or self.layer not in self.viewer.layers:
            self.bind(default_target(self.viewer))

    def _on_drag_toggled(self, on: bool) -> None:
        self.drag.enabled = bool(on)

    # ------------------------------------------------------------------ binding
    def bind(self, layer: Any) -> None:
        """Show and change ``layer`` (an image layer, or None); its remembered window is restored."""
        self.layer = layer if is_window_layer(layer) else None
        on = self.layer is not None
        for w in (self.width_spin, self.level_spin, self.preset, self.log_check):
            w.setEnabled(on)
        if not on:
            self.layer_label.setText("no image layer")
            self.histogram.set_histogram(None)
            self.histogram.set_limits(None)
            self.limits_label.setText("")
            return
        self.layer_label.setText(f"layer: <b>{self.layer.name}</b>")
        if remembered_window(self.layer) is None:
            remember_window(self.layer)
        else:
            restore_window(self.layer)
        self._fill_presets()
        span = float(np.subtract(*self.layer.contrast_limits_range[::-1]))
        decimals = _decimals(span)
        for spin in (self.width_spin, self.level_spin):
            spin.blockSignals(True)
            spin.setDecimals(decimals)
            spin.setSingleStep(max(10.0 ** -decimals, round(span / 200.0, decimals)))
            if spin is self.width_spin:
                spin.setMinimum(10.0 ** -decimals)
            spin.blockSignals(False)
        self.histogram.set_histogram(self.sample(self.layer)[1])
        self._show_window()

    def sample(self, layer: Any) -> tuple[np.ndarray, wl.Histogram]:
        """The inside-head sample of ``layer``'s voxels and its histogram (computed once per layer
        and data; a sub-grid of at most 1 million voxels, so a 1 mm head takes ~10 ms)."""
        key = id(layer)
        if key not in self._samples:
            data = layer.data[-1] if layer.multiscale else layer.data  # the coarsest level suffices
            values = wl.head_sample(data)
            hist = wl.histogram(values, step=wl.sample_step(tuple(data.shape)))
            self._samples[key] = (values, hist)
        return self._samples[key]

    def _show_window(self) -> None:
        if self.layer is None:
            return
        width, level = get_window(self.layer)
        self._syncing = True
        try:
            self.width_spin.setValue(width)
            self.level_spin.setValue(level)
        finally:
            self._syncing = False
        if not self._applying:  # the window no longer is a preset's
            self.status.setText("")
            self.preset.setCurrentIndex(0)
        lo, hi = self.layer.contrast_limits
        self.limits_label.setText(f"{lo:.6g} – {hi:.6g}")
        self.histogram.set_limits((lo, hi))

    def _on_layer_contrast(self, event: Any) -> None:
        layer = event.source
        width, level = remember_window(layer)
        self.memory[_sequence_key(layer)] = (width, level)
        if layer is self.layer:
            self._show_window()

    def _on_layer_data(self, event: Any) -> None:
        self._samples.pop(id(event.source), None)
        if event.source is self.layer:
            self.histogram.set_histogram(self.sample(self.layer)[1])

    # ------------------------------------------------------------------ fields
    def _on_width(self, value: float) -> None:
        if not self._syncing and self.layer is not None:
            set_window(self.layer, value, get_window(self.layer)[1])

    def _on_level(self, value: float) -> None:
        if not self._syncing and self.layer is not None:
            set_window(self.layer, get_window(self.layer)[0], value)

    # ------------------------------------------------------------------ presets
    def dicom_window(self, layer: Any) -> tuple[float, float] | None:
        """The DICOM WindowWidth/WindowCenter of ``layer``'s sequence, or None: from the layer's
        metadata, else from the workspace's case (as loaded or co-registered) by sequence name."""
        info = layer.metadata.get(KEY) or {}
        found = wl.dicom_window(info)
        if found is not None:
            return found
        case_id, name = _sequence_key(layer)
        for case in (self.workspace.case, self.workspace.loaded_case):
            if case is not None and case.case_id == case_id and name in case.names:
                found = wl.dicom_window(case[name].meta)
                if found is not None:
                    return found
        return None

    def _fill_presets(self) -> None:
        self.preset.blockSignals(True)
        self.preset.clear()
        self.preset.addItem("window preset…", None)
        if self.layer is not None:
            found = self.dicom_window(self.layer)
            if found is not None:
                self.preset.addItem(f"DICOM window (W {found[0]:g}, L {found[1]:g})", DICOM_PRESET)
        for name, (lo, hi) in wl.MRI_PERCENTILE_PRESETS.items():
            self.preset.addItem(f"MRI {lo:g}–{hi:g} % inside the head", f"mri {name}")
        self.preset.insertSeparator(self.preset.count())
        for name, (width, level) in wl.CT_PRESETS.items():
            self.preset.addItem(f"CT {name} (W {width:g}, L {level:g} HU)", f"ct {name}")
        self.preset.setCurrentIndex(0)
        self.preset.blockSignals(False)

    def preset_keys(self) -> list[str]:
        """The presets the combo box offers now (``dicom`` only when the sequence has the tags)."""
        return [self.preset.itemData(i) for i in range(self.preset.count()) if self.preset.itemData(i)]

    def _on_preset(self, index: int) -> None:
        key = self.preset.itemData(index)
        if key:
            try:
                self.apply_preset(key)
            except Exception as exc:  # a blank image, a missing DICOM window: say so, stay usable
                self.status.setText(str(exc))
                log.warning("window preset %s failed: %s", key, exc)

    def apply_preset(self, key: str) -> tuple[float, float]:
        """Apply a preset to the panel's layer and return its ``(width, level)``.

        ``key`` is ``"dicom"`` or one of `napari_mriseg.core.windowing.preset_names`
        (``"ct brain"``, ``"mri 1-99%"``...). Raises `OptionError` for an unknown key, and when
        there is no image layer or no DICOM window.
        """
        if self.layer is None:
            raise OptionError("no image layer selected: select an image layer first")
        if key == DICOM_PRESET:
            found = self.dicom_window(self.layer)
            if found is None:
                raise OptionError(f"{self.layer.name} has no DICOM WindowCenter/WindowWidth")
            width, level = found
        else:
            if key not in wl.preset_names():
                raise OptionError(f"window preset must be one of {', '.join(map(repr, wl.preset_names()))} "
                                  f"or 'dicom'; got {key!r}")
            width, level = wl.preset_window(key, self.sample(self.layer)[0])
        self._applying = True
        try:
            set_window(self.layer, width, level)
        finally:
            self._applying = False
        self.preset.setCurrentIndex(max(0, self.preset.findData(key)))
        self.status.setText(f"{self.layer.name}: {self.preset_label(key)}")
        return width, level

    def preset_label(self, key: str) -> str:
        """The combo box's text for preset ``key`` (``key`` itself if it is not offered now)."""
        index = self.preset.findData(key)
        return self.preset.itemText(index) if index >= 0 else key


def _disconnect(connections: list[tuple[Any, Callable]], drag: WindowLevelDrag) -> None:
    """Undo a panel's connections when its Qt object is gone (holds no reference to the panel)."""
    for emitter, cb in connections:
        try:
            emitter.disconnect(cb)
        except Exception:  # noqa: BLE001 - the layer or viewer may be gone already
            pass
    connections.clear()
    drag.detach()
