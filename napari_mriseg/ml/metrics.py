"""Segmentation metrics per label and per BraTS region, with physical spacing (no torch needed).

Definitions (``P`` predicted mask, ``T`` truth mask, surfaces = mask XOR its erosion by the
6-connected cross, distances in mm between surface voxel centres):

* Dice ``2|P&T| / (|P|+|T|)``; Jaccard ``|P&T| / |P|T|``; sensitivity ``TP/(TP+FN)``;
  specificity ``TN/(TN+FP)``; precision ``TP/(TP+FP)``.
* HD95 is the **maximum of the two directed 95th percentiles** (P->T and T->P), as MONAI
  (``compute_hausdorff_distance(percentile=95)``) and DeepMind's surface-distance define it;
  MedPy's ``hd95`` pools both directions before taking the percentile, which gives a value
  less than or equal to ours. HD is the maximum distance.
* ASSD is the mean of all surface distances of both directions pooled (MONAI's
  ``symmetric=True``); MedPy's ``assd`` averages the two directed means instead.
* Volumes in mL (voxel count x voxel volume / 1000); volume error = predicted - true.

Empty masks: when P and T are both empty every agreement score is 1 and every distance 0
(nothing to find, nothing found); when exactly one is empty Dice, Jaccard and the undefined
ratio are 0 or NaN (a ratio whose denominator is 0 is NaN) and the distances are ``inf``
(as MONAI). Summaries average finite values and count the infinite ones.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..core.errors import MriSegError
from ..core.volume import Volume

log = logging.getLogger(__name__)

BRATS_LABELS: dict[str, tuple[int, ...]] = {"necrotic": (1,), "oedema": (2,), "enhancing": (3,)}
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"whole_tumour": (1, 2, 3), "tumour_core": (1, 3),
                                              "enhancing_tumour": (3,)}
METRICS = ("dice", "jaccard", "sensitivity", "specificity", "precision", "hd95", "hd", "assd",
           "volume_pred_ml", "volume_truth_ml", "volume_error_ml")
_CROSS = ndimage.generate_binary_structure(3, 1)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else math.nan


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        out.append(slice(max(0, idx[0] - margin), min(mask.shape[ax], idx[-1] + 1 + margin)))
    return tuple(out)


def _surface_points(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    edge = mask & ~ndimage.binary_erosion(mask, _CROSS)
    return np.argwhere(edge) * spacing


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (each P surface voxel -> T surface, each T -> P).

    Both masks must be non-empty (boolean, same shape).
    """
    sp = np.asarray(spacing, float)
    box = _bbox(pred | truth)
    p, t = pred[box], truth[box]
    sp_pts, st_pts = _surface_points(p, sp), _surface_points(t, sp)
    d_pt = cKDTree(st_pts, leafsize=32).query(sp_pts, k=1)[0]
    d_tp = cKDTree(sp_pts, leafsize=32).query(st_pts, k=1)[0]
    return d_pt, d_tp


def binary_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], *,
                   counts: tuple[int, int, int, int] | None = None, distances: bool = True) -> dict[str, float]:
    """All metrics of one pair of boolean masks ``(Z, Y, X)``; spacing in mm, array order.

    ``counts`` = (TP, FP, FN, TN) if already known (skips counting).
    """
    if counts is None:
        tp = int(np.count_nonzero(pred & truth))
        n_p, n_t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
        fp, fn = n_p - tp, n_t - tp
        tn = pred.size - tp - fp - fn
    else:
        tp, fp, fn, tn = counts
    n_p, n_t = tp + fp, tp + fn
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = {"volume_pred_ml": n_p * voxel_ml, "volume_truth_ml": n_t * voxel_ml,
           "volume_error_ml": (n_p - n_t) * voxel_ml}
    if n_p == 0 and n_t == 0:
        out.update(dice=1.0, jaccard=1.0, sensitivity=1.0, specificity=1.0, precision=1.0, hd95=0.0, hd=0.0,
                   assd=0.0)
        return out
    out.update(dice=2 * tp / (n_p + n_t), jaccard=tp / (tp + fp + fn), sensitivity=_ratio(tp, n_t),
               specificity=_ratio(tn, tn + fp), precision=_ratio(tp, n_p))
    if not distances:
        return out
    if n_p == 0 or n_t == 0:
        out.update(hd95=math.inf, hd=math.inf, assd=math.inf)
        return out
    d_pt, d_tp = surface_distances(pred, truth, spacing)
    out["hd95"] = float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))
    out["hd"] = float(max(d_pt.max(), d_tp.max()))
    out["assd"] = float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))
    return out


def evaluate(pred: np.ndarray | Volume, truth: np.ndarray | Volume, spacing: Sequence[float] | None = None, *,
             labels: Mapping[str, Sequence[int]] | None = None,
             regions: Mapping[str, Sequence[int]] | None = None,
             distances: bool = True) -> dict[str, dict[str, float]]:
    """Metrics per label and per region of two label maps on one grid.

    Parameters
    ----------
    pred, truth : (Z, Y, X) integer ndarray or label Volume
        With Volumes, their grids must match and ``spacing`` defaults to theirs.
    spacing : (3,) floats, mm, array axis order
        Required for arrays.
    labels, regions : mapping of name to label values
        Defaults `BRATS_LABELS` and `BRATS_REGIONS` (whole tumour 1+2+3, tumour core 1+3,
        enhancing 3).
    distances : bool
        Compute HD95, HD and ASSD (the slow part).

    Returns
    -------
    dict of name to dict of metric to float
        Metric names: `METRICS`; distances in mm, volumes in mL.
    """
    if isinstance(pred, Volume) and isinstance(truth, Volume):
        truth.grid.check_same(pred.grid, this_name="truth", other_name="prediction")
        spacing = spacing if spacing is not None else truth.spacing
    p_arr, t_arr = np.asarray(getattr(pred, "array", pred)), np.asarray(getattr(truth, "array", truth))
    if p_arr.shape != t_arr.shape:
        raise MriSegError(f"prediction shape {p_arr.shape} differs from truth shape {t_arr.shape}")
    if spacing is None:
        raise MriSegError("spacing (mm) is needed to evaluate arrays")
    spacing = tuple(float(s) for s in spacing)
    groups = {**(BRATS_LABELS if labels is None else labels), **(BRATS_REGIONS if regions is None else regions)}
    box = _bbox((p_arr != 0) | (t_arr != 0))
    results: dict[str, dict[str, float]] = {}
    cache: dict[tuple[int, ...], dict[str, float]] = {}
    n_total = p_arr.size
    if box is None:
        p_c = t_c = np.zeros((1, 1, 1), np.uint8)
    else:
        p_c, t_c = p_arr[box], t_arr[box]
    # one joint histogram gives TP/FP/FN/TN of every label and region
    p_vals, p_inv = np.unique(p_c, return_inverse=True)
    t_vals, t_inv = np.unique(t_c, return_inverse=True)
    joint = np.bincount(p_inv.ravel() * len(t_vals) + t_inv.ravel(),
                        minlength=len(p_vals) * len(t_vals)).reshape(len(p_vals), len(t_vals))
    for name, values in groups.items():
        key = tuple(sorted(int(v) for v in values))
        if key not in cache:
            pin, tin = np.isin(p_vals, key), np.isin(t_vals, key)
            tp = int(joint[np.ix_(pin, tin)].sum())
            fp = int(joint[pin].sum()) - tp
            fn = int(joint[:, tin].sum()) - tp
            tn = n_total - tp - fp - fn
            need = distances and (tp + fp) > 0 and (tp + fn) > 0
            pm = np.isin(p_c, key) if need else None
            tm = np.isin(t_c, key) if need else None
            if need:
                cache[key] = binary_metrics(pm, tm, spacing, counts=(tp, fp, fn, tn))
            else:
                cache[key] = binary_metrics(np.zeros(1, bool), np.zeros(1, bool), spacing,
                                            counts=(tp, fp, fn, tn), distances=distances)
        results[name] = dict(cache[key])
    return results


# --------------------------------------------------------------------------- folders
def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _truth_file(truth_dir: Path, case: str) -> Path | None:
    for suf in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if (truth_dir / f"{case}{suf}").is_file():
            return truth_dir / f"{case}{suf}"
    folder = truth_dir / case
    if folder.is_dir():
        from ..core.case import is_label_file

        found = sorted(p for p in folder.iterdir() if is_label_file(p.name))
        if found:
            return found[0]
    return None


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows (dicts with the same keys) as CSV atomically."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def summarise(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[dict[str, Any]]:
    """Rows ``region, metric, mean, std, median, n, n_inf`` over cases (finite values only)."""
    rows = []
    first = next(iter(per_case.values()))
    for region in first:
        for metric in METRICS:
            vals = np.array([c[region][metric] for c in per_case.values()], float)
            fin = vals[np.isfinite(vals)]
            rows.append({"region": region, "metric": metric,
                         "mean": float(fin.mean()) if fin.size else math.nan,
                         "std": float(fin.std()) if fin.size else math.nan,
                         "median": float(np.median(fin)) if fin.size else math.nan,
                         "n": int(fin.size), "n_inf": int(np.isinf(vals).sum())})
    return rows


def evaluate_folders(pred_dir: str | Path, truth_dir: str | Path, out_dir: str | Path | None = None, *,
                     labels: Mapping[str, Sequence[int]] | None = None,
                     regions: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Evaluate every prediction file of ``pred_dir`` against the same-named truth.

    A truth is ``truth_dir/CASE.nii.gz`` (nnU-Net ``labelsTr`` style) or the label file of a case
    folder ``truth_dir/CASE/``. With ``out_dir``, writes ``CASE.csv`` per case and
    ``summary.csv`` + ``summary.json``. Returns ``{"cases": ..., "summary": rows}``.
    """
    from ..core.io import is_volume_file, read_volume

    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    if not pred_dir.is_dir():
        raise MriSegError("is not a folder of predictions", path=pred_dir)
    if not truth_dir.is_dir():
        raise MriSegError("is not a folder of truths", path=truth_dir)
    preds = sorted(p for p in pred_dir.iterdir() if p.is_file() and is_volume_file(p))
    if not preds:
        raise MriSegError("holds no prediction files (.nii.gz, .nrrd, .mha)", path=pred_dir)
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    missing = []
    for p in preds:
        case = _stem(p)
        t = _truth_file(truth_dir, case)
        if t is None:
            missing.append(case)
            continue
        pv, tv = read_volume(p, kind="label"), read_volume(t, kind="label")
        per_case[case] = evaluate(pv, tv, labels=labels, regions=regions)
    if missing:
        raise MriSegError(f"no truth for predicted case(s) {missing[:5]} (looked for CASE.nii.gz or CASE/ with "
                          "a label file)", path=truth_dir)
    summary = summarise(per_case)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for case, res in per_case.items():
            write_csv([{"region": r, **m} for r, m in res.items()], out / f"{case}.csv")
        write_csv(summary, out / "summary.csv")
        (out / "summary.json").write_text(json.dumps({"cases": per_case, "summary": summary}, indent=1,
                                                     default=float))
    return {"cases": per_case, "summary": summary}
