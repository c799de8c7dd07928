"""Window/level: presets, conversions and the histogram of the voxels inside the head.

A display *window* is a pair ``(width, level)`` in the image's intensity units (Hounsfield units
for CT): grey values from ``level - width / 2`` (black) to ``level + width / 2`` (white). napari
calls the same pair of bounds *contrast limits*; `window_to_limits` and `limits_to_window`
convert between the two.

CT presets, ``(width, level)`` in HU, are the usual clinical values listed by Radiopaedia's
"Windowing (CT)" article (https://radiopaedia.org/articles/windowing-ct):

========  ======  =====  ========================================================================
preset    width   level  note
========  ======  =====  ========================================================================
brain        80     40
subdural    200     75   Radiopaedia gives W 130-300, L 50-100; 200/75 is the middle of that
stroke       40     40   the narrower 8/32 of Radiopaedia case 19148 is too harsh for a default
bone       2800    600   temporal-bone window
lung       1500   -600
abdomen     400     50   soft tissue
liver       150     30
========  ======  =====  ========================================================================

MRI intensities have no physical unit, so its presets are percentile windows of the voxels
inside the head (`head_sample`): 1-99 % and 0.5-99.5 %.

Everything here is pure numpy (no Qt, no napari): arrays in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidImageError, check_choice

#: CT presets: name -> (width, level) in Hounsfield units (see the module docstring for sources).
CT_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (80.0, 40.0),
    "subdural": (200.0, 75.0),
    "stroke": (40.0, 40.0),
    "bone": (2800.0, 600.0),
    "lung": (1500.0, -600.0),
    "abdomen": (400.0, 50.0),
    "liver": (150.0, 30.0),
}

#: MRI presets: name -> (low, high) percentiles of the voxels inside the head.
MRI_PERCENTILE_PRESETS: dict[str, tuple[float, float]] = {
    "1-99%": (1.0, 99.0),
    "0.5-99.5%": (0.5, 99.5),
}

#: Voxels at or below this value (HU) are air: a volume whose minimum is this low is taken as CT.
CT_AIR_HU = -500.0
#: How many voxels `head_sample` looks at, at most (a regular sub-grid of the volume).
DEFAULT_MAX_VOXELS = 1_000_000
#: A drag of this many screen pixels changes the window (or level) by the window's width at press.
DRAG_PIXELS_PER_WIDTH = 256.0
#: The narrowest window, as a fraction of the data's intensity range.
MIN_WIDTH_FRACTION = 1e-4


# ---------------------------------------------------------------------------- conversions
def window_to_limits(width: float, level: float) -> tuple[float, float]:
    """Contrast limits ``(low, high)`` of the window ``(width, level)`` (same units as the data).

    ``low = level - width / 2``, ``high = level + width / 2`` (the plain linear mapping; DICOM's
    ``VOI LUT`` half-voxel offsets are below any display's resolution and are not applied).
    Raises `InvalidImageError` for a width that is not a positive finite number.
    """
    width, level = float(width), float(level)
    if not (math.isfinite(width) and width > 0 and math.isfinite(level)):
        raise InvalidImageError(f"a window needs a positive finite width and a finite level; "
                                f"got width={width!r}, level={level!r}")
    return level - width / 2.0, level + width / 2.0


def limits_to_window(low: float, high: float) -> tuple[float, float]:
    """The window ``(width, level)`` of contrast limits ``(low, high)``, ``low < high``."""
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InvalidImageError(f"contrast limits must be finite with low < high; got ({low!r}, {high!r})")
    return high - low, (low + high) / 2.0


def _first_number(value: Any) -> float | None:
    """A DICOM value that may be multi-valued (``"40\\400"``, a list, a MultiValue): its first."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split("\\")[0].strip()
        if not value:
            return None
    elif not np.isscalar(value):
        seq = list(value)
        if not seq:
            return None
        value = seq[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def dicom_window(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    """The window ``(width, level)`` from DICOM's WindowWidth / WindowCenter tags, or None.

    Parameters
    ----------
    meta : mapping
        A volume's ``meta``: the DICOM reader stores the tags as ``window_center`` and
        ``window_width``. Multi-valued tags (several windows) give their first window.
    """
    centre, width = _first_number(meta.get("window_center")), _first_number(meta.get("window_width"))
    if centre is None or width is None or width <= 0:
        return None
    return width, centre


# ---------------------------------------------------------------------------- the head
def subsample(array: np.ndarray, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> np.ndarray:
    """A regular sub-grid of ``array`` (every ``s``-th voxel along every axis) of at most about
    ``max_voxels`` voxels; ``array`` itself when it is small enough. Never copies the whole array."""
    step = sample_step(tuple(array.shape), max_voxels=max_voxels)
    if step == 1:
        return np.asarray(array)
    return np.asarray(array[(slice(None, None, step),) * len(array.shape)])


def looks_like_ct(values: np.ndarray) -> bool:
    """True when ``values`` reach air in Hounsfield units (minimum <= `CT_AIR_HU`)."""
    v = np.asarray(values)
    return v.size > 0 and float(np.nanmin(v)) <= CT_AIR_HU


def head_sample(array: np.ndarray, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> np.ndarray:
    """The values of the voxels inside the head, from a sub-grid of at most ``max_voxels`` voxels.

    The head is found as `napari_mriseg.core.registration.head_mask` finds it (voxels above 10 %
    of the 99.5th percentile, small islands dropped) for MRI, and as the voxels above
    `CT_AIR_HU` for CT (`looks_like_ct`). When that leaves almost nothing (a blank or uniform
    image), every finite voxel of the sub-grid is returned.

    Parameters
    ----------
    array : ndarray
        The image, any number of dimensions ((Z, Y, X) for a volume); any real dtype.
    max_voxels : int
        Cost bound: a 1 mm head (about 9 million voxels) is read on a step-3 sub-grid.

    Returns
    -------
    (N,) float32 ndarray
        Inside-head values, unordered. Empty only when the image has no finite voxel.
    """
    sub = subsample(array, max_voxels=max_voxels).astype(np.float32, copy=False)
    finite = np.isfinite(sub)
    values = sub[finite]
    if values.size == 0:
        return values
    if looks_like_ct(values):
        inside = finite & (sub > CT_AIR_HU)
    elif sub.ndim == 3 and min(sub.shape) > 1:
        from .registration import head_mask
        from .volume import Volume

        try:
            inside = head_mask(Volume(np.where(finite, sub, 0.0))).array.astype(bool)
        except Exception:  # an empty image: no head, fall back to every finite voxel
            inside = finite
    else:
        top = float(np.percentile(values, 99.5))
        inside = finite & (sub > 0.1 * top) if top > 0 else finite
    head = sub[inside]
    return head if head.size >= max(16, 0.001 * values.size) else values


# ---------------------------------------------------------------------------- presets
def percentile_window(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The window ``(width, level)`` from the ``low``-th to the ``high``-th percentile of ``values``.

    A uniform sample (zero width) gets a width of 1 intensity unit. Raises `InvalidImageError`
    for an empty sample or percentiles outside ``0 <= low < high <= 100``.
    """
    if not 0.0 <= low < high <= 100.0:
        raise InvalidImageError(f"percentiles must satisfy 0 <= low < high <= 100; got {low}, {high}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InvalidImageError("no finite voxel to compute a percentile window from")
    lo, hi = (float(x) for x in np.percentile(v, [low, high]))
    if hi <= lo:
        return 1.0, lo
    return hi - lo, (lo + hi) / 2.0


def preset_names() -> tuple[str, ...]:
    """Every preset name `preset_window` accepts: ``mri 1-99%``, ..., ``ct brain``, ..."""
    return (*(f"mri {n}" for n in MRI_PERCENTILE_PRESETS), *(f"ct {n}" for n in CT_PRESETS))


def preset_window(name: str, values: np.ndarray | None = None) -> tuple[float, float]:
    """The window ``(width, level)`` of a preset.

    Parameters
    ----------
    name : str
        One of `preset_names`: ``"ct brain"`` (fixed HU values from `CT_PRESETS`) or
        ``"mri 1-99%"`` (percentiles of ``values``).
    values : ndarray, optional
        The inside-head sample (`head_sample`); required by the MRI presets.
    """
    check_choice("window preset", name, preset_names())
    kind, _, key = name.partition(" ")
    if kind == "ct":
        return CT_PRESETS[key]
    if values is None:
        raise InvalidImageError(f"the {name!r} window needs the image's voxels (values=head_sample(array))")
    return percentile_window(values, *MRI_PERCENTILE_PRESETS[key])


def initial_window(array: np.ndarray, meta: Mapping[str, Any] | None = None, *,
                   max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[float, float]:
    """The window an image opens with: DICOM's WindowCenter/WindowWidth when the file has them
    (`dicom_window`), else the 0.5-99.5 % percentile window of the voxels inside the head."""
    found = dicom_window(meta or {})
    if found is not None:
        return found
    return percentile_window(head_sample(array, max_voxels=max_voxels), 0.5, 99.5)


# ---------------------------------------------------------------------------- histogram
@dataclass(frozen=True)
class Histogram:
    """Voxel counts per intensity bin.

    Attributes
    ----------
    counts : (B,) int64 ndarray
        Voxels of the sample in each bin.
    edges : (B + 1,) float64 ndarray
        Bin edges in intensity units, increasing; bin ``i`` is ``[edges[i], edges[i+1])`` (the
        last bin includes its right edge).
    step : int
        Sub-grid step the sample was taken with (each count stands for about ``step ** ndim``
        voxels); 1 for a full count.
    """

    counts: np.ndarray
    edges: np.ndarray
    step: int = 1

    @property
    def centres(self) -> np.ndarray:
        """(B,) bin centres in intensity units."""
        return (self.edges[:-1] + self.edges[1:]) / 2.0

    def heights(self, *, log: bool = False) -> np.ndarray:
        """(B,) bar heights scaled to [0, 1]; with ``log``, ``log(1 + count)`` before scaling."""
        h = np.log1p(self.counts.astype(np.float64)) if log else self.counts.astype(np.float64)
        top = float(h.max()) if h.size else 0.0
        return h / top if top > 0 else h


def histogram(values: np.ndarray, *, bins: int = 256, value_range: tuple[float, float] | None = None,
              step: int = 1) -> Histogram:
    """Histogram of ``values`` (e.g. `head_sample`) in ``bins`` equal bins.

    Parameters
    ----------
    values : ndarray
        Intensities; non-finite values are ignored.
    bins : int
        Number of bins (>= 1).
    value_range : (low, high), optional
        Span of the bins; values outside are not counted. Default: the sample's minimum to maximum
        (a uniform sample gets a span of 1 around its value).
    step : int
        Recorded in the result (see `Histogram.step`).
    """
    if bins < 1:
        raise InvalidImageError(f"a histogram needs at least 1 bin; got {bins}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if value_range is None:
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return Histogram(counts.astype(np.int64), edges.astype(np.float64), int(step))


def sample_step(shape: tuple[int, ...], *, max_voxels: int = DEFAULT_MAX_VOXELS) -> int:
    """The sub-grid step `subsample` uses for an array of ``shape``."""
    size = int(np.prod(shape))
    if size <= max_voxels or not shape:
        return 1
    return max(1, math.ceil((size / max_voxels) ** (1.0 / len(shape))))


# ---------------------------------------------------------------------------- mouse drag
def drag_window(width: float, level: float, dx: float, dy: float, *,
                data_range: float) -> tuple[float, float]:
    """The window after a W/L mouse drag of ``(dx, dy)`` screen pixels from where it was
    ``(width, level)`` at the press.

    Dragging right widens the window (less contrast), left narrows it; dragging down raises the
    level (darker), up lowers it (brighter). Both move by ``s`` intensity units per pixel, with
    ``s = max(width, MIN_WIDTH_FRACTION * data_range) / DRAG_PIXELS_PER_WIDTH``: a 256-pixel
    drag changes either by the window's own width, so a narrow brain window (80 HU) is as easy
    to tune as a wide bone window (2800 HU).

    Parameters
    ----------
    width, level : float
        The window at the press (intensity units).
    dx, dy : float
        Pointer movement since the press, screen pixels (x rightward, y downward).
    data_range : float
        The data's intensity span (max - min); bounds the narrowest window.

    Returns
    -------
    (width, level) : tuple of float
        ``width`` is never below ``MIN_WIDTH_FRACTION * data_range`` (and never 0).
    """
    floor = max(abs(float(data_range)) * MIN_WIDTH_FRACTION, 1e-6)
    per_pixel = max(float(width), floor) / DRAG_PIXELS_PER_WIDTH
    return max(float(width) + float(dx) * per_pixel, floor), float(level) + float(dy) * per_pixel


def clamp_width(width: float, data_range: float) -> float:
    """``width`` raised to the narrowest window `drag_window` allows for ``data_range``."""
    return max(float(width), abs(float(data_range)) * MIN_WIDTH_FRACTION, 1e-6)
