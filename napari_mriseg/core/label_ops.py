"""Correcting a label map: interpolation, clean-up, margins, logic, masked painting, region growing,
the overwrite policy, and the statistics that show how much was corrected.

Every function is pure: it takes arrays in ``(Z, Y, X)`` order (any axis order works as long as
``spacing`` lists the voxel size of each array axis, in mm), never changes its input, and returns a
NEW array or the ``(indices, values)`` of a change. A widget applies a change in three steps:

    proposed = fill_holes(labels, 2)                        # what the operation would make
    idx, values = policy_change(labels, proposed, policy="background", selected=2)
    workspace.edit_labels(idx, values)                      # one undo step

The overwrite policy (`POLICIES`) decides which proposed voxel changes are allowed, the same rule
as napari's ``preserve_labels`` extended to three levels:

* ``"background"``: a label may be written only onto background (0), and erasing (writing 0) may
  only remove voxels of the selected label;
* ``"selected"``: only voxels that are background or the selected label may change;
* ``"all"``: every change is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from .errors import InvalidImageError, OptionError, check_choice

__all__ = [
    "COMBINE_OPS",
    "POLICIES",
    "LabelStats",
    "allowed",
    "brush_disc",
    "changes",
    "combine_labels",
    "dice",
    "dilate_mask",
    "erode_mask",
    "fill_holes",
    "filter_change",
    "grow",
    "interpolate_label",
    "keep_largest_component",
    "label_stats",
    "masked_brush",
    "paint_mask",
    "policy_change",
    "region_grow",
    "remove_islands",
    "reviewed_fraction",
    "shrink",
]

Policy = Literal["background", "selected", "all"]
#: The overwrite policies, most protective first.
POLICIES: tuple[str, ...] = ("background", "selected", "all")
#: Logical operations of `combine_labels`.
COMBINE_OPS: tuple[str, ...] = ("union", "intersection", "subtract", "xor")

Indices = tuple[np.ndarray, ...]
_EPS_MM = 1e-6


# ---------------------------------------------------------------------------- helpers
def _labels3d(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 3:
        raise InvalidImageError(f"{name} must be a 3D (Z, Y, X) array; got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise InvalidImageError(f"{name} must hold integer labels; got dtype {a.dtype}")
    return a


def _spacing(spacing: Sequence[float], ndim: int = 3) -> np.ndarray:
    s = np.abs(np.asarray(spacing, dtype=float).reshape(-1))
    if s.shape != (ndim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise OptionError(f"spacing must be {ndim} positive voxel sizes in mm (array order); got {spacing!r}")
    return s


def _axis(axis: int, ndim: int = 3) -> int:
    if not -ndim <= int(axis) < ndim:
        raise OptionError(f"axis must be one of 0..{ndim - 1}; got {axis}")
    return int(axis) % ndim


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2, 3):
        raise OptionError(f"connectivity must be 1 (faces), 2 (edges) or 3 (corners); got {connectivity}")
    return ndimage.generate_binary_structure(3, connectivity)


def _bbox(mask: np.ndarray, pad: Sequence[int] | int = 0) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` widened by ``pad`` voxels per axis (clipped), or None if empty."""
    pads = np.broadcast_to(np.asarray(pad, dtype=int), (mask.ndim,))
    box = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if hit.size == 0:
            return None
        box.append(slice(max(0, hit[0] - pads[ax]), min(mask.shape[ax], hit[-1] + 1 + pads[ax])))
    return tuple(box)


def _box_distance(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """For each voxel, the distance in mm from its centre to the nearest ``mask`` voxel's box.

    The nearest voxel is the one whose centre is nearest (scipy's exact EDT with
    ``sampling=spacing``); the distance is then measured to that voxel's faces, i.e. per axis
    ``max(0, |offset| - 1/2) * spacing``. A voxel next to the mask through a 3 mm slice is 1.5 mm
    away, in-plane on 1 mm pixels 0.5 mm. Voxels of the mask are at 0.
    """
    if not mask.any():
        return np.full(mask.shape, np.inf)
    idx = ndimage.distance_transform_edt(~mask, sampling=spacing, return_distances=False, return_indices=True)
    total = np.zeros(mask.shape)
    for ax in range(mask.ndim):
        here = np.arange(mask.shape[ax]).reshape([-1 if a == ax else 1 for a in range(mask.ndim)])
        gap = np.maximum(np.abs(idx[ax] - here) - 0.5, 0.0) * spacing[ax]
        total += gap * gap
    return np.sqrt(total)


# ---------------------------------------------------------------------------- the policy
def allowed(before: np.ndarray, new: np.ndarray | int, *, policy: str = "background",
            selected: int | None = None) -> np.ndarray:
    """Which voxel changes ``before -> new`` the overwrite ``policy`` allows (bool, ``before``'s shape).

    Unchanged voxels are reported as not allowed (there is nothing to do there). See the module
    docstring for the rule; ``selected`` is the label being worked on (needed unless ``"all"``).
    """
    check_choice("policy", policy, POLICIES)
    before = np.asarray(before)
    new = np.asarray(new)
    ok = before != new
    if policy == "all":
        return ok
    if selected is None:
        raise OptionError(f"policy {policy!r} needs the selected label")
    if policy == "selected":
        return ok & ((before == 0) | (before == selected))
    return ok & np.where(new == 0, before == selected, before == 0)


def filter_change(before: np.ndarray, indices: Indices, values: np.ndarray | int, *,
                  policy: str = "background", selected: int | None = None) -> tuple[Indices, np.ndarray]:
    """Keep the part of a change ``before[indices] = values`` that ``policy`` allows.

    Returns ``(indices, values)`` (values as an array of ``before``'s dtype), changed voxels only.
    """
    before = np.asarray(before)
    idx = tuple(np.asarray(i, dtype=np.intp) for i in indices)
    vals = np.broadcast_to(np.asarray(values, dtype=before.dtype), idx[0].shape if idx else ())
    keep = allowed(before[idx], vals, policy=policy, selected=selected)
    return tuple(i[keep] for i in idx), np.array(vals[keep])


def changes(before: np.ndarray, after: np.ndarray) -> tuple[Indices, np.ndarray]:
    """The voxels where ``after`` differs from ``before``: ``(indices, new values)``."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise OptionError(f"label maps differ in shape: {before.shape} vs {after.shape}")
    idx = np.nonzero(before != after)
    return idx, after[idx].astype(before.dtype, copy=False)


def policy_change(before: np.ndarray, proposed: np.ndarray, *, policy: str = "background",
                  selected: int | None = None) -> tuple[Indices, np.ndarray]:
    """The allowed part of the change from ``before`` to ``proposed``: ``(indices, values)``."""
    idx, vals = changes(before, proposed)
    return filter_change(before, idx, vals, policy=policy, selected=selected)


def paint_mask(labels: np.ndarray, mask: np.ndarray, label: int) -> np.ndarray:
    """A copy of ``labels`` with ``label`` written wherever ``mask`` is true (no policy)."""
    out = np.array(labels, copy=True)
    out[np.asarray(mask, bool)] = label
    return out


# ---------------------------------------------------------------------------- interpolation
def _signed_distance(mask2d: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Outside distance minus inside distance (mm): negative inside, positive outside."""
    padded = np.pad(mask2d, 1)
    inside = ndimage.distance_transform_edt(padded, sampling=sampling)
    outside = ndimage.distance_transform_edt(~padded, sampling=sampling)
    return (outside - inside)[1:-1, 1:-1]


def interpolate_label(labels: np.ndarray, label: int, *, axis: int, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                      only_empty: bool = True) -> np.ndarray:
    """Shape-based interpolation of ``label`` between the slices where it was drawn.

    Along ``axis``, every run of slices without ``label`` that lies between two slices with it is
    filled by linear interpolation of the two slices' signed distance maps (in-plane, in mm,
    ``sampling`` = the in-plane spacing): at fraction ``t`` of the way the shape is
    ``(1 - t) * d0 + t * d1 < 0``. A disc of radius 10 mm on one slice and 20 mm four slices on
    gives discs of about 12.5, 15 and 17.5 mm in between. Like every shape-based interpolation it
    morphs overlapping shapes: a structure that moves by more than its own size between the two
    slices vanishes half way (draw an extra slice there).

    Parameters
    ----------
    labels : (Z, Y, X) int ndarray
        The label map (not modified).
    label : int
        The structure to interpolate (> 0).
    axis : int
        The array axis across which the slices were drawn (the view's slider axis).
    spacing : 3 floats
        Voxel size in mm per array axis.
    only_empty : bool
        Write only onto background voxels (default); otherwise over any label.

    Returns
    -------
    (Z, Y, X) ndarray
        A new label map; slices that were drawn are unchanged.
    """
    labels = _labels3d(labels)
    axis = _axis(axis)
    if label <= 0:
        raise OptionError(f"label must be a positive structure label; got {label}")
    sampling = np.delete(_spacing(spacing), axis)
    out = np.array(labels, copy=True)
    mask = np.moveaxis(labels == label, axis, 0)
    out_m = np.moveaxis(out, axis, 0)  # a view: writes land in `out`
    drawn = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    for s0, s1 in zip(drawn[:-1], drawn[1:], strict=True):
        if s1 - s0 < 2:
            continue
        box = _bbox(mask[s0] | mask[s1], pad=2)
        assert box is not None
        d0 = _signed_distance(mask[s0][box], sampling)
        d1 = _signed_distance(mask[s1][box], sampling)
        for s in range(s0 + 1, s1):
            t = (s - s0) / (s1 - s0)
            shape = (1.0 - t) * d0 + t * d1 < 0
            target = out_m[s][box]
            if only_empty:
                shape &= target == 0
            target[shape] = label
    return out


# ---------------------------------------------------------------------------- clean-up
def fill_holes(labels: np.ndarray, label: int, *, axis: int | None = None) -> np.ndarray:
    """Fill the holes of ``label``: background enclosed by it (in 3D, or per slice along ``axis``).

    A hole is a region not labelled ``label`` that cannot reach the array's border without crossing
    ``label`` (face connectivity). Holes holding another label are filled too; apply the overwrite
    policy (`policy_change`) to keep those.

    Returns a new label map.
    """
    labels = _labels3d(labels)
    mask = labels == label
    out = np.array(labels, copy=True)
    box = _bbox(mask)
    if box is None:
        return out
    sub = mask[box]
    if axis is None:
        filled = ndimage.binary_fill_holes(np.pad(sub, 1))[1:-1, 1:-1, 1:-1]
    else:
        ax = _axis(axis)
        filled = np.array(sub, copy=True)
        for i in range(sub.shape[ax]):
            sl = np.take(sub, i, axis=ax)
            if sl.any():
                index = [slice(None)] * 3
                index[ax] = i
                filled[tuple(index)] = ndimage.binary_fill_holes(np.pad(sl, 1))[1:-1, 1:-1]
    out[box][filled & ~sub] = label
    return out


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """(component image, voxel count per component id; index 0 = background)."""
    comp, n = ndimage.label(mask, structure=_structure(connectivity))
    return comp, np.bincount(comp.ravel(), minlength=n + 1)


def _present(labels: np.ndarray, label: int | None) -> list[int]:
    if label is not None:
        return [int(label)]
    return [int(v) for v in np.unique(labels) if v != 0]


def remove_islands(labels: np.ndarray, label: int | None, *, min_volume_mm3: float, spacing: Sequence[float],
                   connectivity: int = 3) -> np.ndarray:
    """Erase the connected pieces of ``label`` smaller than ``min_volume_mm3``.

    Parameters
    ----------
    labels : (Z, Y, X) int ndarray
    label : int or None
        The structure to clean; None cleans every label separately.
    min_volume_mm3 : float
        Pieces of strictly smaller volume (voxel count x voxel volume, mm^3) become background.
    spacing : 3 floats
        Voxel size in mm per array axis.
    connectivity : {1, 2, 3}
        Neighbourhood that joins voxels into one piece: faces (6), edges (18), corners (26).

    Returns a new label map.
    """
    voxel_mm3 = float(np.prod(_spacing(spacing)))

    def small(sizes: np.ndarray) -> np.ndarray:
        return sizes * voxel_mm3 < min_volume_mm3

    return _erase_components(labels, label, connectivity, small)


def keep_largest_component(labels: np.ndarray, label: int | None, *, connectivity: int = 3) -> np.ndarray:
    """Keep only the largest connected piece of ``label`` (None: of every label); a new label map.

    Of pieces of equal size the first in array order is kept.
    """

    def all_but_largest(sizes: np.ndarray) -> np.ndarray:
        drop = np.ones(sizes.size, bool)
        drop[1 + int(np.argmax(sizes[1:]))] = False
        return drop

    return _erase_components(labels, label, connectivity, all_but_largest)


def _erase_components(labels: np.ndarray, label: int | None, connectivity: int,
                      drop: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A copy of ``labels`` with the connected pieces of ``label`` (None: of every label) that
    ``drop(voxel counts per piece, index 0 = background)`` marks True set to background."""
    labels = _labels3d(labels)
    out = np.array(labels, copy=True)
    for lab in _present(labels, label):
        mask = labels == lab
        box = _bbox(mask)
        if box is None:
            continue
        comp, sizes = _components(mask[box], connectivity)
        erase = np.asarray(drop(sizes), bool)
        erase[0] = False
        if erase.any():
            out[box][erase[comp]] = 0
    return out


# ---------------------------------------------------------------------------- margins
def dilate_mask(mask: np.ndarray, *, margin_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``mask`` grown by ``margin_mm``: every voxel whose centre lies within ``margin_mm`` of the
    mask's surface (its voxels' faces; see `_box_distance`). A new bool array.

    Rounding: on 1 x 1 x 3 mm voxels (X, Y, Z) a 2 mm margin adds 2 voxels in-plane (0.5 and 1.5 mm
    from the surface) and 1 through-plane (1.5 mm; the next is 4.5 mm); a 1 mm margin adds 1
    in-plane and none through-plane.
    """
    mask = np.asarray(mask, bool)
    s = _spacing(spacing, mask.ndim)
    out = np.array(mask, copy=True)
    if margin_mm <= 0:
        return out
    box = _bbox(mask, pad=[math.ceil(margin_mm / v) + 1 for v in s])
    if box is None:
        return out
    out[box] |= _box_distance(mask[box], s) <= margin_mm + _EPS_MM
    return out


def erode_mask(mask: np.ndarray, *, margin_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``mask`` shrunk by ``margin_mm``: the complement of `dilate_mask` of the complement (same
    rounding). The array's border is not a surface: a mask touching it is not eroded from there."""
    mask = np.asarray(mask, bool)
    s = _spacing(spacing, mask.ndim)
    out = np.array(mask, copy=True)
    if margin_mm <= 0:
        return out
    box = _bbox(mask, pad=1)
    if box is None:
        return out
    sub = mask[box]
    if sub.all():
        return out
    out[box] &= ~(_box_distance(~sub, s) <= margin_mm + _EPS_MM)
    return out


def grow(labels: np.ndarray, label: int, *, margin_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``label`` grown by ``margin_mm`` (mm, honouring anisotropic ``spacing``; see `dilate_mask`
    for the rounding). A negative margin shrinks (`shrink`). Returns a new label map in which the
    grown voxels hold ``label`` whatever they held before: apply the overwrite policy after."""
    labels = _labels3d(labels)
    if margin_mm < 0:
        return shrink(labels, label, margin_mm=-margin_mm, spacing=spacing)
    return paint_mask(labels, dilate_mask(labels == label, margin_mm=margin_mm, spacing=spacing), label)


def shrink(labels: np.ndarray, label: int, *, margin_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``label`` shrunk by ``margin_mm`` (the removed voxels become background); a new label map."""
    labels = _labels3d(labels)
    mask = labels == label
    out = np.array(labels, copy=True)
    out[mask & ~erode_mask(mask, margin_mm=abs(margin_mm), spacing=spacing)] = 0
    return out


# ---------------------------------------------------------------------------- logic
def combine_labels(labels: np.ndarray, op: str, a: int, b: int, *, target: int,
                   other: np.ndarray | None = None) -> np.ndarray:
    """The region ``a op b`` becomes label ``target``; a new label map.

    Parameters
    ----------
    labels : (Z, Y, X) int ndarray
        The map edited; operand ``a`` is its label ``a``.
    op : {"union", "intersection", "subtract", "xor"}
        ``subtract`` is ``a`` minus ``b``.
    a, b : int
        Labels of the operands.
    target : int
        The label that receives the result: its voxels outside the result become background and
        the result's voxels become ``target`` (0 erases the result).
    other : (Z, Y, X) int ndarray, optional
        Where operand ``b`` is read (e.g. the original prediction); ``labels`` by default. Within
        one label map two labels never overlap, so intersection needs ``other``.
    """
    labels = _labels3d(labels)
    check_choice("logical operation", op, COMBINE_OPS)
    src = labels if other is None else _labels3d(other, "other")
    if src.shape != labels.shape:
        raise OptionError(f"the second label map has shape {src.shape}, the first {labels.shape}: "
                          "put both on one grid")
    in_a, in_b = labels == a, src == b
    region = {"union": in_a | in_b, "intersection": in_a & in_b, "subtract": in_a & ~in_b,
              "xor": in_a ^ in_b}[op]
    out = np.array(labels, copy=True)
    if target != 0:
        out[(labels == target) & ~region] = 0
    out[region] = target
    return out


# ---------------------------------------------------------------------------- painting, growing
def brush_disc(shape: Sequence[int], center: Sequence[float], *, radius_mm: float, spacing: Sequence[float],
               axes: Sequence[int] = (1, 2)) -> Indices:
    """Indices of a disc of ``radius_mm`` in the plane of ``axes`` through ``center`` (voxels).

    The disc holds the voxels whose centres are within ``radius_mm`` of the (rounded) centre, in mm
    with ``spacing``; the other axis stays at the centre's slice. Voxels outside ``shape`` are
    dropped.
    """
    shape = tuple(int(n) for n in shape)
    s = _spacing(spacing, len(shape))
    c = np.round(np.asarray(center, float)).astype(int)
    axes = [_axis(a, len(shape)) for a in axes]
    ranges = []
    for ax in range(len(shape)):
        if ax in axes:
            r = int(math.floor(radius_mm / s[ax] + _EPS_MM))
            ranges.append(np.arange(max(0, c[ax] - r), min(shape[ax], c[ax] + r + 1)))
        else:
            ranges.append(np.array([c[ax]]) if 0 <= c[ax] < shape[ax] else np.array([], int))
    grids = np.meshgrid(*ranges, indexing="ij")
    d2 = sum(((g - c[ax]) * s[ax]) ** 2 for ax, g in enumerate(grids))
    inside = d2 <= radius_mm * radius_mm + _EPS_MM
    return tuple(g[inside] for g in grids)


def masked_brush(labels: np.ndarray, intensity: np.ndarray, center: Sequence[float], *, label: int,
                 radius_mm: float, spacing: Sequence[float], lo: float, hi: float, axes: Sequence[int] = (1, 2),
                 policy: str = "all", selected: int | None = None) -> tuple[Indices, np.ndarray]:
    """One dab of a brush that paints only where ``lo <= intensity <= hi``.

    Returns the allowed change ``(indices, values)``: the `brush_disc` voxels whose intensity is in
    range, filtered by the overwrite ``policy`` (``selected`` defaults to ``label``).
    """
    labels = _labels3d(labels)
    intensity = np.asarray(intensity)
    if intensity.shape != labels.shape:
        raise OptionError(f"the intensity image has shape {intensity.shape}, the labels {labels.shape}: "
                          "resample it onto the labels grid")
    idx = brush_disc(labels.shape, center, radius_mm=radius_mm, spacing=spacing, axes=axes)
    v = intensity[idx]
    keep = (v >= lo) & (v <= hi)
    idx = tuple(i[keep] for i in idx)
    return filter_change(labels, idx, label, policy=policy, selected=label if selected is None else selected)


def region_grow(intensity: np.ndarray, seed: Sequence[int], *, tolerance: float, spacing: Sequence[float],
                max_radius_mm: float | None = None, slice_axis: int | None = None,
                connectivity: int = 1) -> np.ndarray:
    """The region connected to ``seed`` whose intensity is within ``tolerance`` of the seed's.

    The seed's intensity is the median of its 3 x 3 x 3 neighbourhood (robust to noise). Voxels
    join when ``|I - I_seed| <= tolerance`` and they connect to the seed through such voxels
    (``connectivity`` 1 = faces), optionally only within ``max_radius_mm`` (mm, ``spacing``) of the
    seed and only in the seed's slice across ``slice_axis``.

    Returns a new bool array of ``intensity``'s shape.
    """
    intensity = np.asarray(intensity)
    if intensity.ndim != 3:
        raise InvalidImageError(f"intensity must be a 3D (Z, Y, X) array; got shape {intensity.shape}")
    s = _spacing(spacing)
    seed_i = tuple(int(round(float(v))) for v in seed)
    if len(seed_i) != 3 or not all(0 <= v < n for v, n in zip(seed_i, intensity.shape, strict=True)):
        raise OptionError(f"seed {tuple(seed)} lies outside the image of shape {intensity.shape}")
    if tolerance < 0:
        raise OptionError(f"tolerance must be >= 0; got {tolerance}")
    hood = intensity[tuple(slice(max(0, v - 1), v + 2) for v in seed_i)]
    ref = float(np.median(hood))
    box = [slice(0, n) for n in intensity.shape]
    if max_radius_mm is not None and max_radius_mm > 0:
        for ax in range(3):
            r = int(math.floor(max_radius_mm / s[ax] + _EPS_MM))
            box[ax] = slice(max(0, seed_i[ax] - r), min(intensity.shape[ax], seed_i[ax] + r + 1))
    if slice_axis is not None:
        ax = _axis(slice_axis)
        box[ax] = slice(seed_i[ax], seed_i[ax] + 1)
    box_t = tuple(box)
    sub = intensity[box_t].astype(np.float32)
    cand = np.abs(sub - ref) <= tolerance
    local = tuple(v - b.start for v, b in zip(seed_i, box_t, strict=True))
    if max_radius_mm is not None and max_radius_mm > 0:
        d2 = sum(((np.arange(b.start, b.stop) - v) * s[ax]).reshape([-1 if a == ax else 1 for a in range(3)]) ** 2
                 for ax, (b, v) in enumerate(zip(box_t, seed_i, strict=True)))
        cand &= d2 <= max_radius_mm ** 2 + _EPS_MM
    out = np.zeros(intensity.shape, bool)
    if not cand[local]:
        return out
    comp, _ = ndimage.label(cand, structure=_structure(connectivity))
    out[box_t] = comp == comp[local]
    return out


# ---------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class LabelStats:
    """Size of one label and its agreement with a reference (e.g. the original prediction).

    ``volume_change_pct`` is ``100 * (volume - reference volume) / reference volume`` (None when the
    reference has none of the label); ``dice`` is None without a reference.
    """

    label: int
    voxels: int
    volume_mm3: float
    volume_ml: float
    reference_voxels: int | None = None
    dice: float | None = None
    volume_change_mm3: float | None = None
    volume_change_pct: float | None = None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two bool masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def _counts(labels: np.ndarray) -> dict[int, int]:
    flat = labels.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < 65536:
        c = np.bincount(flat.astype(np.intp, copy=False) if flat.dtype == bool else flat)
        return {int(v): int(n) for v, n in enumerate(c) if n}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=True)}


def label_stats(labels: np.ndarray, spacing: Sequence[float], *, reference: np.ndarray | None = None,
                include: Sequence[int] = ()) -> list[LabelStats]:
    """Per-label voxel count, volume (mm^3 and mL) and, given ``reference``, Dice and volume change.

    Parameters
    ----------
    labels : (Z, Y, X) int ndarray
    spacing : 3 floats
        Voxel size in mm per array axis (volume of a voxel = their product).
    reference : (Z, Y, X) int ndarray, optional
        The map to compare with (same shape), e.g. the model's untouched prediction.
    include : ints
        Labels listed even when absent from both maps.

    Returns
    -------
    list of LabelStats
        One per non-zero label present in either map (or in ``include``), by label value.
    """
    labels = _labels3d(labels)
    voxel_mm3 = float(np.prod(_spacing(spacing)))
    n = _counts(labels)
    nr: dict[int, int] = {}
    inter: dict[int, int] = {}
    if reference is not None:
        reference = _labels3d(reference, "reference")
        if reference.shape != labels.shape:
            raise OptionError(f"reference has shape {reference.shape}, labels {labels.shape}")
        nr = _counts(reference)
        inter = _counts(labels[labels == reference])
    values = sorted({v for v in (*n, *nr, *include) if v != 0})
    out = []
    for v in values:
        cnt = n.get(v, 0)
        vol = cnt * voxel_mm3
        if reference is None:
            out.append(LabelStats(v, cnt, vol, vol / 1000.0))
            continue
        rc = nr.get(v, 0)
        d = 1.0 if cnt + rc == 0 else 2.0 * inter.get(v, 0) / (cnt + rc)
        change = (cnt - rc) * voxel_mm3
        pct = None if rc == 0 else 100.0 * (cnt - rc) / rc
        out.append(LabelStats(v, cnt, vol, vol / 1000.0, rc, d, change, pct))
    return out


def reviewed_fraction(reviewed: np.ndarray | None) -> float:
    """Share of voxels marked reviewed (0..1); 0 without a mask."""
    if reviewed is None or np.size(reviewed) == 0:
        return 0.0
    return float(np.count_nonzero(reviewed)) / float(np.size(reviewed))
