"""Recovery files: the clinician's unsaved corrections of one case, kept safe against a crash.

One recovery file holds, for one case, everything needed to put the work back: the labels array
being corrected (with the `Grid` it lies on), the masks of voxels the clinician touched and marked
reviewed (same shape), the case id, the case's source files (with their sizes and modification
times, so that a reopened case can be told apart from a changed one) and the time it was saved.

Format: ONE NumPy ``.npz`` archive (deflate-compressed, no pickles) with the arrays ``labels``,
``touched`` (bool), ``reviewed`` (bool) and ``header`` (UTF-8 JSON as uint8 bytes). It is written
atomically (temporary file in the same folder, fsync, rename: `napari_mriseg.core.io.atomic_write`),
so a crash or a full disk during a write leaves the previous recovery file as it was.

Location: a per-user folder, never the case folder (`recovery_dir`): ``$MRISEG_RECOVERY_DIR``,
else ``platformdirs.user_data_dir("napari-mriseg")/recovery``, else
``~/.local/share/napari-mriseg/recovery``. A case's file is named by a hash of its source paths
(of its case id when it has no source files), `recovery_path`.

Arrays are in the axis order of the labels array they were taken from (napari's layer data:
``(Z, Y, X)`` on the layer's display grid); the grid's spacing/origin are mm, LPS, array order.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import MriSegError
from .io import atomic_write
from .volume import Grid

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "Recovery",
    "RecoveryError",
    "RecoveryMismatchError",
    "SourceStat",
    "case_key",
    "discard_recovery",
    "find_recovery",
    "make_recovery",
    "read_recovery",
    "recovery_dir",
    "recovery_path",
    "source_stats",
    "write_recovery",
]

#: Format name and version written into every header.
FORMAT = "napari-mriseg-recovery"
VERSION = 1
#: Environment variable naming the recovery folder.
ENV_DIR = "MRISEG_RECOVERY_DIR"
SUFFIX = ".mriseg-recovery.npz"
_ARRAYS = ("labels", "touched", "reviewed")


class RecoveryError(MriSegError, ValueError):
    """A recovery file is unreadable, corrupt or not a recovery file (it is left where it is)."""


class RecoveryMismatchError(RecoveryError):
    """A recovery file belongs to another case, or to another version of this case's files.

    Attributes
    ----------
    field : str
        What differs: ``case_id``, ``sources``, ``grid``...
    """

    def __init__(self, message: str, *, field: str, path: str | Path | None = None) -> None:
        self.field = field
        super().__init__(message, path=path)


@dataclass(frozen=True)
class SourceStat:
    """A source file of a case as it was when the case was loaded.

    ``size`` (bytes) and ``mtime_ns`` (nanoseconds since the epoch) are None if it could not be
    read (e.g. it was deleted).
    """

    path: str
    size: int | None
    mtime_ns: int | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SourceStat:
        size, mtime = d.get("size"), d.get("mtime_ns")
        return cls(str(d["path"]), None if size is None else int(size), None if mtime is None else int(mtime))


def _norm(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def source_stats(sources: Sequence[str | Path]) -> tuple[SourceStat, ...]:
    """Absolute paths, sizes and modification times of a case's source files, sorted by path."""
    stats = []
    for p in sorted({_norm(s) for s in sources}):
        try:
            st = os.stat(p)
            stats.append(SourceStat(p, int(st.st_size), int(st.st_mtime_ns)))
        except OSError:
            stats.append(SourceStat(p, None, None))
    return tuple(stats)


def case_key(case_id: str, sources: Sequence[str | Path | SourceStat]) -> str:
    """The name of a case's recovery file: a hash of its absolute source paths (order ignored),
    or of its case id when it has none (a case made in memory)."""
    paths = sorted({s.path if isinstance(s, SourceStat) else _norm(s) for s in sources})
    text = json.dumps({"sources": paths}) if paths else json.dumps({"case_id": case_id})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def recovery_dir(folder: str | Path | None = None) -> Path:
    """The folder recovery files live in (not created here).

    ``folder`` if given, else ``$MRISEG_RECOVERY_DIR``, else the per-user data folder
    (``platformdirs.user_data_dir("napari-mriseg")/recovery`` when platformdirs is installed,
    ``~/.local/share/napari-mriseg/recovery`` otherwise).
    """
    if folder is not None:
        return Path(folder).expanduser()
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_data_dir("napari-mriseg", appauthor=False)) / "recovery"
    except ImportError:  # pragma: no cover - platformdirs comes with napari
        return Path.home() / ".local" / "share" / "napari-mriseg" / "recovery"


def recovery_path(case_id: str, sources: Sequence[str | Path | SourceStat], *,
                  folder: str | Path | None = None) -> Path:
    """Where the recovery file of a case is (or would be) written (see `case_key`, `recovery_dir`)."""
    return recovery_dir(folder) / f"{case_key(case_id, sources)}{SUFFIX}"


def find_recovery(case_id: str, sources: Sequence[str | Path | SourceStat], *,
                  folder: str | Path | None = None) -> Path | None:
    """The recovery file of a case if there is one, else None (the file is not read)."""
    path = recovery_path(case_id, sources, folder=folder)
    return path if path.is_file() else None


def discard_recovery(case_id: str, sources: Sequence[str | Path | SourceStat], *,
                     folder: str | Path | None = None) -> bool:
    """Delete a case's recovery file (its work was saved or exported); True if one was deleted."""
    path = recovery_path(case_id, sources, folder=folder)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    log.info("recovery file %s removed", path)
    return True


@dataclass(frozen=True, eq=False)
class Recovery:
    """The unsaved work on one case (see the module docstring).

    Parameters
    ----------
    labels : (Z, Y, X) integer ndarray
        The labels being corrected, on ``grid``.
    grid : Grid
        Geometry of ``labels`` (mm, LPS, array axis order); ``grid.shape == labels.shape``.
    touched, reviewed : (Z, Y, X) bool ndarray
        Voxels the clinician changed / marked as reviewed.
    case_id : str
        The case's identifier.
    sources : tuple of SourceStat
        The case's source files as they were when it was loaded (empty for an in-memory case).
    saved_at : float
        When the work was captured, seconds since the epoch.
    extra : mapping
        JSON-able facts (layer name, label names...), kept as they are.
    """

    labels: np.ndarray
    grid: Grid
    touched: np.ndarray
    reviewed: np.ndarray
    case_id: str = ""
    sources: tuple[SourceStat, ...] = ()
    saved_at: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 3:
            raise RecoveryError(f"labels must be a 3D (Z, Y, X) array; got shape {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise RecoveryError(f"labels must be integer; got dtype {labels.dtype}")
        if tuple(self.grid.shape) != labels.shape:
            raise RecoveryError(f"the grid's shape {self.grid.shape} is not the labels' shape {labels.shape}")
        for name in ("touched", "reviewed"):
            mask = np.asarray(getattr(self, name))
            if mask.shape != labels.shape:
                raise RecoveryError(f"the {name} mask has shape {mask.shape}; the labels have {labels.shape}")
            object.__setattr__(self, name, mask.astype(bool, copy=False))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def key(self) -> str:
        """The case key (file name stem) this recovery belongs to, see `case_key`."""
        return case_key(self.case_id, self.sources)

    @property
    def saved_at_text(self) -> str:
        """``saved_at`` as local time, ``YYYY-MM-DD HH:MM:SS``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))

    def mismatch(self, *, case_id: str, sources: Sequence[str | Path | SourceStat], grid: Grid | None = None,
                 check_files: bool = True) -> tuple[str, str] | None:
        """Why this recovery does not belong to the given case, or None if it does.

        Parameters
        ----------
        case_id : str
            The reopened case's id.
        sources : sequence of path or SourceStat
            Its source files; paths are stat-ed now and compared by path, size and mtime.
        grid : Grid, optional
            The grid the labels would be restored onto (the labels layer's); compared by `Grid.mismatch`.
        check_files : bool
            Compare sizes and modification times too (not only the paths).

        Returns
        -------
        (field, message) or None
        """
        if case_id != self.case_id:
            return "case_id", f"it was saved for case {self.case_id!r}, not {case_id!r}"
        given = [s for s in sources if isinstance(s, SourceStat)]
        given += source_stats([s for s in sources if not isinstance(s, SourceStat)])
        now = {s.path: s for s in given}
        then = {s.path: s for s in self.sources}
        if set(now) != set(then):
            gone, new = sorted(set(then) - set(now)), sorted(set(now) - set(then))
            return "sources", f"it was saved for other source files (missing now: {gone}; new: {new})"
        if check_files:
            for p, old in then.items():
                cur = now[p]
                if (cur.size, cur.mtime_ns) != (old.size, old.mtime_ns):
                    return "sources", (f"{p} changed since the recovery was saved (size {old.size} -> {cur.size} "
                                       f"bytes, modified {old.mtime_ns} -> {cur.mtime_ns} ns)")
        if grid is not None:
            diff = self.grid.mismatch(grid)
            if diff is not None:
                fld, saved, current = diff
                return "grid", f"its labels lie on another grid: {fld} {saved} (saved) vs {current} (now)"
        return None

    def check_matches(self, *, case_id: str, sources: Sequence[str | Path | SourceStat],
                      grid: Grid | None = None, check_files: bool = True, path: str | Path | None = None) -> None:
        """Raise `RecoveryMismatchError` unless this recovery belongs to the case (see `mismatch`)."""
        diff = self.mismatch(case_id=case_id, sources=sources, grid=grid, check_files=check_files)
        if diff is not None:
            fld, message = diff
            raise RecoveryMismatchError(
                f"this recovery file does not belong to the case being opened: {message}; it was left "
                "untouched (reopen the case it was saved for, or delete the file to drop it)",
                field=fld, path=path)


def make_recovery(labels: np.ndarray, grid: Grid, *, touched: np.ndarray | None = None,
                  reviewed: np.ndarray | None = None, case_id: str = "",
                  sources: Sequence[str | Path | SourceStat] = (), extra: Mapping[str, Any] | None = None,
                  saved_at: float | None = None, copy: bool = True) -> Recovery:
    """A `Recovery` of the current work (arrays copied unless ``copy=False``; sources stat-ed now
    unless already `SourceStat`; missing masks are all False; ``saved_at`` defaults to now)."""
    labels = np.array(labels, copy=copy)
    shape = labels.shape
    masks = [np.zeros(shape, bool) if m is None else np.array(m, dtype=bool, copy=copy) for m in (touched, reviewed)]
    stats = [s for s in sources if isinstance(s, SourceStat)]
    stats += source_stats([s for s in sources if not isinstance(s, SourceStat)])
    return Recovery(labels, grid, masks[0], masks[1], case_id, tuple(sorted(stats, key=lambda s: s.path)),
                    time.time() if saved_at is None else float(saved_at), dict(extra or {}))


def _header(rec: Recovery) -> dict[str, Any]:
    g = rec.grid
    return {
        "format": FORMAT,
        "version": VERSION,
        "case_id": rec.case_id,
        "sources": [s.to_json() for s in rec.sources],
        "saved_at": rec.saved_at,
        "saved_at_text": rec.saved_at_text,
        "grid": {"shape": list(g.shape), "spacing": list(g.spacing), "origin": list(g.origin),
                 "direction": np.asarray(g.direction).tolist()},
        "labels_dtype": rec.labels.dtype.str,
        "extra": dict(rec.extra),
    }


def _savez(fh: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Write the archive to an open binary file (a separate function so tests can make it fail)."""
    np.savez_compressed(fh, **arrays)


def write_recovery(rec: Recovery, path: str | Path | None = None, *, folder: str | Path | None = None) -> Path:
    """Write ``rec`` atomically (see the module docstring); returns the file.

    Parameters
    ----------
    path : path, optional
        The file; default `recovery_path` of the case in ``folder`` (created if needed).

    Raises
    ------
    napari_mriseg.core.io.ImageWriteError
        The folder is read-only or the disk is full; the previous recovery file is unchanged.
    """
    target = Path(path) if path is not None else recovery_path(rec.case_id, rec.sources, folder=folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = np.frombuffer(json.dumps(_header(rec)).encode("utf-8"), dtype=np.uint8)
    arrays = {"labels": rec.labels, "touched": rec.touched, "reviewed": rec.reviewed, "header": header}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            _savez(fh, arrays)

    atomic_write(target, write, overwrite=True)
    return target


def read_recovery(path: str | Path) -> Recovery:
    """Read and check a recovery file written by `write_recovery`.

    Raises
    ------
    RecoveryError
        The file is missing, truncated, corrupt, of another format or version, or inconsistent.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [k for k in (*_ARRAYS, "header") if k not in npz.files]
            if missing:
                raise RecoveryError(f"not a recovery file: it lacks {missing}", path=p)
            arrays = {k: npz[k] for k in (*_ARRAYS, "header")}
    except RecoveryError:
        raise
    except Exception as exc:  # zipfile/zlib/numpy raise many types for a damaged archive
        raise RecoveryError(f"cannot be read as a recovery file ({type(exc).__name__}: {exc}); "
                            "it is damaged: delete it to drop it", path=p) from exc
    try:
        header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecoveryError(f"its header is not valid JSON ({exc})", path=p) from exc
    if header.get("format") != FORMAT:
        raise RecoveryError(f"not a recovery file (format {header.get('format')!r}, expected {FORMAT!r})", path=p)
    if header.get("version") != VERSION:
        raise RecoveryError(f"recovery format version {header.get('version')!r} is not supported "
                            f"(this napari-mriseg reads version {VERSION}); open it with the version that "
                            "wrote it", path=p)
    try:
        g = header["grid"]
        grid = Grid(tuple(g["shape"]), tuple(g["spacing"]), tuple(g["origin"]), np.asarray(g["direction"]))
        labels = arrays["labels"]
        if labels.dtype.str != header["labels_dtype"]:
            raise RecoveryError(f"labels dtype {labels.dtype.str} differs from the header's "
                                f"{header['labels_dtype']}", path=p)
        for name in ("touched", "reviewed"):
            if arrays[name].dtype != bool:
                raise RecoveryError(f"the {name} mask is {arrays[name].dtype}, not bool", path=p)
        return Recovery(labels, grid, arrays["touched"], arrays["reviewed"], str(header["case_id"]),
                        tuple(SourceStat.from_json(s) for s in header["sources"]), float(header["saved_at"]),
                        header.get("extra") or {})
    except RecoveryError as exc:
        if exc.path is None:
            raise RecoveryError(exc.message, path=p) from exc
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RecoveryError(f"its header is incomplete or inconsistent ({type(exc).__name__}: {exc})",
                            path=p) from exc
