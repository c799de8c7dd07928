"""Sliding-window inference with bounded memory.

Windows are placed exactly as MONAI's ``sliding_window_inference`` places them (same starts for
the same image size, patch and overlap) and blended with the same Gaussian importance map, so the
two agree; ours is faster and lighter because it

* skips windows that hold no foreground (``mask``) voxel,
* caches the importance map, batches windows (and their TTA mirrors) into one forward pass;
  batches run across rows of windows, so only the last one can be short, and a lone 3D window
  on the CPU runs as a pair (PyTorch's batch-1 3D convolution takes a ~6x slower kernel),
* streams along Z: the accumulator holds one patch-deep slab, and rows that no later window can
  touch are finalised (argmax; softmax only when probabilities are asked for) and freed at once,
  so memory does not grow with the volume (no full-volume per-class float32 logits),
* stitches with fused in-place operations (``addcmul_``; a per-class argmax pass instead of
  torch's slow reduction over the outermost axis).

Predictors are plain callables ``(B, C, pz, py, px) tensor -> (B, K, pz, py, px) logits``, so tests
run this with stand-in predictors.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..core.errors import OptionError, ResourceLimitError, check_choice
from .errors import CancelledError

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], torch.Tensor]
#: Arithmetic of the network's forward pass (`sliding_window`'s ``precision``).
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class WindowResult:
    """Output of `sliding_window` on the (padded-back) input grid.

    Attributes
    ----------
    labels : (Z, Y, X) uint8 ndarray
        Argmax class index (0 = background, also where no window ran).
    probabilities : (K, Z, Y, X) float32 ndarray or None
        Softmax of the blended logits (background 1 where no window ran).
    uncertainty : (Z, Y, X) float32 ndarray or None
        TTA disagreement: Gaussian-weighted fraction of mirrors whose argmax differs from the
        argmax of their mean (0 = all agree).
    windows : int
        Windows computed (after skipping those without foreground).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    windows: int = 0


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices along one axis, identical to MONAI's ``dense_patch_slices``."""
    if patch >= size:
        return [0]
    interval = max(1, int(patch * (1 - overlap)))
    n = next(d for d in range(math.ceil(size / interval)) if d * interval + patch >= size) + 1
    return [i * interval - max(i * interval + patch - size, 0) for i in range(n)]


@lru_cache(maxsize=16)
def _gaussian_cpu(patch: tuple[int, ...], sigma_scale: float) -> torch.Tensor:
    w = None
    for p in patch:
        x = torch.arange(-(p - 1) / 2.0, (p - 1) / 2.0 + 1, dtype=torch.float32)
        g = torch.exp(x**2 / (-2 * (p * sigma_scale) ** 2)) if p > 1 else torch.ones(1)
        w = g if w is None else w.unsqueeze(-1) * g
    w = torch.clamp(w, min=max(float(w.min()), 1e-3))
    w.requires_grad_(False)
    return w


_GAUSS_DEVICE: dict[tuple, torch.Tensor] = {}


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125,
                        device: str | torch.device = "cpu") -> torch.Tensor:
    """Cached Gaussian weights ``(pz, py, px)`` (MONAI's map: sigma = ``sigma_scale`` x patch).

    The same tensor is returned on every call: do not modify it. A size-1 axis gets weight 1.
    """
    key = (tuple(int(p) for p in patch), float(sigma_scale), str(device))
    w = _GAUSS_DEVICE.get(key)
    if w is None:
        w = _gaussian_cpu(key[0], key[1]).to(device)
        _GAUSS_DEVICE[key] = w
    return w


def module_predictor(network: torch.nn.Module, dim: int = 3, *, device: str | torch.device = "cpu",
                     channels_last: bool | None = None) -> Predictor:
    """A sliding-window predictor for a ``torch.nn.Module`` network, laid out for speed.

    Parameters
    ----------
    network : torch.nn.Module
        Maps ``(B, C, Z, Y, X)`` (3D) or ``(B, C, Y, X)`` (2D) to logits of the same spatial size.
        It is put in eval mode and on ``device`` (as inference needs) but otherwise left alone:
        a change of memory layout is made on a copy, so the caller's weights keep their layout.
    dim : {2, 3}
        3: windows go to the network as they are; 2: ``(B, C, 1, py, px)`` windows lose their
        size-1 Z axis on the way in and get it back on the way out.
    device : str or torch.device
    channels_last : bool, optional
        Run a 3D network on a ``channels_last_3d`` copy of itself (inputs converted per batch;
        ignored for 2D).
        Default: on for a 3D network on the CPU with two or more torch threads, where oneDNN's
        convolutions then skip a reorder of every activation (demo UNet, batch 2, 2 threads:
        23.6 vs 27.4 ms per 48^3 window, best of 10; a whole 155x240x240 case 16.4 vs 17.7 s,
        best of 4 on a shared machine); on one thread it measured slower (a case: 27.9 vs
        24.0 s, best of 2). Outputs stay within 1e-5 of the default layout.

    Returns
    -------
    callable
        ``(B, C, pz, py, px)`` -> ``(B, K, pz, py, px)`` logits, contiguous.
    """
    device = torch.device(device)
    network.to(device).eval()
    if channels_last is None:
        channels_last = dim == 3 and device.type == "cpu" and torch.get_num_threads() > 1
    if not (channels_last and dim == 3):
        if dim == 3:
            return network
        return lambda x: network(x[:, :, 0]).unsqueeze(2)
    net = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = net(x.contiguous(memory_format=torch.channels_last_3d))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.contiguous()

    return predict


def _mirror_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    axes = sorted(set(axes))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX): without it oneDNN
    emulates bf16, slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def check_precision(precision: str, device: str | torch.device) -> str:
    """Validate ``precision`` for ``device`` (see `sliding_window`); return it.

    Raises
    ------
    OptionError
        An unknown value, or ``"bf16"`` on a CPU or GPU without native bfloat16 support.
    """
    check_choice("precision", precision, PRECISIONS)
    device = torch.device(device)
    if precision == "bf16":
        if device.type == "cpu" and not cpu_supports_bf16():
            raise OptionError("precision 'bf16' needs a CPU with AVX512-BF16 or AMX (this one has neither: "
                              f"{torch.backends.cpu.get_cpu_capability()}); use precision 'fp32'")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise OptionError("precision 'bf16' needs a GPU with bfloat16 support; use 'auto' (float16) or 'fp32'")
    return precision


def _autocast(device: torch.device, precision: str = "auto"):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda" and precision == "auto":
        dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dt)
    return torch.autocast(device.type, enabled=False)


def sliding_window(image: np.ndarray | torch.Tensor, predictor: Predictor, patch_size: Sequence[int], *,
                   overlap: float = 0.5, batch_size: int = 2, mask: np.ndarray | None = None,
                   mirror_axes: Sequence[int] = (), sigma_scale: float = 0.125,
                   device: str | torch.device = "cpu", return_probabilities: bool = False,
                   return_uncertainty: bool = False, precision: str = "auto",
                   progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> WindowResult:
    """Run ``predictor`` over ``image`` in overlapping windows and blend the logits.

    Parameters
    ----------
    image : (C, Z, Y, X) float array or tensor
        Normalised input. Axes smaller than the patch are zero-padded symmetrically (as MONAI).
    predictor : callable
        ``(B, C, pz, py, px)`` -> ``(B, K, pz, py, px)`` logits (softmax is applied here).
    patch_size : (3,) ints
        Window size in voxels ``(pz, py, px)``; a 2D network uses ``pz = 1``.
    overlap : float
        Fraction of a window shared with its neighbour, 0 <= overlap < 1.
    batch_size : int
        Windows per forward pass (each with its mirrors). Halved on CUDA out-of-memory.
    mask : (Z, Y, X) bool ndarray, optional
        Foreground; windows without any True voxel are skipped (their voxels: background).
    mirror_axes : sequence of int
        Spatial axes (0, 1, 2) to mirror for test-time augmentation; all 2**n combinations run.
    return_probabilities, return_uncertainty : bool
        Also return softmax probabilities / TTA disagreement (needs ``mirror_axes``).
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the forward pass (blending is always float32). ``"auto"``: float32 on the
        CPU, autocast to bfloat16 (float16 where unsupported) on CUDA. ``"fp32"``: float32
        everywhere. ``"bf16"``: autocast to bfloat16, also on the CPU, where it needs AVX512-BF16
        or AMX (`OptionError` otherwise); it is faster there (demo UNet on a 155x240x240 case,
        2 Zen4 threads: 7.8 vs 14.4 s, ``benchmarks/bench_inference.py``) but moves probabilities
        by up to ~3e-2 to 5e-2 and flips the argmax of a few voxels near class boundaries
        (99.995 % identical), so it is never the default.
    progress : callable(done, total), optional
        Called after each batch with windows done and total.
    cancel : callable() -> bool, optional
        Polled before each batch; True raises `CancelledError`.
    """
    device = torch.device(device)
    check_precision(precision, device)
    img = torch.as_tensor(np.asarray(image, np.float32) if isinstance(image, np.ndarray) else image,
                          dtype=torch.float32)
    if img.ndim != 4:
        raise ValueError(f"image must be (C, Z, Y, X); got shape {tuple(img.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}")
    patch = tuple(int(p) for p in patch_size)
    shape = tuple(img.shape[1:])
    pads = [max(p - s, 0) for p, s in zip(patch, shape)]
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, shape))
    if any(pads):
        pad_arg = [v for p in reversed(pads) for v in (p // 2, p - p // 2)]
        img = torch.nn.functional.pad(img, pad_arg)
        if mask is not None:
            mask = np.pad(mask, [(p // 2, p - p // 2) for p in pads])
    full = tuple(img.shape[1:])
    starts = [window_starts(s, p, overlap) for s, p in zip(full, patch)]
    windows = [w for w in itertools.product(*starts)
               if mask is None or mask[tuple(slice(a, a + p) for a, p in zip(w, patch))].any()]
    mirrors = _mirror_sets(mirror_axes)
    weight = gaussian_importance(patch, sigma_scale, device)
    pz = patch[0]
    labels = np.zeros(full, np.uint8)
    probs: np.ndarray | None = None
    unc = np.zeros(full, np.float32) if return_uncertainty else None
    acc: torch.Tensor | None = None
    wsum = torch.zeros((pz,) + full[1:], dtype=torch.float32, device=device)
    uacc = torch.zeros_like(wsum) if return_uncertainty else None
    n_classes = 0
    buf_z: int | None = None  # first z of the slab held in acc / wsum / uacc

    def finalise(z0: int, n: int) -> None:
        nonlocal probs
        n = min(n, full[0] - z0)
        if n <= 0 or acc is None:
            return
        w = wsum[:n]
        uncovered = w <= 0
        # the weight sum is one positive number per voxel, so the argmax of the weighted logit
        # sums is that of the blended logits: no division for the labels
        lab = _argmax0(acc[:, :n])
        lab.masked_fill_(uncovered, 0)
        labels[z0:z0 + n] = lab.cpu().numpy()
        if return_probabilities:
            if probs is None:
                probs = np.zeros((n_classes,) + full, np.float32)
                probs[0] = 1.0
            logits = acc[:, :n] / w.clamp_min(1e-12)
            logits[0].masked_fill_(uncovered, 1e4)  # softmax -> exactly (1, 0, ..., 0) there
            probs[:, z0:z0 + n] = torch.softmax(logits, dim=0).cpu().numpy()
        if unc is not None and uacc is not None:
            unc[z0:z0 + n] = (uacc[:n] / w.clamp_min(1e-12)).cpu().numpy()

    def advance(z_old: int, z_new: int) -> None:
        """Windows are sorted by z: rows before ``z_new`` are final; slide the slab to ``z_new``."""
        shift = z_new - z_old
        finalise(z_old, min(shift, pz))
        if acc is not None:
            if shift < pz:
                acc[:, :pz - shift] = acc[:, shift:].clone()
                acc[:, pz - shift:] = 0
                wsum[:pz - shift] = wsum[shift:].clone()
                wsum[pz - shift:] = 0
                if uacc is not None:
                    uacc[:pz - shift] = uacc[shift:].clone()
                    uacc[pz - shift:] = 0
            else:
                acc.zero_()
                wsum.zero_()
                if uacc is not None:
                    uacc.zero_()

    total, bs = len(windows), max(1, int(batch_size))
    i = 0
    with torch.inference_mode():
        while i < total:
            if cancel is not None and cancel():
                raise CancelledError("inference cancelled; nothing was written")
            # a batch may span z rows (the slab advances between its windows), so that no row ends
            # in a short batch: only the very last batch can hold fewer than `bs` windows
            batch = windows[i:i + bs]
            x = torch.stack([img[(slice(None),) + tuple(slice(a, a + p) for a, p in zip(w, patch))]
                             for w in batch]).to(device)
            try:
                logits, disagree = _predict(predictor, x, mirrors, device, return_uncertainty, precision)
            except torch.cuda.OutOfMemoryError as exc:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if bs > 1:
                    bs = max(1, bs // 2)
                    log.warning("CUDA out of memory; retrying with %d windows per batch", bs)
                    continue
                raise ResourceLimitError(
                    f"the GPU ran out of memory with one {patch} window per batch; run on the CPU "
                    "(--device cpu) or free GPU memory") from exc
            if acc is None:
                n_classes = logits.shape[1]
                acc = torch.zeros((n_classes, pz) + full[1:], dtype=torch.float32, device=device)
            for b, w in enumerate(batch):
                if buf_z is not None and w[0] != buf_z:
                    advance(buf_z, w[0])
                buf_z = w[0]
                sl = (slice(0, pz), slice(w[1], w[1] + patch[1]), slice(w[2], w[2] + patch[2]))
                acc[(slice(None),) + sl].addcmul_(logits[b], weight)
                wsum[sl].add_(weight)
                if uacc is not None and disagree is not None:
                    uacc[sl].addcmul_(disagree[b], weight)
            i += len(batch)
            if progress is not None:
                progress(i, total)
        if buf_z is not None:
            finalise(buf_z, pz)
    if any(pads):
        labels = labels[crop]
        probs = None if probs is None else probs[(slice(None),) + crop]
        unc = None if unc is None else unc[crop]
    if return_probabilities and probs is None:  # no window ran
        probs = np.zeros((max(n_classes, 1),) + shape, np.float32)
        probs[0] = 1.0
    return WindowResult(labels, probs, unc, total)


def _argmax0(t: torch.Tensor) -> torch.Tensor:
    """``argmax(t, dim=0)`` as uint8 (first maximum wins, as torch's); a pass per class is ~7x
    faster than torch's reduction over the outermost axis for the few classes of a label map."""
    idx = torch.zeros(t.shape[1:], dtype=torch.uint8, device=t.device)
    best = t[0].clone()
    for k in range(1, t.shape[0]):
        better = t[k] > best
        idx.masked_fill_(better, k)
        torch.maximum(best, t[k], out=best)
    return idx


def _predict(predictor: Predictor, x: torch.Tensor, mirrors: list[tuple[int, ...]], device: torch.device,
             uncertainty: bool, precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean logits over the mirrors (all in one forward pass), and the mirrors' disagreement."""
    b = x.shape[0]
    if len(mirrors) > 1:
        x = torch.cat([x.flip([d + 2 for d in m]) if m else x for m in mirrors])
    # PyTorch sends a CPU float32 convolution of batch 1 with a small N*C*D*H (<= 20480: a 3D window
    # with few channels) to its slow reference kernel instead of oneDNN: the demo UNet takes ~170 ms
    # for one 48^3 window alone and ~50 ms for a pair. 2D windows (pz = 1) run alone: there a pair
    # costs more than the slower single pass (4 x 96^2: 3.6 ms alone, 4.6 ms a pair).
    single = x.shape[0] == 1 and device.type == "cpu" and x.shape[2] > 1
    if single:
        x = torch.cat([x, x])
    with _autocast(device, precision):
        out = predictor(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    out = out.float()
    if single:
        out = out[:1]
    if len(mirrors) == 1:
        return out, (torch.zeros_like(out[:, 0]) if uncertainty else None)
    parts = [o.flip([d + 2 for d in m]) if m else o for o, m in zip(out.split(b), mirrors)]
    stacked = torch.stack(parts)  # (M, B, K, ...)
    mean = stacked.mean(0)
    disagree = None
    if uncertainty:
        ref = mean.argmax(1)
        disagree = (stacked.argmax(2) != ref).float().mean(0)
    return mean, disagree
