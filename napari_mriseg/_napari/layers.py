"""Core objects <-> napari layers: the one helper every layer's geometry goes through.

Each layer is shown on an axis-aligned grid (napari's 2D slicing is axis aligned): a volume stored
in any axis order is transposed/flipped exactly; an oblique one is resampled, and its metadata
says so. The original grid is kept in ``layer.metadata["mriseg"]["grid"]`` so that labels are
written back onto the grid of the image they belong to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.case import Case
from ..core.convert import from_layer, layer_kwargs
from ..core.resample import resample_to_grid, to_display_orientation
from ..core.volume import Grid, Volume

KEY = "mriseg"
#: Name of the labels layer the clinician corrects (one per viewer).
LABELS_LAYER = "labels"

#: BraTS-style label names and colours (RGBA); other values get napari's automatic colours.
LABEL_NAMES = {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
LABEL_COLORS = {
    0: (0.0, 0.0, 0.0, 0.0),
    1: (0.90, 0.16, 0.16, 1.0),
    2: (0.20, 0.80, 0.30, 1.0),
    3: (1.00, 0.85, 0.10, 1.0),
}


def grid_to_dict(grid: Grid) -> dict[str, Any]:
    """JSON-friendly form of a `Grid` (lists), stored in layer metadata."""
    return {"shape": list(grid.shape), "spacing": list(grid.spacing), "origin": list(grid.origin),
            "direction": np.asarray(grid.direction).tolist()}


def grid_from_dict(d: dict[str, Any]) -> Grid:
    """Inverse of `grid_to_dict`."""
    return Grid(tuple(d["shape"]), tuple(d["spacing"]), tuple(d["origin"]), np.asarray(d["direction"]))


def display_window(volume: Volume) -> tuple[float, float]:
    """Initial contrast limits: the DICOM window if the file has one, else the 0.5-99.5th
    percentiles of the non-background voxels."""
    centre, width = volume.meta.get("window_center"), volume.meta.get("window_width")
    if centre is not None and width:
        return float(centre) - float(width) / 2, float(centre) + float(width) / 2
    a = volume.array
    sample = a.reshape(-1)[:: max(1, a.size // 2_000_000)]
    low = sample.min()
    background = sample == low
    # MRI: the air around the head holds the minimum in a large share of the voxels; leave it out
    fg = sample[~background] if 0.2 < background.mean() < 1.0 else sample
    lo, hi = (float(v) for v in np.percentile(fg, [0.5, 99.5]))
    if fg is not sample:
        lo = min(lo, float(low))
    if hi <= lo:
        lo, hi = float(sample.min()), float(max(sample.max(), lo + 1.0))
    return lo, hi


def _metadata(volume: Volume, how: str, *, case_id: str, role: str) -> dict[str, Any]:
    return {KEY: {
        "role": role,
        "name": volume.name,
        "case_id": case_id,
        "grid": grid_to_dict(volume.grid),
        "display": how,
        "source": volume.meta.get("source"),
        "warnings": list(volume.meta.get("warnings", [])),
        "window_center": volume.meta.get("window_center"),
        "window_width": volume.meta.get("window_width"),
    }}


def image_layer_data(volume: Volume, *, case_id: str = "", visible: bool = True) -> tuple:
    """A napari ``(data, kwargs, "image")`` tuple for an image volume, in mm."""
    disp, how = to_display_orientation(volume)
    kwargs: dict[str, Any] = {
        "name": volume.name or "image",
        "colormap": "gray",
        "contrast_limits": display_window(volume),
        "metadata": _metadata(volume, how, case_id=case_id, role="image"),
        "visible": visible,
        **layer_kwargs(disp),
    }
    return disp.array, kwargs, "image"


def labels_layer_data(labels: Volume, *, case_id: str = "", name: str | None = None) -> tuple:
    """A napari ``(data, kwargs, "labels")`` tuple for a label map, on its display grid.

    The array is a writable uint8 (or wider) copy, so painting never touches the caller's volume.
    """
    disp, how = to_display_orientation(labels)
    # paint on our own copy, but copy once: a reoriented volume is a fresh array already
    data = np.array(disp.array, copy=True) if np.shares_memory(disp.array, labels.array) else disp.array
    kwargs: dict[str, Any] = {
        "name": name or labels.name or "labels",
        "metadata": _metadata(labels, how, case_id=case_id, role="labels"),
        "opacity": 0.6,
        **layer_kwargs(disp),
    }
    try:
        from napari.utils.colormaps import DirectLabelColormap

        kwargs["colormap"] = DirectLabelColormap(color_dict={**LABEL_COLORS, None: (0.6, 0.6, 0.6, 1.0)})
    except ImportError:  # pragma: no cover - napari < 0.5
        pass
    return data, kwargs, "labels"


def case_layer_data(case: Case, *, with_empty_labels: bool = True) -> list[tuple]:
    """Layer tuples for a whole case: one image layer per sequence (reference last, on top)
    and its labels (an empty label map on the reference grid if it has none)."""
    order = [n for n in case.names if n != case.reference] + [case.reference]
    layers = [image_layer_data(case[n], case_id=case.case_id) for n in order]
    if case.labels is not None:
        layers.append(labels_layer_data(case.labels, case_id=case.case_id, name=LABELS_LAYER))
    elif with_empty_labels:
        layers.append(labels_layer_data(Volume.zeros_like_labels(case.grid), case_id=case.case_id,
                                         name=LABELS_LAYER))
    return layers


def layer_state_to_volume(data: np.ndarray, state: dict[str, Any], *, kind: str = "label") -> Volume:
    """A `Volume` on the grid the layer's data came from, from a layer's data and its state
    (``scale``, ``translate``, ``affine``, ``metadata``: what npe2 writers receive).

    If the layer was reoriented or resampled for display, the voxels are put back onto the
    original grid (exactly for a reorientation; nearest-neighbour for labels of an oblique grid).
    """
    affine = state.get("affine")
    if affine is not None and hasattr(affine, "affine_matrix"):
        affine = affine.affine_matrix
    vol = from_layer(np.asarray(data), state.get("scale", (1, 1, 1)), state.get("translate", (0, 0, 0)),
                     affine, kind=kind, name=state.get("name", ""))  # type: ignore[arg-type]
    info = (state.get("metadata") or {}).get(KEY)
    if info and "grid" in info:
        vol = resample_to_grid(vol, grid_from_dict(info["grid"]))
    return vol


def layer_to_volume(layer: Any, *, kind: str | None = None) -> Volume:
    """A `Volume` from a napari layer made by this module (see `layer_state_to_volume`)."""
    state = {"scale": layer.scale, "translate": layer.translate, "affine": layer.affine.affine_matrix,
             "metadata": layer.metadata, "name": layer.name}
    if kind is None:
        kind = "label" if layer.__class__.__name__ == "Labels" else "image"
    return layer_state_to_volume(layer.data, state, kind=kind)
