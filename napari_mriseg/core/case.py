"""A `Case`: the named sequences of one study, a reference sequence, and optional labels.

`load_case` reads a case from a folder (one file per sequence, BraTS or nnU-Net ``_0000``
naming), a 4D NIfTI (MSD style), a folder of DICOM series, or an explicit list/mapping of files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import GeometryMismatchError, ImageReadError, InvalidImageError
from .io import ITK_SUFFIXES, NIFTI_SUFFIXES, is_volume_file, read_volumes, volume_suffix
from .volume import Grid, Volume

log = logging.getLogger(__name__)

#: Canonical sequence names, in the order models and datasets list them by default.
STANDARD_SEQUENCES = ("t1", "t1c", "t2", "flair")
#: Reference sequences tried in this order when none is given.
REFERENCE_PREFERENCE = ("t1", "t1c", "t2", "flair")

# Tokens are matched on the lower-case file name split at '_', '-', '.', ' '.
_T1C = r"t1w?[_\-]?(?:c|ce|gd|cgd|post|contrast)|ce-?t1|ce-[a-z0-9]+[_\-. ]t1"
_PATTERNS = (
    ("t1c", re.compile(rf"(?:^|[_\-. ])(?:{_T1C})(?:w)?(?:$|[_\-. ])")),
    ("flair", re.compile(r"(?:^|[_\-. ])(?:t2-?)?flair(?:$|[_\-. ])")),
    ("t2", re.compile(r"(?:^|[_\-. ])t2w?(?:$|[_\-. ])")),
    ("t1", re.compile(r"(?:^|[_\-. ])(?:t1w?|mprage|spgr)(?:$|[_\-. ])")),
)
_LABEL_NAMES = re.compile(r"(?:^|[_\-. ])(?:seg|segmentation|label|labels|mask|truth|gt)(?:$|[_\-. ])")
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def infer_sequence_name(filename: str) -> str | None:
    """The canonical sequence name (``t1``, ``t1c``, ``t2``, ``flair``) found in a file name.

    Recognises plain names (``t1.nii.gz``), BraTS (``BraTS2021_00001_t1ce.nii.gz``), common
    scanner descriptions (``T1_MPRAGE``, ``T2_FLAIR``, ``t1_gd``); returns None if none matches.
    """
    stem = filename.lower()
    suffix = volume_suffix(stem)
    if suffix:
        stem = stem[: -len(suffix)]
    stem = f" {stem} "
    for name, pattern in _PATTERNS:
        if pattern.search(stem):
            return name
    return None


def is_label_file(filename: str) -> bool:
    """True if a file name looks like a label map (``seg``, ``labels``, ``mask``, ``truth``)."""
    stem = filename.lower()
    suffix = volume_suffix(stem)
    return bool(_LABEL_NAMES.search(f" {stem[: -len(suffix)] if suffix else stem} "))


@dataclass(frozen=True, eq=False)
class Case:
    """The sequences of one study, keyed by name, with a reference and optional labels.

    Parameters
    ----------
    sequences : mapping of str to Volume
        Images keyed by sequence name (``t1``, ``t1c``, ``t2``, ``flair`` or any name), in
        channel order. They may lie on different grids until they are co-registered.
    reference : str
        Name of the sequence whose grid is the case's grid (labels live there). Defaults to the
        first of `REFERENCE_PREFERENCE` present, else the first sequence.
    labels : Volume, optional
        A label map on the reference grid.
    case_id : str
        Identifier used in datasets (never a patient name).
    meta : mapping
        Read-only facts (source paths...).
    """

    sequences: Mapping[str, Volume]
    reference: str = ""
    labels: Volume | None = None
    case_id: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seqs = dict(self.sequences)
        if not seqs:
            raise InvalidImageError("a case needs at least one sequence")
        for name, vol in seqs.items():
            if not isinstance(vol, Volume) or vol.is_label:
                raise InvalidImageError(f"sequence {name!r} must be an image Volume")
        reference = self.reference or next((n for n in REFERENCE_PREFERENCE if n in seqs), next(iter(seqs)))
        if reference not in seqs:
            raise InvalidImageError(
                f"reference {reference!r} is not a sequence of this case; choose one of {sorted(seqs)}"
            )
        object.__setattr__(self, "sequences", MappingProxyType(seqs))
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        if self.labels is not None:
            if not self.labels.is_label:
                object.__setattr__(self, "labels", self.labels.with_array(self.labels.array, kind="label"))
            self.grid.check_same(self.labels.grid, this_name=f"reference sequence {reference!r}",
                                 other_name="the label map")

    @property
    def names(self) -> tuple[str, ...]:
        """Sequence names in channel order."""
        return tuple(self.sequences)

    @property
    def grid(self) -> Grid:
        """The reference sequence's grid: the grid of the labels and of co-registered sequences."""
        return self.sequences[self.reference].grid

    def __getitem__(self, name: str) -> Volume:
        try:
            return self.sequences[name]
        except KeyError:
            raise KeyError(f"no sequence {name!r} in this case; it has {list(self.sequences)}") from None

    def misregistered(self) -> list[str]:
        """Names of the sequences that are not on the reference grid."""
        ref = self.grid
        return [n for n, v in self.sequences.items() if ref.mismatch(v.grid) is not None]

    def check_same_grid(self, names: Sequence[str] | None = None) -> None:
        """Raise `GeometryMismatchError` unless the named sequences (all by default) lie on the
        reference grid; the message names the sequence, the field and both values."""
        for name in names if names is not None else self.names:
            self.grid.check_same(self[name].grid, this_name=f"reference {self.reference!r}",
                                 other_name=f"sequence {name!r}")

    def replace(self, **changes: Any) -> Case:
        """A copy with some fields replaced (``sequences=``, ``labels=``, ``reference=``...)."""
        return dataclasses.replace(self, **changes)

    def with_sequence(self, name: str, volume: Volume) -> Case:
        """A copy with sequence ``name`` added or replaced by ``volume``."""
        seqs = dict(self.sequences)
        seqs[name] = volume.with_array(volume.array, name=name)
        return self.replace(sequences=seqs)


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class CaseEntry:
    """One volume a case would be made of: where it is and what it will be called.

    ``channel`` picks one channel of a 4D file; ``series`` one series of a DICOM folder.
    """

    path: Path
    name: str
    kind: str = "image"  # "image" or "label"
    channel: int | None = None
    series: str | None = None
    description: str = ""


def _channel_names_from_dataset_json(folder: Path) -> dict[int, str]:
    """nnU-Net / MSD channel names from a dataset.json in ``folder`` or its parent."""
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            try:
                info = json.loads(candidate.read_text())
            except (OSError, ValueError):
                continue
            channels = info.get("channel_names") or info.get("modality") or {}
            return {int(k): infer_sequence_name(str(v)) or str(v).lower() for k, v in channels.items()}
    return {}


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def _file_entries(path: Path, taken: set[str]) -> list[CaseEntry]:
    if is_label_file(path.name):
        return [CaseEntry(path, "labels", "label", description=path.name)]
    suffix = volume_suffix(path.name)
    stem = path.name[: -len(suffix)] if suffix else path.name
    channel_names = _channel_names_from_dataset_json(path.parent)
    n_channels = _count_channels(path)
    if n_channels > 1:
        return [CaseEntry(path, _unique(channel_names.get(c, f"channel_{c}"), taken), "image", channel=c,
                          description=f"{path.name} [channel {c}]") for c in range(n_channels)]
    m = _NNUNET_CHANNEL.match(stem)
    if m and int(m.group("channel")) in channel_names:
        name = channel_names[int(m.group("channel"))]
    else:
        name = infer_sequence_name(path.name) or (f"channel_{m.group('channel')}" if m else stem)
    return [CaseEntry(path, _unique(name, taken), "image", description=path.name)]


def _count_channels(path: Path) -> int:
    """Number of 3D volumes in a file, from its header only (1 for non-4D files)."""
    if volume_suffix(path.name) in (".nii", ".nii.gz"):
        import nibabel as nib

        try:
            shape = nib.load(str(path)).shape
        except Exception:  # a corrupt file is reported when it is read
            return 1
        return int(shape[3]) if len(shape) == 4 and shape[3] > 1 else 1
    return 1


def scan_case(source: str | Path | Sequence[str | Path], *, names: Sequence[str] | None = None) -> list[CaseEntry]:
    """List the volumes `load_case` would read from ``source``, with their inferred names.

    Nothing is loaded but headers. ``names`` overrides the image names in order. A folder is
    scanned for volume files (sorted by name); a folder without any is read as DICOM, one entry
    per series.
    """
    taken: set[str] = set()
    entries: list[CaseEntry] = []
    paths: list[Path]
    if isinstance(source, (str, Path)):
        root = Path(source)
        if not root.exists():
            raise ImageReadError("no such file or folder", path=root)
        if root.is_dir():
            paths = sorted(p for p in root.iterdir() if p.is_file() and is_volume_file(p.name))
            if not paths:
                from .dicom import list_dicom_series

                if not any(p.is_file() for p in root.rglob("*")):
                    raise ImageReadError("the folder is empty: no volume files and no DICOM files", path=root)
                try:
                    series = list_dicom_series(root)
                except ImageReadError as exc:
                    raise ImageReadError(
                        "no volume files (" + ", ".join(NIFTI_SUFFIXES + ITK_SUFFIXES) + ") and no DICOM "
                        f"series found ({exc.message})", path=root) from exc
                for info in series:
                    name = infer_sequence_name(info.description or "") or f"series_{info.number}"
                    entries.append(CaseEntry(root, _unique(name, taken), "image", series=info.uid,
                                             description=f"series {info.number}: {info.description} "
                                                         f"({info.n_files} files)"))
        else:
            paths = [root]
    else:
        paths = [Path(p) for p in source]
    for path in paths:
        entries.extend(_file_entries(path, taken))
    if names is not None:
        images = [e for e in entries if e.kind == "image"]
        if len(names) > len(images):
            raise InvalidImageError(f"{len(names)} names given for {len(images)} sequences")
        renamed = dict(zip((id(e) for e in images), names))
        entries = [dataclasses.replace(e, name=renamed[id(e)]) if id(e) in renamed else e for e in entries]
    return entries


def load_entries(entries: Sequence[CaseEntry], *, reference: str | None = None,
                 case_id: str | None = None) -> Case:
    """Read the volumes listed by `scan_case` (possibly renamed) into a `Case`."""
    seqs: dict[str, Volume] = {}
    sources: dict[str, str] = {}
    labels: Volume | None = None
    cache: dict[Path, list[Volume]] = {}
    for entry in entries:
        kind = "label" if entry.kind == "label" else "image"
        if entry.name in seqs or (kind == "label" and labels is not None):
            raise InvalidImageError(f"two volumes are called {entry.name!r}; give each a unique name")
        if entry.series is not None:
            from .dicom import read_dicom_series

            vol = read_dicom_series(entry.path, series=entry.series)
        else:
            if entry.path not in cache:
                cache[entry.path] = read_volumes(entry.path, kind=kind)  # type: ignore[arg-type]
            vols = cache[entry.path]
            vol = vols[entry.channel or 0]
        vol = vol.with_array(vol.array, name=entry.name, kind=kind)  # type: ignore[arg-type]
        source = str(entry.path) + (f" [{entry.channel}]" if entry.channel is not None else "")
        source += f" (series {entry.series})" if entry.series else ""
        if kind == "label":
            labels = vol
            sources["labels"] = source
        else:
            seqs[entry.name] = vol
            sources[entry.name] = source
    if not seqs:
        raise ImageReadError("no image sequence found", path=entries[0].path if entries else None)
    first = entries[0].path
    if first.is_dir():
        default_id = first.name
    elif all(e.path == first for e in entries):  # one (4D) file: the file's name
        default_id = first.name[: -len(volume_suffix(first.name))] if volume_suffix(first.name) else first.stem
    else:
        default_id = first.parent.name
    try:
        case = Case(seqs, reference or "", labels, case_id or default_id, {"sources": sources})
    except GeometryMismatchError as exc:
        raise GeometryMismatchError(exc.message, field=exc.field, expected=exc.expected,
                                    actual=exc.actual, path=sources.get("labels")) from exc
    log.info("loaded case %s: %s (reference %s)", case.case_id, ", ".join(case.names), case.reference)
    return case


def load_case(
    source: str | Path | Sequence[str | Path] | Mapping[str, str | Path],
    *,
    names: Sequence[str] | None = None,
    reference: str | None = None,
    labels: str | Path | None = None,
    case_id: str | None = None,
) -> Case:
    """Read a case.

    Parameters
    ----------
    source : path, list of paths, or mapping of name to path
        A case folder (one file per sequence, names inferred from file names: ``t1``, ``t1c``/
        ``t1ce``/``t1gd``/``t1post``, ``t2``, ``flair``, BraTS and nnU-Net ``_0000`` naming; a file
        named ``seg``/``labels``/``mask`` becomes the labels), a 4D NIfTI (one sequence per
        channel, names from a ``dataset.json`` beside it), a folder of DICOM series (one sequence
        per series), or explicit files.
    names : sequence of str, optional
        Override the inferred sequence names, in the order `scan_case` lists them.
    reference : str, optional
        Reference sequence; see `Case`.
    labels : path, optional
        A label map file on the reference grid.
    case_id : str, optional
        Defaults to the folder name.

    Raises
    ------
    ImageReadError, InvalidImageError, GeometryMismatchError, DicomSeriesError
        With messages that name the file and the problem.
    """
    if isinstance(source, Mapping):
        entries = [e for name, p in source.items()
                   for e in [dataclasses.replace(scan_case(p)[0], name=name, kind="image")]]
    else:
        entries = scan_case(source, names=names)
    if labels is not None:
        entries = [e for e in entries if e.kind != "label"]
        entries.append(CaseEntry(Path(labels), "labels", "label"))
    return load_entries(entries, reference=reference, case_id=case_id)
