"""Errors of the learning ring (all `MriSegError` subclasses, so the CLI prints them as one line)."""

from __future__ import annotations

from ..core.dataset import DatasetError
from ..core.errors import MriSegError

__all__ = ["DatasetError", "ModelFileError", "ModelVersionError", "MissingSequenceError", "CancelledError"]


class ModelFileError(MriSegError, ValueError):
    """A model file is unreadable, unsafe (pickle) or does not match its own config."""


class ModelVersionError(ModelFileError):
    """A model file was written in a newer format than this version of napari-mriseg reads."""


class MissingSequenceError(MriSegError, ValueError):
    """A case lacks a sequence (channel) that the model needs."""


class CancelledError(MriSegError, RuntimeError):
    """Long work (inference, training) was cancelled by the caller; nothing was written."""
