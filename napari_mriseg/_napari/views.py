"""Radiological 2D views of napari's canvas.

With world axes ``(S, P, L)`` (see `napari_mriseg.core.volume`):

* axial: rows P (anterior up), columns L (patient's right on the screen's left);
* coronal: rows S drawn upward (superior up), columns L (patient's right on the left);
* sagittal: rows S upward, columns P (anterior on the left).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import check_choice

PLANES = ("axial", "coronal", "sagittal")
# world axis shown on the slider, then rows, then columns; and the 2D camera orientation
_ORDER = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
_ORIENTATION = {"axial": ("down", "right"), "coronal": ("up", "right"), "sagittal": ("up", "right")}


def camera(viewer: Any) -> Any:
    """The 2D/3D camera: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def set_plane(viewer: Any, plane: str) -> None:
    """Show ``plane`` (axial, coronal or sagittal) in radiological orientation."""
    check_choice("plane", plane, PLANES)
    ndim = viewer.dims.ndim
    lead = tuple(range(ndim - 3))
    viewer.dims.order = lead + tuple(a + len(lead) for a in _ORDER[plane])
    camera(viewer).orientation2d = _ORIENTATION[plane]
    viewer.reset_view()
