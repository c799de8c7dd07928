"""npe2 reader: NIfTI / NRRD / MHA files, case folders and DICOM folders, in millimetres."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.case import is_label_file, load_case
from ..core.io import is_volume_file, read_volumes
from .layers import case_layer_data, image_layer_data, labels_layer_data

log = logging.getLogger(__name__)

_MAX_PEEK = 64


def _looks_like_dicom_folder(folder: Path) -> bool:
    """True if one of the first files under ``folder`` carries the DICM preamble marker."""
    n = 0
    for p in folder.rglob("*"):
        if not p.is_file():
            continue
        n += 1
        try:
            with open(p, "rb") as fh:
                head = fh.read(132)
        except OSError:
            continue
        if head[128:132] == b"DICM":
            return True
        if n >= _MAX_PEEK:
            break
    return False


def get_reader(path: str | list[str]) -> Callable[[Any], list[tuple]] | None:
    """Return a reader for ``path`` if it is ours, else None (so napari tries other readers)."""
    if isinstance(path, list):
        return read_paths if path and all(is_volume_file(p) for p in path) else None
    p = Path(path)
    if p.is_dir():
        if any(is_volume_file(c.name) for c in p.iterdir() if c.is_file()) or _looks_like_dicom_folder(p):
            return read_paths
        return None
    return read_paths if is_volume_file(p.name) else None


def read_paths(path: str | list[str]) -> list[tuple]:
    """Read files or a folder into layer data tuples.

    A folder (case or DICOM) opens as a case: one image layer per sequence plus a labels layer.
    Single files open as image layers, or as a labels layer when the name says ``seg``/``labels``.
    """
    if isinstance(path, (str, Path)) and Path(path).is_dir():
        case = load_case(path)
        return case_layer_data(case)
    paths = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
    layers: list[tuple] = []
    for p in paths:
        if is_label_file(p.name):
            for vol in read_volumes(p, kind="label"):
                layers.append(labels_layer_data(vol))
            continue
        for vol in read_volumes(p):
            layers.append(image_layer_data(vol))
    return layers
