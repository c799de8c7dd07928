"""`segment(case, model)`: a case's sequences in, a label map on its reference grid out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.case import Case
from ..core.errors import OptionError, check_choice
from ..core.resample import resample_to_grid
from ..core.volume import Grid, Volume
from .errors import MissingSequenceError
from .model_file import Model, load_model
from .preprocess import bounding_box, check_channels, head_mask, model_grid, normalise

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Segmentation:
    """Result of `segment`, on the case's reference grid.

    Attributes
    ----------
    labels : Volume
        uint8 label map with the model's label values (0 = background).
    probabilities : dict of str to Volume, or None
        Softmax probability per class (``"background"`` and each label name), float32.
    uncertainty : Volume or None
        TTA disagreement in [0, 1] (fraction of mirrors disagreeing with the consensus).
    """

    labels: Volume
    probabilities: dict[str, Volume] | None = None
    uncertainty: Volume | None = None


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` if available else ``"cpu"``; ``"cuda"`` without a GPU is an error."""
    import torch

    check_choice("device", device, DEVICES)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
    return device


def network_predictor(network: Callable, dim: int) -> Callable:
    """Wrap a network as a sliding-window predictor on ``(B, C, pz, py, px)`` windows, as it is.

    `segment` uses `napari_mriseg.ml.inference.module_predictor` instead, which also picks the
    fastest memory layout (on a copy of the network)."""
    if dim == 3:
        return network
    return lambda x: network(x[:, :, 0]).unsqueeze(2)


def largest_component_per_class(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest 26-connected component of each non-zero label (others -> 0)."""
    from ..core.label_ops import keep_largest_component

    return keep_largest_component(labels, None, connectivity=3)


def fill_holes_per_class(labels: np.ndarray) -> np.ndarray:
    """Fill background holes fully enclosed by one label with that label (in 3D)."""
    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        filled = ndimage.binary_fill_holes(labels == value)
        out[filled & (out == 0)] = value
    return out


def _context_2d(axis: int) -> tuple[int, int, int]:
    """Context (voxels) a 2D model needs around a box: none across slices, all in-plane."""
    ctx = [10**6] * 3
    ctx[axis] = 0
    return tuple(ctx)  # type: ignore[return-value]


def _roi_in_model_grid(roi: Sequence[slice], ref: Grid, mgrid: Grid, foreground: tuple[slice, ...],
                       context: Sequence[int]) -> tuple[slice, ...]:
    """The model-grid box covering ``roi`` (reference voxels) plus ``context`` voxels shared
    between its two sides, cut to the foreground box (never empty: at least one voxel thick).

    With a context of patch - 1, a one-slice roi is covered by exactly one window along that axis,
    the slice at the window's centre."""
    bounds = [s.indices(n)[:2] for s, n in zip(roi, ref.shape)]
    corners = np.array([[a - 0.5, b - 0.5, c - 0.5] for a in bounds[0] for b in bounds[1] for c in bounds[2]])
    idx = mgrid.world_to_index(ref.index_to_world(corners))
    lo, hi = np.floor(idx.min(0) + 0.5).astype(int), np.ceil(idx.max(0) + 0.5).astype(int)
    out = []
    for ax in range(3):
        before = int(context[ax]) // 2
        start = max(foreground[ax].start, lo[ax] - before)
        stop = min(foreground[ax].stop, hi[ax] + int(context[ax]) - before)
        if stop <= start:  # the roi lies outside the head: keep one slice so shapes stay valid
            start = min(max(lo[ax], 0), mgrid.shape[ax] - 1)
            stop = start + 1
        out.append(slice(int(start), int(stop)))
    return tuple(out)


def segment(case: Case | Mapping[str, Volume], model: Model | str | Path, *, device: str = "auto",
            tta: bool = False, overlap: float = 0.5, batch_size: int = 2, postprocess: bool = False,
            return_probabilities: bool = False, return_uncertainty: bool = False, precision: str = "auto",
            roi: Sequence[slice] | None = None,
            progress: Callable[[int, int], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> Segmentation:
    """Segment ``case`` with ``model``; the labels lie voxel for voxel on the case's reference grid.

    Parameters
    ----------
    case : Case or mapping of sequence name to Volume
        Must hold every sequence the model needs, all on one grid (the reference's).
    model : Model or path of a ``.mriseg`` model
    device : {"auto", "cpu", "cuda"}
    tta : bool
        Mirror along every patch axis (2**3 passes for 3D, 2**2 for 2D), batched together.
    overlap : float
        Window overlap fraction in [0, 1).
    batch_size : int
        Windows per forward pass. On a 2-core CPU 2 or 3 are fastest (demo UNet: ~24 ms per window;
        4: ~34 ms); a lone 3D window runs as a pair anyway (PyTorch's batch-1 path is ~6x slower).
    postprocess : bool
        Keep the largest component of each label and fill its holes.
    return_probabilities, return_uncertainty : bool
        Also return per-class probabilities / TTA disagreement (uncertainty implies ``tta``).
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the network (`napari_mriseg.ml.inference.sliding_window`): ``"auto"`` is
        float32 on the CPU and mixed precision on CUDA; ``"bf16"`` on the CPU is faster where the
        CPU has native bfloat16 (an `OptionError` where not) but changes probabilities by up to
        ~3e-2 and a few boundary voxels' labels.
    roi : sequence of 3 slices, optional
        Only segment this box of the reference grid (voxel indices, axis order Z, Y, X), e.g. one
        slice for interactive work. The network still sees half a patch of context around it;
        labels outside the box are 0.
    progress : callable(done, total), optional
        Windows done out of total, after each batch.
    cancel : callable() -> bool, optional
        Polled between batches; True raises `CancelledError`.

    Raises
    ------
    MissingSequenceError, GeometryMismatchError, InvalidImageError (NaN or constant image),
    ModelFileError, CancelledError, ResourceLimitError (CUDA out of memory with batch 1),
    OptionError (unknown device or precision, bf16 without hardware support).
    """
    from .inference import check_precision, module_predictor, sliding_window

    if not isinstance(case, Case):
        case = Case(dict(case))
    if not isinstance(model, Model):
        model = load_model(model)
    cfg = model.config
    missing = [s for s in cfg.sequences if s not in case.sequences]
    if missing:
        raise MissingSequenceError(
            f"the case lacks sequence(s) {missing} that the model needs (model: {list(cfg.sequences)}; "
            f"case: {list(case.names)})")
    case.check_same_grid(cfg.sequences)
    check_channels([case[s].array for s in cfg.sequences], cfg.sequences)
    dev = resolve_device(device)
    check_precision(precision, dev)
    ref_grid = case.grid
    mgrid = model_grid(ref_grid, cfg.target_spacing)
    vols = [case[s] if mgrid is ref_grid else resample_to_grid(case[s], mgrid) for s in cfg.sequences]
    x = np.empty((len(vols),) + mgrid.shape, np.float32)
    for c, v in enumerate(vols):
        x[c] = v.array
    del vols
    mask = head_mask(x)
    normalise(x, cfg.normalisation, mask, out=x)
    box = bounding_box(mask)
    if roi is not None:
        context = ([p - 1 for p in cfg.patch_size_3d] if cfg.axis_2d is None else _context_2d(cfg.axis_2d))
        box = _roi_in_model_grid(roi, ref_grid, mgrid, box, context)
    xc, mc = x[(slice(None),) + box], mask[box]
    axis = cfg.axis_2d
    if axis is not None:  # slices along `axis` become the first axis
        xc, mc = np.moveaxis(xc, axis + 1, 1), np.moveaxis(mc, axis, 0)
    patch = cfg.patch_size_3d if axis is None else (1, *cfg.patch_size)
    mirror = () if not (tta or return_uncertainty) else ((0, 1, 2) if axis is None else (1, 2))
    predictor = module_predictor(model.network, cfg.architecture.dim, device=dev)
    res = sliding_window(np.ascontiguousarray(xc), predictor, patch, overlap=overlap, batch_size=batch_size,
                         mask=mc, mirror_axes=mirror, device=dev, return_probabilities=return_probabilities,
                         return_uncertainty=return_uncertainty, precision=precision, progress=progress,
                         cancel=cancel)
    del predictor
    del x, xc

    def uncrop(arr: np.ndarray, fill: float = 0) -> np.ndarray:
        if axis is not None:
            arr = np.moveaxis(arr, 0, axis)
        full = np.full(mgrid.shape, fill, arr.dtype)
        full[box] = arr
        return full

    lut = np.zeros(256, np.uint8)
    values = list(cfg.labels.values())
    lut[1:len(values) + 1] = values
    labels = Volume.on_grid(lut[uncrop(res.labels)], mgrid, kind="label", name="labels")
    labels = resample_to_grid(labels, ref_grid)
    arr = labels.array
    if roi is not None:
        keep = np.zeros(arr.shape, bool)
        keep[tuple(roi)] = True
        arr = np.where(keep, arr, 0).astype(arr.dtype)
    if postprocess:
        arr = fill_holes_per_class(largest_component_per_class(arr))
    out = Segmentation(Volume.on_grid(arr, ref_grid, kind="label", name="labels",
                                      meta={"model": str(model.path or ""), "sequences": list(cfg.sequences)}))
    if res.probabilities is not None:
        names = ["background", *cfg.labels]
        out.probabilities = {
            n: resample_to_grid(Volume.on_grid(uncrop(p, 1.0 if k == 0 else 0.0), mgrid, name=n), ref_grid)
            for k, (n, p) in enumerate(zip(names, res.probabilities))}
    if res.uncertainty is not None:
        out.uncertainty = resample_to_grid(Volume.on_grid(uncrop(res.uncertainty), mgrid, name="uncertainty"),
                                           ref_grid)
    log.info("segmented %s with %d windows", case.case_id or "case", res.windows)
    return out
