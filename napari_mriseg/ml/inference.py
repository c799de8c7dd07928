"""Sliding-window inference with bounded memory.

Windows are placed exactly as MONAI's ``sliding_window_inference`` places them (same starts for
the same image size, patch and overlap) and blended with the same Gaussian importance map, so the
two agree; ours is faster and lighter because it

* skips windows that hold no foreground (``mask``) voxel,
* caches the importance map, batches windows (and their TTA mirrors) into one forward pass,
* streams along Z: the accumulator holds one patch-deep slab, and rows that no later window can
  touch are finalised (softmax, argmax) and freed at once, so memory does not grow with the
  volume (no full-volume per-class float32 logits).

Predictors are plain callables ``(B, C, pz, py, px) tensor -> (B, K, pz, py, px) logits``, so tests
run this with stand-in predictors.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..core.errors import ResourceLimitError
from .errors import CancelledError

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], torch.Tensor]


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


def _mirror_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    axes = sorted(set(axes))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _autocast(device: torch.device):
    if device.type == "cuda":
        dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dt)
    return torch.autocast("cpu", enabled=False)


def sliding_window(image: np.ndarray | torch.Tensor, predictor: Predictor, patch_size: Sequence[int], *,
                   overlap: float = 0.5, batch_size: int = 2, mask: np.ndarray | None = None,
                   mirror_axes: Sequence[int] = (), sigma_scale: float = 0.125,
                   device: str | torch.device = "cpu", return_probabilities: bool = False,
                   return_uncertainty: bool = False,
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
    progress : callable(done, total), optional
        Called after each batch with windows done and total.
    cancel : callable() -> bool, optional
        Polled before each batch; True raises `CancelledError`.
    """
    device = torch.device(device)
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

    def finalise(z0: int, n: int) -> None:
        nonlocal probs
        n = min(n, full[0] - z0)
        if n <= 0 or acc is None:
            return
        w = wsum[:n]
        covered = w > 0
        logits = acc[:, :n] / w.clamp_min(1e-12)
        p = torch.softmax(logits, dim=0)
        lab = torch.argmax(logits, dim=0).to(torch.uint8)
        lab[~covered] = 0
        labels[z0:z0 + n] = lab.cpu().numpy()
        if return_probabilities:
            if probs is None:
                probs = np.zeros((n_classes,) + full, np.float32)
                probs[0] = 1.0
            p[:, ~covered] = 0
            p[0][~covered] = 1
            probs[:, z0:z0 + n] = p.cpu().numpy()
        if unc is not None and uacc is not None:
            unc[z0:z0 + n] = (uacc[:n] / w.clamp_min(1e-12)).cpu().numpy()

    done, total, bs = 0, len(windows), max(1, int(batch_size))
    buf_z: int | None = None
    i = 0
    with torch.inference_mode():
        while i < total:
            if cancel is not None and cancel():
                raise CancelledError("inference cancelled; nothing was written")
            z0 = windows[i][0]
            group_end = i
            while group_end < total and windows[group_end][0] == z0 and group_end - i < bs:
                group_end += 1
            if buf_z is None:
                buf_z = z0
            elif z0 != buf_z:  # windows are sorted by z: rows before z0 are final
                shift = z0 - buf_z
                finalise(buf_z, min(shift, pz))
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
                buf_z = z0
            batch = windows[i:group_end]
            x = torch.stack([img[(slice(None),) + tuple(slice(a, a + p) for a, p in zip(w, patch))]
                             for w in batch]).to(device)
            try:
                logits, disagree = _predict(predictor, x, mirrors, device, return_uncertainty)
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
                sl = (slice(0, pz), slice(w[1], w[1] + patch[1]), slice(w[2], w[2] + patch[2]))
                acc[(slice(None),) + sl].add_(logits[b] * weight)
                wsum[sl].add_(weight)
                if uacc is not None and disagree is not None:
                    uacc[sl].add_(disagree[b] * weight)
            i = group_end
            done = i
            if progress is not None:
                progress(done, total)
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


def _predict(predictor: Predictor, x: torch.Tensor, mirrors: list[tuple[int, ...]], device: torch.device,
             uncertainty: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean logits over the mirrors (all in one forward pass), and the mirrors' disagreement."""
    b = x.shape[0]
    if len(mirrors) > 1:
        x = torch.cat([x.flip([d + 2 for d in m]) if m else x for m in mirrors])
    single = x.shape[0] == 1 and device.type == "cpu"
    if single:  # PyTorch runs small-channel 3D convolutions of batch 1 on a much slower CPU path
        x = torch.cat([x, x])
    with _autocast(device):
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
