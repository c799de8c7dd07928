"""Plain-data summaries of volumes, cases and DICOM folders (what ``mriseg info`` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .case import Case, load_case
from .io import is_volume_file, read_volumes
from .resample import axis_codes
from .volume import Volume


def volume_summary(volume: Volume) -> dict[str, Any]:
    """Shape, spacing, orientation codes, origin, value range of a volume.

    Sizes and spacing are given in file order ``(i, j, k)`` (i fastest), as NIfTI tools print
    them; ``origin_lps_mm`` is the world position of voxel (0, 0, 0) in LPS (x, y, z) mm.
    """
    a = volume.array
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    out: dict[str, Any] = {
        "name": volume.name,
        "kind": volume.kind,
        "size_ijk": list(a.shape[::-1]),
        "spacing_ijk_mm": [round(s, 6) for s in volume.spacing[::-1]],
        "orientation": axis_codes(volume.grid),
        "origin_lps_mm": [round(o, 4) for o in volume.origin[::-1]],
        "dtype": str(a.dtype),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
    }
    if volume.is_label:
        values, counts = np.unique(a, return_counts=True)
        voxel_mm3 = float(np.prod(volume.spacing))
        out["labels"] = {int(v): {"voxels": int(c), "volume_ml": round(c * voxel_mm3 / 1000, 3)}
                         for v, c in zip(values, counts) if v != 0}
    for key in ("series_description", "series_number", "modality", "window_center", "window_width", "warnings"):
        if volume.meta.get(key):
            out[key] = volume.meta[key]
    return out


def case_summary(case: Case) -> dict[str, Any]:
    """Sequences, reference, grid agreement and labels of a case."""
    mis = set(case.misregistered())
    seqs = {}
    for name, vol in case.sequences.items():
        s = volume_summary(vol)
        s["on_reference_grid"] = name not in mis
        seqs[name] = s
    out: dict[str, Any] = {"case_id": case.case_id, "reference": case.reference, "sequences": seqs}
    if case.labels is not None:
        out["labels"] = volume_summary(case.labels)
    return out


def path_summary(path: str | Path) -> dict[str, Any]:
    """Summary of a volume file, a case folder or a DICOM folder (with the series it holds)."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "volumes": [volume_summary(v) for v in read_volumes(p)]}
    out: dict[str, Any] = {"path": str(p)}
    if p.is_dir() and not any(is_volume_file(c.name) for c in p.iterdir() if c.is_file()):
        from .dicom import list_dicom_series

        out["dicom_series"] = [
            {"number": s.number, "description": s.description, "modality": s.modality,
             "files": s.n_files, "volumes": s.n_volumes, "uid": s.uid}
            for s in list_dicom_series(p)
        ]
    out["case"] = case_summary(load_case(p))
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of `path_summary`'s result."""
    lines = [f"{summary['path']}"]
    for s in summary.get("dicom_series", []):
        lines.append(f"  DICOM series {s['number']}: {s['description']!r} ({s['modality']}, "
                     f"{s['files']} files, {s['volumes']} volume(s)) uid {s['uid']}")
    vols = summary.get("volumes")
    if vols is None:
        case = summary["case"]
        lines.append(f"  case {case['case_id']!r}, reference {case['reference']!r}")
        vols = list(case["sequences"].values()) + ([case["labels"]] if "labels" in case else [])
    for v in vols:
        size = "x".join(str(n) for n in v["size_ijk"])
        spacing = " x ".join(f"{s:g}" for s in v["spacing_ijk_mm"])
        line = (f"  {v['name'] or '(volume)'}: {v['kind']} {size} voxels, {spacing} mm, {v['orientation']}, "
                f"{v['dtype']} [{v['min']:g}, {v['max']:g}]")
        if v.get("on_reference_grid") is False:
            line += "  (not on the reference grid)"
        lines.append(line)
        for lab, info in v.get("labels", {}).items():
            lines.append(f"      label {lab}: {info['voxels']} voxels, {info['volume_ml']} mL")
        for w in v.get("warnings", []):
            lines.append(f"      warning: {w}")
    return "\n".join(lines)
