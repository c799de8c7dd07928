"""Linked multi-planar views: axial, coronal and sagittal canvases beside napari's main canvas.

`MultiViewWidget` is a dock panel holding three extra napari canvases (one `ViewerModel` each,
made by `_napari_adapter`, the only module touching napari internals), linked to the main viewer:

* **Layers**: each image and labels layer of the main viewer has a mirror in every view that
  holds the SAME numpy array (no copy). Visibility, opacity, window (contrast limits), colormap,
  selected label, brush and mode follow the main layer; what changes in a view (keys, the W/L
  drag of `_window_level`) goes back to it. The selection follows the main viewer's. An image
  hidden in a view under an opaque image that covers it is not sliced there (same picture, less
  work).
* **One cursor** in world mm (LPS listed ``(S, P, L)``, napari's world axes), snapped to the slice
  grid: a click (pan/zoom mode) in any 2D canvas, a slider or Ctrl+wheel moves it; each canvas
  shows the slice through it and a crosshair (drawn over the canvas with QPainter, so moving it
  costs no napari work) marks it. Only canvases whose slice changed are resliced.
* **Painting** in any view writes into the shared labels array; the other canvases showing the
  painted voxels are refreshed (coalesced to one refresh per `REFRESH_MS` during a stroke), and
  the finished stroke becomes an undo step of the main labels layer (Ctrl+Z in any canvas).
* **Orientation**: radiological views (`views.set_plane`); R/L, A/P, S/I letters at each
  canvas' edges, the main canvas' included; a readout gives the cursor in mm, its voxel indices
  in the reference file's grid and the value of every sequence under it.
* **Oblique**: a plane through the cursor at angles set in the panel (or through a line drawn in a
  shapes layer), resampled in mm by `napari_mriseg.core.reslice`, in a fourth view.
* **3D**: the main canvas renders one sequence as a volume and the labels as iso-surfaces, with a
  clipping plane through the cursor (axial, coronal, sagittal or the oblique plane).

Speed (``benchmarks/bench_views.py``): a cursor move does all its work in one event-loop turn, so
each canvas draws once and the window composes once (with a QOpenGLWidget in it, Qt composes the
WHOLE window through OpenGL on every update: 13-16 ms with software GL on Xvfb, the floor of any
update). Hence the crosshairs and the readout are updated synchronously (1-2 ms) rather than from
a timer, and the readout is a `Readout`, which never asks for a new layout (a QLabel's ``setText``
re-lays out the window: one more composition per move). Each view slices its layers once per move
(`_napari_adapter.set_dims_point`), without thumbnails (`mute_thumbnail`) or a transform rebuild
(`skip_unchanged_matrix`); a brush stroke redraws only the painted box in the other canvases
(`refresh_labels_box`), in the same turn as the painting canvas.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QLineF, QObject, QSize, Qt, QTimer
from qtpy.QtGui import QColor, QFontDatabase, QKeySequence, QPainter, QPen
from qtpy.QtWidgets import (
    QAction,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..core.convert import grid_from_layer_transform
from ..core.reslice import Plane, oblique_plane, plane_from_line, reslice_array, screen_markers
from ..core.volume import Grid
from . import _napari_adapter as adapter
from .layers import KEY, LABEL_NAMES, grid_from_dict
from .views import PLANES, camera, set_plane
from .workspace import Workspace

log = logging.getLogger(__name__)

__all__ = ["MultiViewWidget"]

#: Layer properties copied from a main layer to its mirrors ("visible" goes through culling).
SYNC_DOWN = {
    "common": ("visible", "opacity", "blending", "scale", "translate", "rotate", "shear", "affine", "units"),
    Image: ("colormap", "contrast_limits_range", "contrast_limits", "gamma", "interpolation2d"),
    Labels: ("colormap", "selected_label", "brush_size", "mode", "n_edit_dimensions", "preserve_labels",
             "contiguous", "show_selected_label", "contour"),
}
#: Properties a user can change in a view (keys, W/L drag) that go back to the main layer.
SYNC_UP = {
    Image: ("contrast_limits", "gamma"),
    Labels: ("selected_label", "brush_size", "mode", "n_edit_dimensions", "preserve_labels", "contiguous",
             "show_selected_label"),
}
#: Changes of a main image layer that can hide or uncover others in the views.
_CULL_PROPS = ("visible", "opacity", "blending", "colormap", "scale", "translate", "affine")
#: Colour of each plane: its title, and its trace (a crosshair line) in the other canvases.
PLANE_COLORS = {"axial": "#4fc3f7", "coronal": "#ce93d8", "sagittal": "#ffb74d", "oblique": "#a5d6a7"}
_NORMAL_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
_GRID_CELL = {"axial": (0, 0), "coronal": (0, 1), "sagittal": (1, 0), "oblique": (1, 1)}
#: Camera of the 3D main canvas: looking from above, in front of and right of the patient
#: (world (S, P, L) view direction), superior up.
THREE_D_VIEW = (-0.6, 0.55, 0.45)
RENDERINGS = ("attenuated_mip", "mip", "translucent", "iso", "minip", "average")
LABEL_RENDERINGS = ("iso_categorical", "translucent")
#: During a stroke, the other canvases are refreshed at most once per this many ms.
REFRESH_MS = 30
CROSS_GAP_PX = 8
MARKER_COLOR = "#ffe082"  #: orientation letters
_EDGES = {"top": Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
          "bottom": Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom,
          "left": Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
          "right": Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter}
_OWN = "mriseg-view"  # metadata key of the oblique view's own layers (never mirrored)


class CanvasOverlay(QWidget):
    """Drawn over a canvas: orientation letters at its edges and the crosshair (QPainter).

    One widget, no children: the letters are painted with the lines (four QLabels per canvas
    were sixteen more widgets for Qt to repaint whenever any canvas redrew). Transparent for the
    mouse; follows the canvas' size and calls ``on_resize`` after a resize.
    """

    MARGINS = (4, 2)  #: letters' distance from the edges, pixels (x, y)

    def __init__(self, canvas: QWidget, on_resize: Callable[[], None] | None = None) -> None:
        super().__init__(canvas)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.on_resize = on_resize
        #: crosshair segments in canvas pixels: ``((x0, y0), (x1, y1), colour)``
        self.lines: list[tuple[tuple[float, float], tuple[float, float], str]] = []
        #: the letter shown at each edge ("top", "bottom", "left", "right")
        self.markers: dict[str, str] = {}
        self.paints = 0
        font = self.font()
        font.setBold(True)
        font.setPixelSize(13)
        self.setFont(font)
        canvas.installEventFilter(self)
        self.setGeometry(canvas.rect())
        self.show()  # a child added to a visible widget stays hidden until shown

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Resize:
            self.setGeometry(obj.rect())
            if self.on_resize is not None:
                self.on_resize()
        return False

    def set_markers(self, markers: dict[str, str] | None) -> None:
        """Show ``{"top": "A", ...}`` at the edges (None: no letters, e.g. in 3D)."""
        markers = {k: v for k, v in (markers or {}).items() if k in _EDGES and v}
        if markers != self.markers:
            self.markers = markers
            self.update()

    def text(self) -> dict[str, str]:
        """The letters shown, by edge."""
        return {edge: self.markers.get(edge, "") for edge in _EDGES}

    def set_lines(self, lines: list) -> None:
        """Draw these crosshair segments (canvas pixels) from the next paint on."""
        if lines != self.lines:
            self.lines = lines
            self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.paints += 1
        if not (self.lines or self.markers):
            return
        p = QPainter(self)
        pen = QPen()
        pen.setWidthF(1.5)
        for (x0, y0), (x1, y1), color in self.lines:
            pen.setColor(QColor(color))
            p.setPen(pen)
            p.drawLine(QLineF(x0, y0, x1, y1))
        if self.markers:
            p.setPen(QColor(MARKER_COLOR))
            mx, my = self.MARGINS
            box = self.rect().adjusted(mx, my, -mx, -my)
            for edge, letter in self.markers.items():
                p.drawText(box, _EDGES[edge], letter)
        p.end()


class Readout(QWidget):
    """Read-only text of a fixed number of lines, word-wrapped (the cursor readout).

    A QLabel asks its window for a new layout on every ``setText``; in a dock of napari's main
    window that re-lays out all docks and composes the whole window once more per cursor move
    (about 15 ms with software OpenGL). This widget only repaints itself. The text can be copied
    (context menu, Ctrl+C).
    """

    def __init__(self, lines: int = 4, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setFixedHeight(lines * self.fontMetrics().lineSpacing() + 6)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        copy = QAction("Copy", self)
        copy.setShortcut(QKeySequence.StandardKey.Copy)
        copy.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        copy.triggered.connect(lambda: QApplication.clipboard().setText(self._text))
        self.addAction(copy)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)

    def text(self) -> str:
        """The text shown."""
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 - QLabel's name
        """Show ``text`` (repaints this widget only)."""
        if text != self._text:
            self._text = text
            self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(240, self.height())

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(self.rect().adjusted(2, 2, -2, -2),
                   int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap), self._text)
        p.end()


def _collapsible(title: str) -> tuple[QGroupBox, QWidget]:
    """A checkable group box whose body shows only while it is checked."""
    box = QGroupBox(title)
    box.setCheckable(True)
    box.setChecked(False)
    body = QWidget()
    body.setVisible(False)
    lay = QVBoxLayout(box)
    lay.setContentsMargins(4, 2, 4, 2)
    lay.addWidget(body)
    box.toggled.connect(body.setVisible)
    return box, body


def _signs(model: Any) -> tuple[float, float]:
    """(+1 or -1) screen direction of increasing row and column world values of a 2D canvas."""
    vert, horiz = camera(model).orientation2d
    return (1.0 if getattr(vert, "value", vert) == "down" else -1.0,
            1.0 if getattr(horiz, "value", horiz) == "right" else -1.0)


def _row_col(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """World ``(S, P, L)`` directions of screen-down and screen-right of a 2D canvas."""
    dims = model.dims
    if dims.ndisplay != 2 or dims.ndim < 3:
        return None
    lead = dims.ndim - 3
    (r, c), (sr, sc) = dims.displayed, _signs(model)
    row, col = np.zeros(3), np.zeros(3)
    row[r - lead], col[c - lead] = sr, sc
    return row, col


def _to_pixels(model: Any, size: tuple[int, int], rc_world: np.ndarray) -> np.ndarray:
    """Canvas pixels ``(..., (x, y))`` of ``(..., (row, col))`` world values of the displayed axes."""
    cam = camera(model)
    centre, zoom = np.asarray(cam.center[-2:], float), float(cam.zoom)
    (sr, sc), (w, h) = _signs(model), size
    rc = np.asarray(rc_world, float)
    return np.stack([w / 2 + (rc[..., 1] - centre[1]) * zoom * sc, h / 2 + (rc[..., 0] - centre[0]) * zoom * sr], -1)


def _cross_lines(model: Any, size: tuple[int, int], cursor_rc: np.ndarray, lo_rc: np.ndarray, hi_rc: np.ndarray,
                 colors: tuple[str, str]) -> list:
    """Crosshair segments (pixels) through ``cursor_rc`` spanning the box ``lo_rc..hi_rc`` (world,
    displayed axes), with a gap at the cursor; ``colors``: (horizontal line, vertical line)."""
    x, y = _to_pixels(model, size, cursor_rc)
    (xa, ya), (xb, yb) = _to_pixels(model, size, np.stack([lo_rc, hi_rc]))
    (x0, x1), (y0, y1), g = sorted((xa, xb)), sorted((ya, yb)), CROSS_GAP_PX
    out = []
    for a, b in ((x0, x - g), (x + g, x1)):
        if b > a:
            out.append(((float(a), float(y)), (float(b), float(y)), colors[0]))
    for a, b in ((y0, y - g), (y + g, y1)):
        if b > a:
            out.append(((float(x), float(a)), (float(x), float(b)), colors[1]))
    return out


def _snap(dims: Any, point: np.ndarray) -> np.ndarray:
    """``point`` (world) clipped to ``dims``' range and snapped to its slice grid."""
    out = np.asarray(point, dtype=float).copy()
    for a, rng in enumerate(dims.range[: len(out)]):
        step = rng.step or 1.0
        out[a] = min(max(rng.start + round((out[a] - rng.start) / step) * step, rng.start), rng.stop)
    return out


def _mirrorable(layer: Any) -> bool:
    return isinstance(layer, (Image, Labels)) and _OWN not in layer.metadata


def _layer_grid(layer: Layer) -> Grid:
    """The world grid of a 3D layer's data (from its scale, translate and affine)."""
    return grid_from_layer_transform(np.shape(layer.data)[-3:], layer.scale, layer.translate,
                                     layer.affine.affine_matrix)


def _opaque(layer: Layer) -> bool:
    """An image that hides what lies under it."""
    if not (isinstance(layer, Image) and layer.visible and not layer.rgb and layer.opacity >= 0.999
            and str(layer.blending) in ("translucent", "translucent_no_depth", "opaque")):
        return False
    return bool(np.min(np.asarray(layer.colormap.colors)[:, 3]) >= 0.999)


def _covers(top: Layer, low: Layer) -> bool:
    (a0, a1), (b0, b1) = np.asarray(top.extent.world), np.asarray(low.extent.world)
    tol = 0.5 * np.maximum(np.asarray(top.extent.step), np.asarray(low.extent.step))
    return len(a0) == len(b0) and bool(np.all(a0 <= b0 + tol) and np.all(a1 >= b1 - tol))


class _View:
    """One extra canvas: a plane, its napari model and widget, mirrors of the main layers."""

    def __init__(self, name: str, on_resize: Callable[[], None]) -> None:
        self.name = name
        self.model, self.qt = adapter.make_canvas(f"mriseg {name}")
        self.overlay = CanvasOverlay(adapter.canvas_widget(self.qt), on_resize)
        #: main layer -> its mirror in this view
        self.mirrors: dict[Layer, Layer] = {}
        self.frame: QWidget | None = None
        self.wl_drag: Any = None
        #: True once the user panned or zoomed (the view is no longer refitted on resizes)
        self.user_camera = False
        #: connections to this view's own models (dropped with the view)
        self.conns: list[tuple[Any, Callable]] = []


class MultiViewWidget(QWidget):
    """Axial, coronal and sagittal views linked to napari's main canvas (see the module doc).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The main viewer.
    workspace : Workspace, optional
        The viewer's shared case state (found or made by `Workspace.of` when omitted).

    Attributes
    ----------
    views : dict of str to _View
        ``"axial"``, ``"coronal"``, ``"sagittal"`` (and ``"oblique"`` while shown), while linked.
    main_overlay : CanvasOverlay
        Letters and crosshair over napari's main canvas.
    """

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        adapter.check_napari()  # loud failure on an untested napari, before anything is built
        self.viewer = adapter.unwrap_viewer(napari_viewer)
        #: The shared state of this viewer's case (see `workspace.Workspace`).
        self.workspace = workspace if workspace is not None else Workspace.of(napari_viewer)
        self.views: dict[str, _View] = {}
        self._cursor: np.ndarray | None = None
        self._conns: list[tuple[Any, Callable]] = []
        self._layer_conns: dict[Layer, list[tuple[Any, Callable]]] = {}
        self._pushing = self._syncing = self._refreshing = self._forwarding = False
        self._tokens: dict[Layer, object] = {}
        #: layers to redraw after an edit: layer -> data-index box (lo, hi) painted, None: all of it
        self._pending: dict[Layer, tuple[np.ndarray, np.ndarray] | None] = {}
        self._last_refresh = 0.0
        self._oblique: dict[str, Any] = {"plane": None, "from_line": None, "line_cursor": None, "result": None,
                                         "reset": False}
        self._saved_3d: dict[str, Any] = {}
        self._shown = self._docked = self._fitting = False
        self._refresh_timer = self._timer(REFRESH_MS, self._flush_refresh)
        self._dead: list[tuple[_View, Layer]] = []
        self._dead_timer = self._timer(0, self._remove_dead)
        self._oblique_timer = self._timer(0, self._update_oblique)
        self._build_ui()
        self.main_overlay = CanvasOverlay(adapter.canvas_widget(adapter.main_qt_viewer(self.viewer)),
                                          lambda: self._update_cross(None))
        window = adapter.main_window(self.viewer)
        if window is not None:
            window.installEventFilter(self)  # free the extra canvases when the window closes
        self._main_click = self._make_click()
        self.viewer.mouse_drag_callbacks.append(self._main_click)
        cam = camera(self.viewer)
        self._connect(self.viewer.dims.events.point, lambda e: self._follow(self.viewer))
        for emitter in (self.viewer.dims.events.order, self.viewer.dims.events.ndisplay, cam.events.orientation):
            self._connect(emitter, self._on_main_view)
        for emitter in (cam.events.center, cam.events.zoom):
            self._connect(emitter, lambda e: self._update_cross(None))
        self._connect(self.viewer.layers.events.inserted, self._on_inserted)
        self._connect(self.viewer.layers.events.removed, self._on_removed)
        self._connect(self.viewer.layers.events.moved, self._on_moved)
        self._connect(self.viewer.layers.selection.events.active, self._on_active)
        self.workspace.case_changed.connect(self._on_case_changed)
        for layer in list(self.viewer.layers):
            self._watch(layer)
        self._on_main_view()  # the views themselves are built when the panel is first shown

    def _timer(self, ms: int, slot: Callable) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(ms)
        timer.timeout.connect(slot)
        return timer

    # ================================================================== UI
    def _build_ui(self) -> None:
        self.linked_check = QCheckBox("linked views")
        self.linked_check.setChecked(True)
        self.linked_check.toggled.connect(self.set_linked)
        self.cross_check = QCheckBox("crosshair")
        self.cross_check.setChecked(True)
        self.cross_check.toggled.connect(lambda _=None: self._update_crosses())
        reset = QPushButton("Reset views")
        reset.clicked.connect(self.reset_views)
        top = QHBoxLayout()
        for w in (self.linked_check, self.cross_check):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(reset)

        self.grid_widget = QWidget()
        self.grid = QGridLayout(self.grid_widget)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(4)
        # fixed height, and no new layout of the window when its text changes (see `Readout`)
        self.readout = Readout(lines=4)

        self.oblique_box, body = _collapsible("Oblique plane through the cursor")
        self.oblique_box.toggled.connect(self.set_oblique)
        self.oblique_base = QComboBox()
        self.oblique_base.addItems(PLANES)
        self.oblique_base.currentIndexChanged.connect(self._on_angles)
        self.pixel_spin = self._spin(0.0, 20.0, 2, 0.25, suffix=" mm", special="auto")
        self.pixel_spin.valueChanged.connect(lambda _=None: self._schedule_oblique(reset=True))
        self.oblique_source = QComboBox()
        self.oblique_source.currentIndexChanged.connect(lambda _=None: self._schedule_oblique(reset=True))
        self.angle_spins = [self._spin(-180.0, 180.0, 1, 5.0, suffix=" °") for _ in range(3)]
        for spin in self.angle_spins:
            spin.valueChanged.connect(self._on_angles)
        line_btn = QPushButton("From line")
        line_btn.setToolTip("the plane holding the last line drawn in the selected shapes layer and the "
                            "main canvas' viewing direction")
        line_btn.clicked.connect(self._oblique_from_selected_line)
        g = QGridLayout(body)
        cells = [("from", self.oblique_base), ("pixel", self.pixel_spin), ("sequence", self.oblique_source),
                 ("about R-L", self.angle_spins[0]), ("about A-P", self.angle_spins[1]),
                 ("about S-I", self.angle_spins[2])]
        for k, (text, w) in enumerate(cells):
            g.addWidget(QLabel(text), k % 3, 2 * (k // 3))
            g.addWidget(w, k % 3, 2 * (k // 3) + 1)
        g.addWidget(line_btn, 3, 0, 1, 4)

        self.box3d, body3d = _collapsible("3D in the main canvas")
        self.box3d.toggled.connect(lambda on: self.set_3d(on))
        self.volume_source = QComboBox()
        self.rendering = QComboBox()
        self.rendering.addItems(RENDERINGS)
        self.label_rendering = QComboBox()
        self.label_rendering.addItems(["iso-surfaces", "translucent"])
        for combo in (self.volume_source, self.rendering, self.label_rendering):
            combo.currentIndexChanged.connect(lambda _=None: self._apply_3d())
        self.clip_check = QCheckBox("clip at cursor")
        self.clip_plane = QComboBox()
        self.clip_plane.addItems([*PLANES, "oblique"])
        self.clip_flip = QCheckBox("flip")
        self.clip_check.toggled.connect(lambda _=None: self._update_clipping())
        self.clip_plane.currentIndexChanged.connect(lambda _=None: self._update_clipping())
        self.clip_flip.toggled.connect(lambda _=None: self._update_clipping())
        g3 = QGridLayout(body3d)
        for k, (text, w) in enumerate([("sequence", self.volume_source), ("rendering", self.rendering),
                                       ("labels", self.label_rendering)]):
            g3.addWidget(QLabel(text), k, 0)
            g3.addWidget(w, k, 1)
        g3.addWidget(self.clip_check, 0, 2)
        g3.addWidget(self.clip_plane, 1, 2)
        g3.addWidget(self.clip_flip, 2, 2)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.grid_widget, 1)
        for w in (self.readout, self.oblique_box, self.box3d, self.status):
            layout.addWidget(w)
        self.setMinimumWidth(360)
        # expanding: napari's dock then adds no stretch under the panel, the views get the height
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    @staticmethod
    def _spin(lo: float, hi: float, decimals: int, step: float, *, suffix: str = "",
              special: str = "") -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setDecimals(decimals)
        spin.setSingleStep(step)
        spin.setSuffix(suffix)
        spin.setSpecialValueText(special)
        spin.setKeyboardTracking(False)
        return spin

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(560, 640)  # leaves napari's main canvas most of a 1600-pixel-wide window

    # ================================================================== wiring, lifetime
    def _connect(self, emitter: Any, callback: Callable, *, layer: Layer | None = None,
                 view: _View | None = None) -> None:
        emitter.connect(callback)
        conns = view.conns if view is not None else (self._conns if layer is None
                                                     else self._layer_conns.setdefault(layer, []))
        conns.append((emitter, callback))

    @staticmethod
    def _disconnect_all(conns: list[tuple[Any, Callable]]) -> None:
        for emitter, cb in conns:
            try:
                emitter.disconnect(cb)
            except (RuntimeError, TypeError, ValueError):  # pragma: no cover - already gone
                pass
        conns.clear()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Close:
            self.close_views()
        return False

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._shown:  # built on first show (a hidden tab costs nothing); fitted once sized
            self._shown = True
            if self.linked_check.isChecked() and self.linked_check.isEnabled():
                self.set_linked(True)
            QTimer.singleShot(0, self.reset_views)
        else:
            self._push()  # the views were not resliced while hidden: catch up

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.close_views()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        # napari's "x" on a dock only un-parents the panel: free everything then
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None and self._docked:
                self.close_views()
            self._docked = self._docked or self.parent() is not None
        return super().event(event)

    def close_views(self) -> None:
        """Free every extra canvas and disconnect from the main viewer (idempotent)."""
        for timer in (self._refresh_timer, self._oblique_timer, self._dead_timer):
            timer.stop()
        self._dead = []
        self._remove_views()
        self._disconnect_all(self._conns)
        for layer in list(self._layer_conns):
            self._disconnect_all(self._layer_conns.pop(layer))
        if self._main_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._main_click)
        self.main_overlay.set_lines([])
        self.main_overlay.set_markers(None)
        self.linked_check.blockSignals(True)
        self.linked_check.setChecked(False)
        self.linked_check.setEnabled(False)  # disconnected for good: open a new panel
        self.linked_check.blockSignals(False)
        try:
            self.workspace.case_changed.disconnect(self._on_case_changed)
        except (RuntimeError, TypeError):
            pass

    # ================================================================== the layout
    @property
    def linked(self) -> bool:
        """True while the three views are shown and linked."""
        return bool(self.views)

    def set_linked(self, on: bool) -> None:
        """Show the linked views (building them) or remove them (freeing their canvases)."""
        if self.linked_check.isChecked() != bool(on):
            self.linked_check.setChecked(bool(on))  # re-enters through the toggled signal
            return
        if on and not self.views and self.linked_check.isEnabled():
            for name in PLANES:
                self._add_view(name)
            if self.oblique_box.isChecked():
                self.set_oblique(True)
            self.reset_views()
        elif not on and self.views:
            self._remove_views()

    def _add_view(self, name: str) -> _View:
        frame = QWidget()
        title = QLabel(name.capitalize())
        title.setStyleSheet(f"color: {PLANE_COLORS[name]}; font-weight: bold;")
        lay = QVBoxLayout(frame)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(title)
        view = _View(name, lambda n=name: self._on_view_resized(self.views.get(n)))
        view.qt.setMinimumSize(160, 160)
        lay.addWidget(view.qt, 1)
        view.frame = frame
        self.grid.addWidget(frame, *_GRID_CELL[name])
        self.views[name] = view
        model, cam = view.model, camera(view.model)
        if name != "oblique":
            for layer in self.viewer.layers:
                if _mirrorable(layer):
                    self._add_mirror(view, layer)
            self._update_culling()
            self._connect(model.dims.events.point, lambda e, v=view: self._follow(v.model), view=view)
            model.mouse_drag_callbacks.append(self._make_click())
        for emitter in (cam.events.center, cam.events.zoom, cam.events.orientation):
            self._connect(emitter, lambda e, v=view: self._on_view_camera(v), view=view)
        self._connect(cam.events.orientation, lambda e, v=view: self._update_markers(v), view=view)
        self._attach_window_level(view)
        return view

    def _attach_window_level(self, view: _View) -> None:
        """The radiology W/L drag of `_window_level` on a view; it adjusts the MAIN layer."""
        from ._window_level import attach_window_level_drag, default_target

        def target(v: _View = view) -> Any:
            if v.name == "oblique":
                return self._source_layer(self.oblique_source.currentText())
            layer = default_target(v.model)
            return next((m for m, s in v.mirrors.items() if s is layer), None)

        view.wl_drag = attach_window_level_drag(view.model, target=target)

    def _remove_views(self) -> None:
        for name in list(self.views):
            self._remove_view(name)

    def _remove_view(self, name: str) -> None:
        view = self.views.pop(name)
        for mirror in view.mirrors.values():
            self._disconnect_all(self._layer_conns.pop(mirror, []))
            self._pending.pop(mirror, None)
        view.mirrors.clear()
        self._disconnect_all(view.conns)
        view.model.mouse_drag_callbacks.clear()
        view.wl_drag = None
        adapter.close_canvas(view.qt)
        view.frame.setParent(None)
        view.frame.deleteLater()

    def reset_views(self) -> None:
        """Radiological planes in every view, each zoomed to fit; cursor kept (or centred)."""
        for view in self.views.values():
            self._fit(view)
        if self._cursor is None or len(self._cursor) != self.viewer.dims.ndim:
            self._cursor = self._centre()
        self._push()

    def _fit(self, view: _View) -> None:
        """The view's plane, zoomed to fit its canvas; it is refitted on resizes until the user
        pans or zooms it."""
        self._fitting = True
        try:
            if view.name in PLANES and view.model.dims.ndim >= 3:
                set_plane(view.model, view.name)
                self._update_markers(view)
            else:
                view.model.reset_view()
        finally:
            self._fitting = False
        view.user_camera = False

    def _on_view_camera(self, view: _View) -> None:
        if not self._fitting:
            view.user_camera = True
        self._update_cross(view)

    def _on_view_resized(self, view: _View | None) -> None:
        if view is None:
            return
        if not view.user_camera and view.model.layers:
            self._fit(view)
        self._update_cross(view)
    def _plane_views(self) -> list[_View]:
        return [v for n, v in self.views.items() if n in PLANES]

    # ================================================================== layers
    def _watch(self, layer: Layer) -> None:
        """Connect to a main layer: property sync, data, labels edits."""
        if not _mirrorable(layer):
            return
        names = SYNC_DOWN["common"] + SYNC_DOWN[Labels if isinstance(layer, Labels) else Image]
        for name in names:
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                self._connect(emitter, lambda e, ly=layer, n=name: self._sync_down(ly, n), layer=layer)
        self._connect(layer.events.data, lambda e, ly=layer: self._on_main_data(ly), layer=layer)
        if isinstance(layer, Labels):
            self._connect(layer.events.labels_update, lambda e, ly=layer: self._on_dab(None, ly, e), layer=layer)
            self._connect(layer.events.paint, lambda e, ly=layer: self._on_main_paint(ly), layer=layer)
            self._connect(layer.events.set_data, lambda e, ly=layer: self._on_main_set_data(ly), layer=layer)
        self._refresh_sources()

    def _add_mirror(self, view: _View, layer: Layer) -> Layer:
        data, state, kind = layer.as_layer_data_tuple()  # `data` is the layer's own array
        for key in ("experimental_clipping_planes", "rendering", "properties"):
            state.pop(key, None)
        mirror = Layer.create(data, state, kind)
        adapter.mute_thumbnail(mirror)  # no layer list shows it: not recomputed on every slice
        view.mirrors[layer] = mirror
        index = sum(1 for ly in self.viewer.layers[: self.viewer.layers.index(layer)] if ly in view.mirrors)
        view.model.layers.insert(index, mirror)
        adapter.skip_unchanged_matrix(view.qt, mirror)  # a new slice in a 2D view moves no transform
        for name in SYNC_UP[Labels if isinstance(layer, Labels) else Image]:
            self._connect(getattr(mirror.events, name),
                          lambda e, m=layer, s=mirror, n=name: self._sync_up(m, s, n), layer=mirror)
        if isinstance(mirror, Labels):
            from napari.utils.key_bindings import KeyCode, KeyMod

            self._connect(mirror.events.labels_update, lambda e, v=view, s=mirror: self._on_dab(v, s, e),
                          layer=mirror)
            self._connect(mirror.events.paint, lambda e, m=layer, s=mirror: self._on_view_paint(m, s, e),
                          layer=mirror)
            # Ctrl+Z with the focus in a view: the main layer holds the history
            mirror.bind_key(KeyMod.CtrlCmd | KeyCode.KeyZ, lambda _ly, m=layer: m.undo(), overwrite=True)
            mirror.bind_key(KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ, lambda _ly, m=layer: m.redo(),
                            overwrite=True)
        if self.viewer.layers.selection.active is layer:
            view.model.layers.selection.active = mirror
        return mirror

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        if not _mirrorable(layer):
            return
        self._watch(layer)
        first = all(not v.mirrors for v in self._plane_views())
        for view in self._plane_views():
            self._add_mirror(view, layer)
        self._update_culling()
        if first or self._cursor is None or len(self._cursor) != self.viewer.dims.ndim:
            self._cursor = None
            self.reset_views()
        self._update_crosses()
        self._update_readout()

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        for view in self._plane_views():
            mirror = view.mirrors.pop(layer, None)
            if mirror is not None:
                self._disconnect_all(self._layer_conns.pop(mirror, []))
                self._pending.pop(mirror, None)
                mirror.visible = False
                self._dead.append((view, mirror))
        # removed a moment later, all at once: napari runs a full garbage collection per removal
        self._dead_timer.start()
        self._disconnect_all(self._layer_conns.pop(layer, []))
        self._tokens.pop(layer, None)
        self._pending.pop(layer, None)
        if not any(_mirrorable(ly) for ly in self.viewer.layers):
            self._cursor = None  # nothing left to point at (e.g. the viewer is closing)
        self._update_culling()
        self._refresh_sources()
        self._update_readout()
        self._update_crosses()

    def _remove_dead(self) -> None:
        """Take the mirrors of removed main layers out of their views (one batch per view)."""
        dead, self._dead = self._dead, []
        self._pushing = True  # the views' ranges shrink: no cursor ping-pong while they do
        try:
            for view in {id(v): v for v, _ in dead}.values():
                if view.name in self.views and self.views[view.name] is view:
                    with view.model.layers.batched_update():
                        for _, mirror in [d for d in dead if d[0] is view]:
                            if mirror in view.model.layers:
                                view.model.layers.remove(mirror)
        finally:
            self._pushing = False
        if self._cursor is not None and len(self._cursor) == self.viewer.dims.ndim:
            self.set_cursor(self._cursor)  # snapped again: the slice grid may have changed

    def _on_moved(self, event: Any = None) -> None:
        for view in self._plane_views():
            order = [view.mirrors[ly] for ly in self.viewer.layers if ly in view.mirrors]
            for target, mirror in enumerate(order):
                src = view.model.layers.index(mirror)
                if src != target:
                    view.model.layers.move(src, target)
        self._update_culling()

    def _on_active(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        for view in self._plane_views():
            mirror = view.mirrors.get(active)
            view.model.layers.selection.active = mirror
            if mirror is None:
                view.model.layers.selection.clear()

    def _sync_down(self, layer: Layer, name: str) -> None:
        if self._syncing:
            return
        if name != "visible":
            value = getattr(layer, name)
            self._syncing = True
            try:
                for view in self._plane_views():
                    if layer in view.mirrors:
                        setattr(view.mirrors[layer], name, value)
            finally:
                self._syncing = False
        if name in _CULL_PROPS:
            self._update_culling()
        if name in ("visible", "opacity", "colormap", "contrast_limits", "contrast_limits_range", "gamma"):
            self._style_oblique()  # no resampling for a new window or colour
        if name in ("scale", "translate", "affine"):
            self._update_crosses()

    def _sync_up(self, main: Layer, mirror: Layer, name: str) -> None:
        if not self._syncing:
            setattr(main, name, getattr(mirror, name))  # fans out to the other views by _sync_down

    def _update_culling(self) -> None:
        """Mirror visibility: the main layer's, except an image under an opaque image covering it."""
        layers = [ly for ly in self.viewer.layers if _mirrorable(ly)]
        visible = {}
        for k, layer in enumerate(layers):
            hidden = isinstance(layer, Image) and any(_opaque(top) and _covers(top, layer)
                                                      for top in layers[k + 1:] if isinstance(top, Image))
            visible[layer] = layer.visible and not hidden
        for view in self._plane_views():
            for layer, mirror in view.mirrors.items():
                if mirror.visible != visible.get(layer, layer.visible):
                    mirror.visible = visible.get(layer, layer.visible)

    def _on_main_data(self, layer: Layer) -> None:
        for view in self._plane_views():
            mirror = view.mirrors.get(layer)
            if mirror is not None and mirror.data is not layer.data:
                mirror.data = layer.data
        self._schedule_oblique()
        self._update_readout()

    # ================================================================== labels edits
    def _targets(self, main: Layer) -> list[tuple[Any, Layer]]:
        """(model, layer) of every canvas showing labels layer ``main`` (main canvas first)."""
        return [(self.viewer, main)] + [(v.model, v.mirrors[main]) for v in self._plane_views() if main in v.mirrors]

    def _refresh(self, layer: Layer, box: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Redraw ``layer`` in its canvas: only the painted ``box`` of its slice when it can."""
        self._refreshing = True
        try:
            if box is None or not adapter.refresh_labels_box(layer, *box):
                layer.refresh()
        finally:
            self._refreshing = False

    def _add_pending(self, layer: Layer, box: tuple[np.ndarray, np.ndarray] | None) -> None:
        if layer in self._pending:
            old = self._pending[layer]
            box = None if old is None or box is None else (np.minimum(old[0], box[0]), np.maximum(old[1], box[1]))
        self._pending[layer] = box

    def _flush_refresh(self) -> None:
        self._refresh_timer.stop()
        pending, self._pending = self._pending, {}
        self._last_refresh = time.perf_counter()
        for layer, box in pending.items():
            self._refresh(layer, box)

    def _slice_index(self, model: Any, layer: Layer) -> tuple[int, int] | None:
        """(data axis, index) of the slice a 2D canvas shows of ``layer``; None in 3D."""
        if model.dims.ndisplay != 2 or layer.ndim != model.dims.ndim or self._cursor is None:
            return None
        axis = model.dims.not_displayed[-1]
        return axis, int(np.round(layer.world_to_data(self._cursor)[axis]))

    def _on_dab(self, view: _View | None, layer: Layer, event: Any) -> None:
        """One brush step in a canvas: the other canvases whose slice it touched get refreshed.

        At most once per `REFRESH_MS` (and at the end of the stroke), and then at once, in the
        same event-loop turn as the painting canvas' own redraw: the window composes once for
        both (a refresh from a timer would cost a composition of its own). Only the painted box
        is redrawn (`_napari_adapter.refresh_labels_box`).
        """
        if self._refreshing:
            return
        main = layer if view is None else next((m for m, s in view.mirrors.items() if s is layer), None)
        if main is None:
            return
        box = self._dab_box(self.viewer if view is None else view.model, layer, event)
        for model, target in self._targets(main):
            if target is layer or (model is self.viewer and model.dims.ndisplay == 3):
                continue  # the 3D canvas is refreshed once, at the end of the stroke
            where = self._slice_index(model, target)
            if box is None or where is None or box[0][where[0]] <= where[1] < box[1][where[0]]:
                self._add_pending(target, None if where is None else box)
        if self._pending:
            wait_ms = REFRESH_MS - (time.perf_counter() - self._last_refresh) * 1000
            if wait_ms <= 0:
                self._flush_refresh()
            elif not self._refresh_timer.isActive():
                self._refresh_timer.start(int(wait_ms) + 1)  # the stroke's last dabs, if it stops here
        self._schedule_oblique(REFRESH_MS)

    def _dab_box(self, model: Any, layer: Layer, event: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Data-index box ``[lo, hi)`` painted by one brush step (None: unknown, refresh all)."""
        offset, data = getattr(event, "offset", None), getattr(event, "data", None)
        where = self._slice_index(model, layer)
        if offset is None or data is None or where is None or layer.n_edit_dimensions > 2:
            return None
        lo, hi = np.zeros(layer.ndim, int), np.zeros(layer.ndim, int)
        for axis, start, size in zip(model.dims.displayed, offset, np.shape(data)):
            lo[axis], hi[axis] = int(start), int(start) + int(size)
        lo[where[0]], hi[where[0]] = where[1], where[1] + 1
        return lo, hi

    def _on_view_paint(self, main: Layer, mirror: Layer, event: Any) -> None:
        """A stroke finished in a view: it becomes an undo step of the main labels layer."""
        self._forwarding = True
        try:
            moved = adapter.move_undo_step(mirror, main, event.value)
        finally:
            self._forwarding = False
        self._flush_refresh()
        if moved and self.viewer.dims.ndisplay == 3:
            self._refresh(main)

    def _on_main_paint(self, layer: Layer) -> None:
        """A stroke in the main canvas or a panel's edit: the views catch up."""
        if self._refreshing or self._forwarding:
            return  # a view's stroke: its canvases were refreshed brush step by brush step
        for _, target in self._targets(layer)[1:]:
            self._add_pending(target, None)
        self._flush_refresh()
        self._schedule_oblique()

    def _on_main_set_data(self, layer: Layer) -> None:
        """The main labels layer redrew: a new slice, or new voxels on the same slice (undo)."""
        token = adapter.slice_token(layer)
        same = self._tokens.get(layer) is token
        self._tokens[layer] = token
        if same and not self._refreshing:
            for _, target in self._targets(layer)[1:]:
                self._add_pending(target, None)
            self._flush_refresh()
            self._schedule_oblique()

    # ================================================================== the cursor
    @property
    def cursor(self) -> np.ndarray | None:
        """The shared cursor: world mm (LPS listed ``(S, P, L)``, napari's world axes)."""
        return None if self._cursor is None else self._cursor.copy()

    def set_cursor(self, point: Any) -> None:
        """Move the shared cursor to ``point`` (world mm); every canvas follows.

        The cursor snaps to the main viewer's slice grid (the centres of the finest layer's
        voxels), so the crosshair always marks the slices shown.
        """
        p = np.asarray(point, dtype=float).reshape(-1)
        if len(p) != self.viewer.dims.ndim:
            raise ValueError(f"the cursor needs {self.viewer.dims.ndim} world coordinates; got {len(p)}")
        self._cursor = _snap(self.viewer.dims, p)
        self._push()

    def _centre(self) -> np.ndarray:
        rng = self.viewer.dims.range
        point = np.array([(r.start + r.stop) / 2 for r in rng])
        for a in self.viewer.dims.not_displayed:
            point[a] = self.viewer.dims.point[a]
        return _snap(self.viewer.dims, point)

    def _push(self) -> None:
        """Give every canvas the cursor's coordinate along the axes it slices through."""
        c = self._cursor
        if c is None:
            return
        # a hidden panel (another tab) leaves its views alone: they catch up when shown
        views = self._plane_views() if self.isVisible() else []
        self._pushing = True
        try:
            for model in [self.viewer, *(v.model for v in views)]:
                if model.dims.ndim != len(c):
                    continue
                point, target = list(model.dims.point), _snap(model.dims, c)  # as napari's slider would
                changed = [a for a in model.dims.not_displayed if abs(point[a] - target[a]) > 1e-6]
                if changed:
                    for a in changed:
                        point[a] = float(target[a])
                    adapter.set_dims_point(model, point)  # each layer sliced once, not twice
        finally:
            self._pushing = False
        self._update_crosses()
        self._update_readout()
        self._update_clipping()
        self._schedule_oblique()

    def _follow(self, model: Any) -> None:
        """A canvas moved its slice (slider, Ctrl+wheel): the cursor follows."""
        if self._pushing or self._cursor is None or model.dims.ndim != len(self._cursor):
            return
        c = self._cursor.copy()
        for a in model.dims.not_displayed:
            c[a] = model.dims.point[a]
        if not np.allclose(c, self._cursor):
            self._cursor = c
            self._push()

    def _on_main_view(self, event: Any = None) -> None:
        """The main canvas changed plane or 2D/3D: its letters, crosshair and slice."""
        rc = _row_col(self.viewer)
        self.main_overlay.set_markers(None if rc is None else screen_markers(*rc))
        if not self._pushing:
            self._push()

    def _on_case_changed(self, case: Any) -> None:
        self._cursor = None
        self.reset_views()

    def _make_click(self) -> Callable:
        """A mouse-drag callback: a left click without drag (pan/zoom mode) moves the cursor."""
        def on_press(model: Any, event: Any):
            active = model.layers.selection.active
            if (event.type != "mouse_press" or event.button != 1 or tuple(event.modifiers)
                    or model.dims.ndisplay != 2 or getattr(active, "mode", "pan_zoom") != "pan_zoom"):
                return
            start, position = np.asarray(event.pos, float), np.asarray(event.position, float)
            yield
            moved = False
            while event.type == "mouse_move":
                moved = moved or float(np.abs(np.asarray(event.pos, float) - start).max()) > 3
                yield
            if not moved and self._cursor is not None and len(position) == len(self._cursor):
                point = self._cursor.copy()
                point[list(model.dims.displayed)] = position[list(model.dims.displayed)]
                self.set_cursor(point)
        return on_press

    # ================================================================== crosshair, letters, readout
    def _update_markers(self, view: _View) -> None:
        if view.name == "oblique":
            plane = self._oblique["plane"]
            view.overlay.set_markers(None if plane is None else screen_markers(plane.row, plane.col))
            return
        rc = _row_col(view.model)
        view.overlay.set_markers(None if rc is None else screen_markers(*rc))

    def _update_crosses(self) -> None:
        for view in [None, *self.views.values()]:
            self._update_cross(view)

    def _update_cross(self, view: _View | None) -> None:
        """Recompute the crosshair of one canvas (None: the main one) from the cursor and camera."""
        overlay = self.main_overlay if view is None else view.overlay
        model = self.viewer if view is None else view.model
        c = self._cursor
        if not self.cross_check.isChecked() or c is None or model.dims.ndisplay != 2:
            overlay.set_lines([])
            return
        size = (overlay.width(), overlay.height())
        if view is not None and view.name == "oblique":
            res = self._oblique["result"]
            if res is None:
                overlay.set_lines([])
                return
            rc = res.world_to_pixel(c[-3:]) * res.pixel_mm
            hi = (np.asarray(res.image.shape) - 1) * res.pixel_mm
            color = PLANE_COLORS["oblique"]
            overlay.set_lines(_cross_lines(model, size, rc, np.zeros(2), hi, (color, color)))
            return
        if model.dims.ndim != len(c):
            overlay.set_lines([])
            return
        mirrored = [ly for ly in self.viewer.layers if _mirrorable(ly)]
        if not mirrored:
            overlay.set_lines([])
            return
        lo, hi = np.asarray(self.viewer.layers.get_extent(mirrored).world, float)
        r, col = model.dims.displayed[-2:]
        lead = model.dims.ndim - 3
        name = {a + lead: p for p, a in _NORMAL_AXIS.items()}
        colors = (PLANE_COLORS[name.get(r, "oblique")], PLANE_COLORS[name.get(col, "oblique")])
        overlay.set_lines(_cross_lines(model, size, c[[r, col]], lo[[r, col]], hi[[r, col]], colors))

    def cursor_voxel(self) -> tuple[str, tuple[int, ...]] | None:
        """``(layer name, (i, j, k))``: the cursor's voxel in the reference sequence's FILE grid
        (as stored on disk; i the fastest file axis), or None when no layer has a grid."""
        if self._cursor is None:
            return None
        ref = self.workspace.case.reference if self.workspace.case is not None else None
        layers = [ly for ly in self.viewer.layers if _mirrorable(ly) and (ly.metadata.get(KEY) or {}).get("grid")]
        # the reference sequence; else the labels (they live on the reference grid); else the first
        layers.sort(key=lambda ly: (ly.name != ref, not isinstance(ly, Labels)))
        if not layers:
            return None
        grid: Grid = grid_from_dict(layers[0].metadata[KEY]["grid"])
        kji = np.round(grid.world_to_index(self._cursor[-3:])).astype(int)
        return layers[0].name, tuple(int(v) for v in kji[::-1])

    def cursor_values(self) -> dict[str, float | int | None]:
        """The value under the cursor of every image and labels layer (None outside it)."""
        out: dict[str, float | int | None] = {}
        if self._cursor is None:
            return out
        for layer in self.viewer.layers:
            if not _mirrorable(layer) or layer.ndim != len(self._cursor):
                continue
            idx = np.round(layer.world_to_data(self._cursor)).astype(int)
            if np.all(idx >= 0) and np.all(idx < np.asarray(np.shape(layer.data))):
                v = layer.data[tuple(idx)]
                out[layer.name] = int(v) if isinstance(layer, Labels) else float(v)
            else:
                out[layer.name] = None
        return out

    def _update_readout(self) -> None:
        if self._cursor is None or len(self._cursor) < 3:
            self.readout.setText("no cursor: load a case")
            return
        s, p, left = self._cursor[-3:]
        text = f"cursor  x {left:+.1f}  y {p:+.1f}  z {s:+.1f} mm (LPS)"
        vox = self.cursor_voxel()
        if vox is not None:
            text += f"\nvoxel [i j k] {vox[1][0]} {vox[1][1]} {vox[1][2]} of {vox[0]}"
        parts = []
        for name, v in self.cursor_values().items():
            if v is None:
                parts.append(f"{name} –")
            elif isinstance(self.viewer.layers[name], Labels):
                parts.append(f"{name} {v}" + (f" {LABEL_NAMES[v]}" if v in LABEL_NAMES else ""))
            else:
                parts.append(f"{name} {v:.4g}")
        self.readout.setText(text + "\n" + "  ".join(parts))

    # ================================================================== oblique
    def _refresh_sources(self) -> None:
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and _mirrorable(ly)]
        ref = self.workspace.case.reference if self.workspace.case is not None else None
        for combo in (self.oblique_source, self.volume_source):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentText(current if current in names else (ref if ref in names else
                                                                   (names[-1] if names else "")))
            combo.blockSignals(False)

    def _source_layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _labels_main(self) -> Any:
        lab = self.workspace.labels_layer()
        if lab is None:
            lab = next((ly for ly in reversed(self.viewer.layers) if isinstance(ly, Labels) and _mirrorable(ly)),
                       None)
        return lab

    def set_oblique(self, on: bool) -> None:
        """Show (or remove) the oblique view: a plane through the cursor (see the angle fields)."""
        if self.oblique_box.isChecked() != bool(on):
            self.oblique_box.setChecked(bool(on))  # re-enters through the toggled signal
            return
        if on and self.views and "oblique" not in self.views:
            self._add_view("oblique")
            self._schedule_oblique(reset=True)
        elif not on and "oblique" in self.views:
            self._remove_view("oblique")
        self._oblique["result"] = None

    def set_oblique_angles(self, angles_deg: tuple[float, float, float], *, base: str | None = None) -> None:
        """Set the oblique plane's angles in degrees (about R-L, A-P, S-I) and its base plane."""
        for spin, a in zip(self.angle_spins, angles_deg):
            spin.blockSignals(True)
            spin.setValue(float(a))
            spin.blockSignals(False)
        if base is not None:
            self.oblique_base.blockSignals(True)
            self.oblique_base.setCurrentText(base)
            self.oblique_base.blockSignals(False)
        self._on_angles()

    def _on_angles(self, *_: Any) -> None:
        self._oblique["from_line"] = None
        self._schedule_oblique(reset=True)
        self._update_clipping()

    def oblique_plane(self) -> Plane | None:
        """The current oblique plane through the cursor (from the angles or a drawn line)."""
        if self._cursor is None:
            return None
        point, line = self._cursor[-3:], self._oblique["from_line"]
        if line is not None:  # through the line itself until the cursor leaves the (snapped) midpoint
            return line if np.allclose(point, self._oblique["line_cursor"]) else line.through(point)
        return oblique_plane(point, base=self.oblique_base.currentText(),
                             angles_deg=[s.value() for s in self.angle_spins])

    def set_oblique_from_line(self, p0: Any, p1: Any) -> Plane:
        """Orient the oblique plane along the line ``p0 -> p1`` (world mm) drawn in the main
        canvas (the plane holds the line and the canvas' viewing direction); shows the view."""
        if self._cursor is None:
            raise ValueError("no cursor: load a case first")
        normal = np.zeros(3)
        normal[self.viewer.dims.not_displayed[-1] - (self.viewer.dims.ndim - 3)] = 1.0
        plane = plane_from_line(np.asarray(p0)[-3:], np.asarray(p1)[-3:], normal)
        self._oblique["from_line"] = plane
        cursor = self._cursor.copy()
        cursor[-3:] = plane.point
        self.set_oblique(True)
        self.set_cursor(cursor)
        self._oblique["line_cursor"] = self._cursor[-3:].copy()
        self._schedule_oblique(reset=True)
        return plane

    def _oblique_from_selected_line(self) -> None:
        shapes = self.viewer.layers.selection.active
        if not isinstance(shapes, Shapes) or not len(shapes.data):
            show_error("select a shapes layer with a line drawn in the main canvas first")
            return
        verts = np.asarray(shapes.data[-1], float)
        try:
            self.set_oblique_from_line(*(shapes.data_to_world(v) for v in verts[[0, -1]]))
        except ValueError as exc:
            show_error(str(exc))

    def _schedule_oblique(self, delay_ms: int = 0, *, reset: bool = False) -> None:
        if "oblique" in self.views:
            self._oblique["reset"] = self._oblique["reset"] or reset
            if not (self._oblique_timer.isActive() and delay_ms):
                self._oblique_timer.start(delay_ms)

    def _update_oblique(self) -> None:
        """Resample the oblique plane through the cursor (source sequence and labels)."""
        view, plane = self.views.get("oblique"), self.oblique_plane()
        source = self._source_layer(self.oblique_source.currentText())
        if view is None or plane is None or source is None or not self.isVisible():
            return
        grid = _layer_grid(source)
        pixel = self.pixel_spin.value() or min(grid.spacing)
        try:
            img = reslice_array(np.asarray(source.data), grid, plane, pixel_mm=pixel, order=1)
            labels = self._labels_main()
            lab = None if labels is None else reslice_array(  # on the image's own pixels
                np.asarray(labels.data), _layer_grid(labels), plane, order=0, like=img)
        except ValueError as exc:
            self.status.setText(f"oblique: {exc}")
            return
        self._oblique["plane"], self._oblique["result"] = plane, img
        self._show_oblique(view, img, lab, labels)
        self._update_markers(view)
        if self._oblique["reset"]:
            self._oblique["reset"] = False
            self._fit(view)
        self._update_cross(view)

    def _show_oblique(self, view: _View, img: Any, lab: Any, labels: Any) -> None:
        layers, scale, meta = view.model.layers, (img.pixel_mm, img.pixel_mm), {_OWN: "oblique"}
        if "oblique image" not in layers:
            view.model.add_image(img.image, name="oblique image", scale=scale, metadata=meta)
        else:
            layers["oblique image"].data, layers["oblique image"].scale = img.image, scale
        if lab is not None:
            if "oblique labels" not in layers:
                view.model.add_labels(lab.image, name="oblique labels", scale=scale, colormap=labels.colormap,
                                      metadata=meta)
            else:
                layers["oblique labels"].data, layers["oblique labels"].scale = lab.image, scale
        self._style_oblique()

    def _style_oblique(self) -> None:
        """The oblique layers take the window, colours and visibility of their main layers."""
        view, source, labels = self.views.get("oblique"), self._source_layer(self.oblique_source.currentText()), \
            self._labels_main()
        if view is None:
            return
        layers = view.model.layers
        if source is not None and "oblique image" in layers:
            shown = layers["oblique image"]
            shown.colormap, shown.contrast_limits_range = source.colormap, source.contrast_limits_range
            shown.contrast_limits, shown.gamma = source.contrast_limits, source.gamma
        if labels is not None and "oblique labels" in layers:
            shown = layers["oblique labels"]
            shown.opacity, shown.visible, shown.colormap = labels.opacity, labels.visible, labels.colormap

    # ================================================================== 3D
    def set_3d(self, on: bool, *, sequence: str | None = None, rendering: str | None = None) -> None:
        """Render the main canvas in 3D: ``sequence`` as a volume, the labels as iso-surfaces.

        The other sequences are hidden while in 3D (and shown again after); the camera looks from
        above, in front of and right of the patient, superior up.
        """
        if sequence is not None:
            self.volume_source.setCurrentText(sequence)
        if rendering is not None:
            self.rendering.setCurrentText(rendering)
        if self.box3d.isChecked() != bool(on):
            self.box3d.setChecked(bool(on))  # re-enters through the toggled signal
            return
        dims = self.viewer.dims
        if on and dims.ndisplay != 3:
            self._saved_3d = {"order": dims.order,
                              "visible": {ly: ly.visible for ly in self.viewer.layers if isinstance(ly, Image)}}
            lead = tuple(range(dims.ndim - 3))
            dims.order = lead + tuple(a + len(lead) for a in range(3))  # scene axes (S, P, L)
            dims.ndisplay = 3
            camera(self.viewer).set_view_direction(THREE_D_VIEW, up_direction=(1.0, 0.0, 0.0))
            self._apply_3d()
        elif not on and dims.ndisplay == 3:
            for layer in self.viewer.layers:
                if _mirrorable(layer):
                    layer.experimental_clipping_planes = []
            for layer, vis in self._saved_3d.get("visible", {}).items():
                if layer in self.viewer.layers:
                    layer.visible = vis
            dims.ndisplay = 2
            if "order" in self._saved_3d:
                dims.order = self._saved_3d["order"]
            self._saved_3d = {}

    def _apply_3d(self) -> None:
        if not self.box3d.isChecked() or self.viewer.dims.ndisplay != 3:
            return
        chosen = self.volume_source.currentText()
        for layer in self.viewer.layers:
            if isinstance(layer, Image) and _mirrorable(layer):
                layer.visible = layer.name == chosen
                if layer.name == chosen:
                    layer.rendering = self.rendering.currentText()
            elif isinstance(layer, Labels) and _mirrorable(layer):
                layer.rendering = LABEL_RENDERINGS[self.label_rendering.currentIndex()]
        self._update_clipping()

    def clipping_normal(self) -> np.ndarray:
        """World normal ``(S, P, L)`` of the clipping plane: napari keeps the side it points to;
        by default the far side from the 3D camera (so the cut face looks at the camera)."""
        which = self.clip_plane.currentText()
        if which == "oblique":
            plane = self.oblique_plane()
            n = plane.normal if plane is not None else np.array([1.0, 0.0, 0.0])
        else:
            n = np.zeros(3)
            n[_NORMAL_AXIS[which]] = 1.0
        n = n if float(n @ np.asarray(THREE_D_VIEW)) >= 0 else -n
        return -n if self.clip_flip.isChecked() else n

    def _update_clipping(self) -> None:
        if not self.box3d.isChecked() or self.viewer.dims.ndisplay != 3 or self._cursor is None:
            return
        n_world = np.zeros(len(self._cursor))
        n_world[-3:] = self.clipping_normal()
        for layer in self.viewer.layers:
            if not _mirrorable(layer):
                continue
            if not self.clip_check.isChecked():
                layer.experimental_clipping_planes = []
                continue
            origin = np.asarray(layer.data_to_world(np.zeros(layer.ndim)))
            linear = np.stack([np.asarray(layer.data_to_world(e)) - origin for e in np.eye(layer.ndim)])
            n = linear @ n_world  # the normal in data coordinates: A^T n
            layer.experimental_clipping_planes = [{"position": tuple(layer.world_to_data(self._cursor)),
                                                   "normal": tuple(n / np.linalg.norm(n)), "enabled": True}]

    # ================================================================== screenshots
    def screenshot_view(self, name: str) -> np.ndarray:
        """The canvas of view ``name`` as an ``(h, w, 4)`` RGBA array (without the overlay)."""
        return adapter.canvas_screenshot(self.views[name].qt)
