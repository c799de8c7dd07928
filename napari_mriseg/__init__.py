"""napari-mriseg: multi-sequence MRI segmentation for napari, with a CLI beside it.

Importing this package loads neither torch nor Qt: the verbs below are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Volume": "napari_mriseg.core.volume",
    "Grid": "napari_mriseg.core.volume",
    "Case": "napari_mriseg.core.case",
    "load_case": "napari_mriseg.core.case",
    "read_volume": "napari_mriseg.core.io",
    "write_volume": "napari_mriseg.core.io",
    "make_phantom": "napari_mriseg.core.phantom",
    "register": "napari_mriseg.core.registration",
    "register_case": "napari_mriseg.core.registration",
    "segment": "napari_mriseg.ml.segment",
    "train": "napari_mriseg.ml.training",
    "evaluate": "napari_mriseg.ml.metrics",
    "export_case": "napari_mriseg.core.export",
    "load_model": "napari_mriseg.ml.model_file",
    "MriSegError": "napari_mriseg.core.errors",
    "GeometryMismatchError": "napari_mriseg.core.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_mriseg' has no attribute {name!r}")
    return getattr(import_module(module), name)
