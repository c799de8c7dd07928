"""Linked multi-planar views on a 512x512x300 volume with a uint8 labels layer.

Measures, in a napari window with the `MultiViewWidget` docked (run it under Xvfb):

* cursor move -> all canvases redrawn: `set_cursor` to a random voxel (all three slices change),
  then Qt events are processed until every canvas whose slice changed has drawn (GL) and every
  crosshair overlay has painted; median and 95th percentile (goal: median under 30 ms on 2
  cores); and the same for a click in the axial view (two slices change);
* one brush step in the coronal view: a real mouse-move event sent to the canvas while painting,
  until napari painted it, the other views showing that voxel were refreshed and the canvases
  redrew (includes napari's 5 ms mouse-move throttle timer); median and 95th percentile (goal:
  p95 under 16 ms); plus the whole stroke (press, moves, release and the undo step);
* resident memory (VmRSS) of the process: viewer with the layers, then with the layout: the views
  add no copy of any volume (the image is 150 MiB, the labels 75 MiB);
* the stages of a cursor move: `set_cursor` before the event loop runs (napari's slicing in each
  of the four models, the crosshairs, the readout), and what the event loop then does (every
  canvas draws, the window composes once);
* the floors this machine sets, measured the same way: napari alone redrawing its canvas without
  a new slice; a repaint of one small widget of the window (Qt composes the WHOLE window through
  OpenGL once a window holds a QOpenGLWidget: with Mesa's software GL on Xvfb this is the floor of
  any update, a brush step's included); the four canvases redrawn without a new slice (the floor
  of a cursor move if slicing cost nothing).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_views.py [--moves 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAPE = (300, 512, 512)  # (Z, Y, X)
SPACING = (1.0, 0.5, 0.5)  # mm


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_volumes(seed: int = 0):
    """An int16 head-like image (smooth texture, bright shell) and uint8 labels (a blob)."""
    from napari_mriseg.core.volume import Volume

    rng = np.random.default_rng(seed)
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE)
    r = np.sqrt(z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2)
    image = (800 * (r < 0.8) + 400 * ((r > 0.8) & (r < 0.9))).astype(np.int16)
    image += rng.integers(0, 60, SHAPE, dtype=np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    labels[120:170, 200:280, 180:260] = 2
    labels[135:155, 225:255, 205:235] = 1
    origin = tuple(-(n - 1) * s / 2 for n, s in zip(SHAPE, SPACING))
    return (Volume(image, SPACING, origin, name="t1"),
            Volume(labels, SPACING, origin, kind="label", name="labels"))


def _pct(values: list[float]) -> str:
    a = np.asarray(values) * 1000
    return f"median {np.median(a):6.1f} ms   p95 {np.percentile(a, 95):6.1f} ms   (n={len(a)})"


def _med(values: list[float]) -> float:
    return float(np.median(np.asarray(values) * 1000)) if len(values) else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=60, help="cursor moves to time")
    parser.add_argument("--steps", type=int, default=60, help="brush steps to time")
    parser.add_argument("--gap", type=float, default=0.02,
                        help="seconds of event processing between two timed moves (0.02: napari's trailing "
                             "work of one move, its layer list and status bar, may fall into the next; 0.15: "
                             "each move timed on a quiet window)")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QEvent, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    from napari_mriseg._napari import _napari_adapter as adapter
    from napari_mriseg._napari._multiview import MultiViewWidget
    from napari_mriseg._napari.layers import image_layer_data, labels_layer_data

    image, labels_vol = make_volumes()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    data, kw, _ = image_layer_data(image)
    viewer.add_image(data, **kw)
    data, kw, _ = labels_layer_data(labels_vol, name="labels")
    labels = viewer.add_labels(data, **kw)
    del data, labels_vol
    app = QApplication.instance()

    def pump(seconds: float = 0.3) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)

    def send(canvas, kind, pos):
        types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
                 "release": QEvent.Type.MouseButtonRelease}
        left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
        ev = QMouseEvent(types[kind], QPointF(*pos), none if kind == "move" else left,
                         none if kind == "release" else left, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(canvas, ev)

    drawn: dict = {}

    def count_draws(name: str, qt_viewer) -> None:
        drawn[name] = 0
        adapter.draw_emitter(qt_viewer).connect(lambda e: drawn.__setitem__(name, drawn[name] + 1))

    def strokes(name: str, canvas, layer, n_steps: int) -> tuple[list[float], list[float]]:
        """Brush steps (mouse moves while painting) on ``canvas``: seconds from the move event until
        the layer painted and the canvas redrew; and whole strokes (without the hand's pauses)."""
        painted = [0]
        layer.events.labels_update.connect(lambda e: painted.__setitem__(0, painted[0] + 1))
        cx, cy = canvas.width() / 2, canvas.height() / 2
        steps, whole = [], []
        for s in range(max(1, n_steps // 20)):
            path = [(cx - 60 + 6 * k, cy - 40 + 4 * s + 2 * np.sin(k / 3)) for k in range(21)]
            t_stroke = time.perf_counter()
            send(canvas, "press", path[0])
            app.processEvents()
            for pos in path[1:]:
                time.sleep(0.011)  # vispy drops moves closer than 10 ms (a real hand is slower)
                before, p0 = drawn[name], painted[0]
                t = time.perf_counter()
                send(canvas, "move", pos)
                end = t + 1.0
                while (painted[0] == p0 or drawn[name] == before) and time.perf_counter() < end:
                    app.processEvents()
                steps.append(time.perf_counter() - t)
            send(canvas, "release", path[-1])
            app.processEvents()
            whole.append(time.perf_counter() - t_stroke - 0.011 * (len(path) - 1))
            pump(0.05)
        return steps, whole

    pump(1.0)
    rss_viewer = _rss_mib()

    # ---------------------------------------------------------------- baseline: napari alone
    count_draws("main", adapter.main_qt_viewer(viewer))
    main_canvas = adapter.canvas_widget(adapter.main_qt_viewer(viewer))
    status_bar = adapter.main_window(viewer).statusBar()

    def until_drawn(names: list[str], start) -> float:
        """Seconds from calling ``start`` until every canvas in ``names`` has drawn (and the event
        that drew them, the window's composition included, has returned)."""
        before = {n: drawn[n] for n in names}
        t = time.perf_counter()
        start()
        while any(drawn[n] == before[n] for n in names) and time.perf_counter() < t + 2:
            app.processEvents()
        return time.perf_counter() - t

    def repeat(fn, n: int) -> list[float]:
        out = []
        for _ in range(n + 2):
            pump(0.03)
            out.append(fn())
        return out[2:]

    def timed_repaint(widget) -> float:
        t = time.perf_counter()
        widget.repaint()  # paints now: the widget, then Qt composes and flushes the window
        return time.perf_counter() - t

    n_floor = max(10, args.moves // 2)
    floor_base_canvas = repeat(lambda: until_drawn(["main"], main_canvas.update), n_floor)
    floor_base_compose = repeat(lambda: timed_repaint(status_bar), n_floor)
    lo = np.asarray([r.start for r in viewer.dims.range])
    hi = np.asarray([r.stop for r in viewer.dims.range])
    rng = np.random.default_rng(1)
    base_moves = []
    for _ in range(args.moves // 2 + 3):
        before = drawn["main"]
        t = time.perf_counter()
        viewer.dims.set_point(0, lo[0] + (hi[0] - lo[0]) * rng.uniform(0.2, 0.8))
        while drawn["main"] == before and time.perf_counter() < t + 2:
            app.processEvents()
        base_moves.append(time.perf_counter() - t)
        pump(0.02)
    base_moves = base_moves[3:]
    viewer.layers.selection.active = labels
    labels.mode, labels.brush_size, labels.selected_label = "paint", 10, 3
    base_steps, base_whole = strokes("main", main_canvas, labels, args.steps // 2)
    labels.mode = "pan_zoom"
    for _ in base_whole:  # leave the labels as they were
        labels.undo()

    # ---------------------------------------------------------------- the layout
    t = time.perf_counter()
    widget = MultiViewWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="Linked views")
    while not widget.views and time.perf_counter() < t + 30:  # the views are built when first shown
        app.processEvents()
    build = time.perf_counter() - t
    pump(1.0)
    rss_layout = _rss_mib()
    canvases = {"main": (viewer, widget.main_overlay), **{n: (v.model, v.overlay) for n, v in widget.views.items()}}
    for name, view in widget.views.items():
        count_draws(name, view.qt)

    # floors with the layout: one small widget repainted (the window composes); the four
    # canvases redrawn without a new slice (overlays included)
    floor_compose = repeat(lambda: timed_repaint(widget.readout), n_floor)

    def redraw_all() -> None:
        for _, (_, overlay) in canvases.items():
            overlay.update()
        for qt_viewer in [adapter.main_qt_viewer(viewer), *(v.qt for v in widget.views.values())]:
            adapter.canvas_widget(qt_viewer).update()

    floor_4 = repeat(lambda: until_drawn(list(canvases), redraw_all), n_floor)
    floor_view = repeat(lambda: until_drawn(["coronal"], adapter.canvas_widget(widget.views["coronal"].qt).update),
                        n_floor)

    # stages of a cursor move: each model's slicing (the adapter's set_dims_point, timed here);
    # set_cursor as a whole
    slicing: dict[str, list[float]] = {n: [] for n in canvases}
    names = {id(model): n for n, (model, _) in canvases.items()}
    set_dims_point = getattr(adapter, "set_dims_point", None)  # None: an older adapter (A/B runs)

    def timed_set_dims_point(model, point) -> None:
        t = time.perf_counter()
        set_dims_point(model, point)
        slicing[names.get(id(model), "other")].append(time.perf_counter() - t)

    if set_dims_point is not None:
        adapter.set_dims_point = timed_set_dims_point
    sync: list[float] = []

    def timed_move(point) -> float:
        """Seconds from set_cursor until every canvas whose slice changed has drawn (GL) and every
        crosshair overlay has painted."""
        points = {n: tuple(m.dims.point) for n, (m, _) in canvases.items()}
        gl, paints = dict(drawn), {n: o.paints for n, (_, o) in canvases.items()}
        t = time.perf_counter()
        widget.set_cursor(point)
        sync.append(time.perf_counter() - t)
        resliced = [n for n, (m, _) in canvases.items() if tuple(m.dims.point) != points[n]]
        while time.perf_counter() < t + 2.0 and (any(drawn[n] == gl[n] for n in resliced) or any(
                o.paints == paints[n] for n, (_, o) in canvases.items())):
            app.processEvents()
        return time.perf_counter() - t

    moves, clicks = [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(args.moves + 5):
        point = lo + (hi - lo) * rng.uniform(0.2, 0.8, 3)
        moves.append(timed_move(point))  # all three slices change: all four canvases reslice
        pump(args.gap)
        point[1:] = (lo + (hi - lo) * rng.uniform(0.2, 0.8, 3))[1:]
        clicks.append(timed_move(point))  # a click in the axial view: coronal and sagittal reslice
        pump(args.gap)
    cpu_per_move = (time.process_time() - cpu0) / (2 * (args.moves + 5))
    busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    moves, clicks = moves[5:], clicks[5:]  # warm-up
    if set_dims_point is not None:
        adapter.set_dims_point = set_dims_point
    sync_moves = sync[10::2]  # set_cursor of the moves (3 slices), after the warm-up

    viewer.layers.selection.active = labels
    labels.mode = "paint"
    widget.set_cursor((lo + hi) / 2)
    pump(0.3)
    cor = widget.views["coronal"]
    undo_steps = []
    labels.events.paint.connect(lambda e: undo_steps.append(e.value))  # one per stroke, on the MAIN layer
    steps, whole = strokes("coronal", adapter.canvas_widget(cor.qt), cor.mirrors[labels], args.steps)
    n_undo = len(undo_steps)

    print(f"napari {napari.__version__}; volume {SHAPE} int16 + uint8 labels; 3 views + main canvas; "
          f"layout built in {build:.1f} s")
    print(f"baseline, napari alone: slice change -> main canvas redrawn: {_pct(base_moves)}")
    print(f"baseline, napari alone: brush step in the main canvas     : {_pct(base_steps)}")
    print(f"cursor move, 3 slices -> 4 canvases redrawn: {_pct(moves)}   (goal: median < 30 ms)")
    print(f"click in the axial view (2 slices change)  : {_pct(clicks)}")
    print(f"brush step in the coronal view             : {_pct(steps)}   (goal: p95 < 16 ms)")
    print("stages of a cursor move (medians): set_cursor before the event loop "
          f"{_med(sync_moves):.1f} ms, of which napari's slicing per model: "
          + ", ".join(f"{n} {_med(v[5:]):.1f}" for n, v in slicing.items() if n != "other")
          + f" ms; then the event loop: the rest of the move ({_med(moves) - _med(sync_moves):.1f} ms)")
    print(f"CPU time per move or click, all threads (GL's included), trailing work included: "
          f"{cpu_per_move * 1000:.1f} ms ({busy:.2f} cores busy while moving, {args.gap * 1000:.0f} ms gaps)")
    print("floors of this machine (software GL on Xvfb; the window composes through OpenGL):")
    print(f"  napari alone: main canvas redrawn, same slice   : {_pct(floor_base_canvas)}")
    print(f"  napari alone: status bar repainted (composition): {_pct(floor_base_compose)}")
    print(f"  layout: one small widget repainted (composition): {_pct(floor_compose)}   "
          "<- floor of any update, a brush step's too")
    print(f"  layout: coronal canvas redrawn, same slice      : {_pct(floor_view)}")
    print(f"  layout: 4 canvases redrawn, same slices         : {_pct(floor_4)}   "
          "<- floor of a cursor move if slicing cost nothing")
    print(f"whole stroke (20 steps, no hand pauses)    : {_pct(whole)}; undo steps on the main layer: {n_undo}")
    print(f"RSS: viewer with the layers {rss_viewer:.0f} MiB, with the layout {rss_layout:.0f} MiB "
          f"(+{rss_layout - rss_viewer:.0f} MiB); the image is {image.array.nbytes / 2**20:.0f} MiB, "
          f"the labels {labels.data.nbytes / 2**20:.0f} MiB")
    shared = all(m.data is viewer.layers[m.name].data for v in widget.views.values() for m in v.mirrors.values())
    print(f"views share the main layers' arrays: {shared}")
    widget.close_views()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
