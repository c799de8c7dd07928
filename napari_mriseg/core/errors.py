"""The project's own exceptions.

Every error a user can cause (a bad file, a mismatched case, a wrong option) raises one of these,
with a message that names the file and the problem. Each class also derives from the builtin that
fits it, so ``except ValueError`` still works for callers that do not know this project.
"""

from __future__ import annotations

from pathlib import Path


class MriSegError(Exception):
    """Base class of every error napari-mriseg raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class ImageReadError(MriSegError, OSError):
    """A file or folder could not be read as an image (corrupt, truncated, unknown format)."""


class InvalidImageError(MriSegError, ValueError):
    """A file was read but its content is not a usable 3D volume (2D, 5D, NaN-filled...)."""


class ResourceLimitError(MriSegError, MemoryError):
    """A header declares more data than the file holds or than this machine can allocate."""


class DicomSeriesError(MriSegError, ValueError):
    """A DICOM series is incomplete or inconsistent (missing slices, uneven spacing...)."""


class AmbiguousSeriesError(DicomSeriesError):
    """A folder holds several DICOM series and none was chosen.

    Attributes
    ----------
    series : list of dict
        One entry per series found (uid, number, description, n_files), so a caller can list
        them and choose.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, series=()) -> None:
        self.series = list(series)
        super().__init__(message, path=path)


class GeometryMismatchError(MriSegError, ValueError):
    """Two volumes that must share one grid do not.

    Attributes
    ----------
    field : str
        Which part of the geometry differs: ``shape``, ``spacing``, ``origin`` or ``direction``.
    expected, actual
        The reference's value and the other volume's value.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str,
        expected: object,
        actual: object,
        path: str | Path | None = None,
    ) -> None:
        self.field = field
        self.expected = expected
        self.actual = actual
        super().__init__(message, path=path)


class OptionError(MriSegError, ValueError):
    """An option received a value outside the allowed set; the message lists the valid ones."""


class OutputExistsError(MriSegError, FileExistsError):
    """An output file exists and overwriting it was not explicitly allowed."""


def check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise `OptionError` listing them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise OptionError(f"{name} must be one of {valid}; got {value!r}")
    return value
