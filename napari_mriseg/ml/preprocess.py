"""Preprocessing shared by inference and training: channel checks, model grid, head mask,
per-channel normalisation and foreground boxes. Pure numpy/scipy (no torch).

Arrays are ``(C, Z, Y, X)`` channel stacks or ``(Z, Y, X)`` volumes; spacings are mm in the same
array axis order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..core.errors import InvalidImageError, check_choice
from ..core.volume import Grid
from .config import NORMALISATIONS


def check_channels(arrays: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Raise `InvalidImageError` if a channel holds NaN/inf or is constant (no information)."""
    for arr, name in zip(arrays, names):
        a = np.asarray(arr)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InvalidImageError(f"sequence {name!r} holds NaN or infinite values; fix or re-export it")
        if a.size == 0 or a.min() == a.max():
            raise InvalidImageError(f"sequence {name!r} is constant ({a.flat[0] if a.size else 'empty'}); "
                                    "it carries no image, check the file")


def model_grid(grid: Grid, spacing: Sequence[float]) -> Grid:
    """A grid covering the same physical box as ``grid`` with voxels of ``spacing`` mm.

    Direction is kept; the outer corner of voxel ``(0, 0, 0)`` stays in place. If the spacings
    already agree to 1 µm, ``grid`` itself is returned.
    """
    sp_old = np.asarray(grid.spacing)
    sp_new = np.asarray(spacing, dtype=float)
    if np.allclose(sp_old, sp_new, atol=1e-3):
        return grid
    shape = np.maximum(1, np.round(np.asarray(grid.shape) * sp_old / sp_new)).astype(int)
    corner = np.asarray(grid.origin) - grid.direction @ (0.5 * sp_old)
    origin = corner + grid.direction @ (0.5 * sp_new)
    return Grid(tuple(shape), tuple(sp_new), tuple(origin), grid.direction)


def head_mask(channels: np.ndarray, *, fraction: float = 0.05) -> np.ndarray:
    """Voxels inside the head: any channel above ``fraction`` of its 99th percentile, holes filled.

    Parameters
    ----------
    channels : (C, Z, Y, X) ndarray
    fraction : float
        Threshold relative to each channel's robust maximum (background of MRI is dark or 0).

    Returns
    -------
    (Z, Y, X) bool ndarray
    """
    mask = np.zeros(channels.shape[1:], bool)
    for ch in channels:
        lo = float(ch.min())
        hi = float(np.percentile(ch, 99))
        mask |= ch > lo + fraction * (hi - lo)
    if not mask.any():
        return np.ones_like(mask)
    # keep the largest connected piece (noise specks out), fill its holes
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def normalise(channels: np.ndarray, schemes: Sequence[str], mask: np.ndarray | None = None,
              *, out: np.ndarray | None = None) -> np.ndarray:
    """Per-channel intensity normalisation, as float32.

    Parameters
    ----------
    channels : (C, Z, Y, X) ndarray
    schemes : sequence of {"zscore_head", "zscore", "none"}
        ``zscore_head``: (x - mean) / std over ``mask``, and 0 outside it. ``zscore``: over the
        whole volume.
    mask : (Z, Y, X) bool ndarray, optional
        Head mask; computed with `head_mask` if needed and not given.
    out : (C, Z, Y, X) float32 ndarray, optional
        Written in place (may be ``channels`` itself when that is float32).
    """
    if len(schemes) != channels.shape[0]:
        raise InvalidImageError(f"{len(schemes)} normalisation schemes for {channels.shape[0]} channels")
    res = np.empty(channels.shape, np.float32) if out is None else out
    for c, scheme in enumerate(schemes):
        check_choice("normalisation", scheme, NORMALISATIONS)
        x = channels[c]
        if scheme == "none":
            res[c] = x
            continue
        if scheme == "zscore_head":
            if mask is None:
                mask = head_mask(channels)
            vals = x[mask]
        else:
            vals = x
        mean = float(vals.mean(dtype=np.float64))
        std = float(vals.std(dtype=np.float64))
        std = std if std > 1e-8 else 1.0
        np.subtract(x, mean, out=res[c], casting="unsafe")
        res[c] /= std
        if scheme == "zscore_head":
            res[c][~mask] = 0.0
    return res


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding all True voxels of ``mask``, grown by ``margin`` voxels."""
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    margins = np.broadcast_to(np.asarray(margin, int), (mask.ndim,))
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(0, idx[0] - margins[ax]), min(mask.shape[ax], idx[-1] + 1 + margins[ax])))
    return tuple(out)
