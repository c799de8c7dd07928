"""npe2 writer: a labels layer to NIfTI/NRRD/MHA on the grid of the image it belongs to.

napari's own labels writer drops the affine; this one puts the voxels back onto the original
reference grid (undoing any display reorientation) and writes atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.io import volume_suffix, write_volume
from .layers import layer_state_to_volume


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one labels layer; returns the written path.

    napari's save dialog has already asked before replacing an existing file, so an existing file
    is replaced (atomically: the old file stays intact until the new one is complete).
    """
    p = Path(path)
    if not volume_suffix(p):
        p = p.with_name(p.name + ".nii.gz")
    volume = layer_state_to_volume(data, meta, kind="label")
    return [str(write_volume(volume, p, overwrite=True))]
