"""Reading DICOM series into `Volume`\\ s.

A folder (searched recursively) may hold several series, files that are not DICOM, and series
that are not one volume. This module lists the series (`list_dicom_series`), reads one as a
`Volume` (`read_dicom_series`) or as several (`read_dicom_volumes`, for DWI / fMRI / multi-echo
series that repeat each slice position), and refuses, with a `DicomSeriesError` that names the
positions or files, every series that cannot be stacked into a regular grid.

Geometry comes from ImageOrientationPatient, ImagePositionPatient and PixelSpacing only. Slices
are sorted by their position along the slice normal ``cross(row, col)``, never by file name or
InstanceNumber. The resulting volume follows `napari_mriseg.core.volume`: array ``(Z, Y, X)``
= ``(slice, row, column)``, geometry in array order, world LPS mm listed ``(S, P, L)``.

Tolerances
----------
`SAME_POSITION_MM`
    Two slices whose positions along the normal differ by less than this (mm) share a position:
    either duplicates of one volume (an error) or repeats of a multi-volume series.
`GAP_FACTOR`
    A step between neighbouring slices above ``GAP_FACTOR`` times the median step is reported as
    missing slice(s).
`UNEVEN_ABS_MM`, `UNEVEN_REL`
    The slice positions are fitted with a regular grid (least squares); a slice farther than
    ``max(UNEVEN_ABS_MM, UNEVEN_REL * step)`` from its place on that grid makes the spacing
    uneven. The absolute floor (0.02 mm, far below any MR voxel) absorbs positions that scanners
    round to 0.01 mm; a real irregularity (a 5.0 mm stack with one 6 mm step) is 10-100x larger.
    The same limit applies to a slice's sideways offset from the normal through the first slice
    (a sheared stack, e.g. CT gantry tilt).
`SAME_ORIENTATION`
    Direction cosines of all slices must agree to this; otherwise the series mixes orientations
    (a localizer, several stacks).

Pixel data are decoded by pydicom (with the pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000 and
RLE); a file pydicom cannot decode is read by SimpleITK (GDCM) instead, and the volume's
``meta["warnings"]`` says so. Each header is parsed once; each file's pixel data are read and
decoded once (the reader seeks to the pixel data offset it recorded while reading the header).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    AmbiguousSeriesError,
    DicomSeriesError,
    ImageReadError,
    OptionError,
    ResourceLimitError,
)
from .volume import Volume

log = logging.getLogger(__name__)

SAME_POSITION_MM = 0.01
GAP_FACTOR = 1.5
UNEVEN_ABS_MM = 0.02
UNEVEN_REL = 1e-3
SAME_ORIENTATION = 1e-3

_PIXEL_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder (from headers only).

    Attributes
    ----------
    uid : str
        SeriesInstanceUID ("" if the files lack it).
    number : int or None
        SeriesNumber.
    description : str
        SeriesDescription.
    modality : str
        Modality ("MR", "CT"...).
    n_files : int
        Number of DICOM files of the series.
    n_volumes : int
        Number of volumes the series holds (repeats of each slice position; 1 for an ordinary
        series). Best effort from the headers: a series that cannot be stacked counts as 1.
    files : tuple of Path
        The files, sorted by path.
    """

    uid: str
    number: int | None
    description: str
    modality: str
    n_files: int
    n_volumes: int
    files: tuple[Path, ...] = field(repr=False)

    def summary(self) -> str:
        """One line naming the series: number, description, modality, files, volumes, UID."""
        vols = f", {self.n_volumes} volumes" if self.n_volumes > 1 else ""
        return (f"series {self.number} {self.description!r} ({self.modality or '?'}, "
                f"{self.n_files} files{vols}, uid {self.uid or '?'})")


@dataclass
class _File:
    path: Path
    ds: Any  # pydicom Dataset without pixel data
    pixel_offset: int | None  # where the pixel data element starts; None: re-read the file
    size: int = 0  # bytes
    frames: list[_Frame] | None = None  # cache of `_frames_of`


@dataclass
class _Frame:
    file: _File
    frame: int  # index in the file's frames (0 for a single-frame file)
    n_frames: int
    position: np.ndarray  # (3,) LPS mm, x y z
    row: np.ndarray  # (3,) direction of increasing column index
    col: np.ndarray  # (3,) direction of increasing row index
    shape: tuple[int, int]  # rows, columns
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    slice_spacing: float | None  # SpacingBetweenSlices or SliceThickness
    slope: float
    intercept: float
    window: tuple[float | None, float | None]
    keys: tuple[tuple[str, Any], ...]  # candidates telling volumes apart, in order of preference
    order: tuple  # acquisition order (last resort)
    uid: str  # SOPInstanceUID / frame, to drop duplicated files
    proj: float = 0.0


# --------------------------------------------------------------------------- public API
def list_dicom_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM series in ``folder`` (searched recursively), from headers only.

    Parameters
    ----------
    folder : path
        A folder, or one DICOM file.

    Returns
    -------
    list of SeriesInfo
        Sorted by series number, then description.

    Raises
    ------
    ImageReadError
        The folder does not exist or holds no DICOM image file, or a DICOM file is corrupt or
        truncated (the message names it). Files that are not DICOM are ignored.
    """
    root, groups = _scan(folder)
    return [info for info, _ in groups]


def read_dicom_series(folder: str | os.PathLike[str], *, series: str | int | None = None) -> Volume:
    """Read one DICOM series as a `Volume`.

    Parameters
    ----------
    folder : path
        A folder (searched recursively) or one DICOM file.
    series : str or int, optional
        Which series: its SeriesInstanceUID, its SeriesNumber (an int, or a string of digits that
        matches no UID or description) or its SeriesDescription. Needed when the folder holds
        several series.

    Returns
    -------
    Volume
        ``array`` is ``(Z, Y, X)`` = (slice along the normal, row, column): the stored integer
        dtype, or float32 when RescaleSlope/Intercept are not 1/0 (then rescaled values).
        ``spacing`` (mm), ``origin`` and ``direction`` in array order, LPS world ``(S, P, L)``.
        ``meta``: ``source``, ``series_uid``, ``series_number``, ``series_description``,
        ``modality``, ``n_files``, ``window_center`` / ``window_width`` (if present) and
        ``warnings`` (list of str).

    Raises
    ------
    AmbiguousSeriesError
        Several series and ``series`` is None, or ``series`` matches several.
    DicomSeriesError
        No series matches ``series``; or the series holds several volumes (use
        `read_dicom_volumes`), has missing slices, uneven spacing, mixed orientations or sizes.
    ImageReadError
        No DICOM file, or a file that is corrupt, truncated or cannot be decoded.
    ResourceLimitError
        The series would need more than half of this machine's memory.
    """
    root, info, frames, warnings = _select(folder, series)
    groups, how = _split_volumes(frames, root)
    if len(groups) > 1:
        raise DicomSeriesError(
            f"{info.summary()} is a multi-volume series with {len(groups)} volumes (each slice "
            f"position repeats {len(groups)} times, told apart by {how}); read it with "
            "read_dicom_volumes",
            path=root,
        )
    return _read_volumes(root, info, groups, how, warnings)[0]


def read_dicom_volumes(folder: str | os.PathLike[str], *, series: str | int | None = None) -> list[Volume]:
    """Read a DICOM series as a list of volumes, one per repeat of its slice positions.

    A DWI, fMRI, multi-echo or dynamic series stores each slice position several times. The
    repeats are told apart by (in this order) TemporalPositionIdentifier, diffusion b-value and
    gradient, AcquisitionNumber, echo, trigger time or ImageType: the first of these that takes
    the same N values at every position splits the series, and the volumes are ordered by it
    (``meta["volume_key"]``). If none does, the repeats at each position are ordered by
    acquisition time then InstanceNumber, with a warning. An ordinary series gives ``[volume]``.

    Parameters and errors are those of `read_dicom_series` (less the multi-volume error); each
    volume's ``meta`` also holds ``volume_index`` and ``n_volumes``.
    """
    root, info, frames, warnings = _select(folder, series)
    groups, how = _split_volumes(frames, root)
    return _read_volumes(root, info, groups, how, warnings)


# --------------------------------------------------------------------------- scanning
def _scan(folder: str | os.PathLike[str]) -> tuple[Path, list[tuple[SeriesInfo, list[_File]]]]:
    root = Path(folder)
    if not root.exists():
        raise ImageReadError("no such file or folder", path=root)
    if root.is_file():
        paths = [root]
    else:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            paths.extend(Path(dirpath) / name for name in sorted(filenames))
    by_uid: dict[str, list[_File]] = {}
    non_image = 0
    for path in paths:
        f = _read_header(path)
        if f is None:
            continue
        if "Rows" not in f.ds:
            non_image += 1  # a DICOMDIR, structured report, presentation state...
            continue
        by_uid.setdefault(str(f.ds.get("SeriesInstanceUID", "")), []).append(f)
    if not by_uid:
        extra = f" ({non_image} DICOM files without images)" if non_image else ""
        raise ImageReadError(f"no DICOM files found{extra} among {len(paths)} files", path=root)
    groups = [(_series_info(uid, files), files) for uid, files in by_uid.items()]
    groups.sort(key=lambda g: (g[0].number is None, g[0].number or 0, g[0].description, g[0].uid))
    log.debug("%s: %d DICOM series in %d files", root, len(groups), len(paths))
    return root, groups


def _read_header(path: Path) -> _File | None:
    """The header of ``path``, or None if it is not a DICOM file (no ``DICM`` at byte 128)."""
    import pydicom

    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
            if len(head) < 132 or head[128:132] != b"DICM":
                return None
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            offset = fp.tell()
            size = os.fstat(fp.fileno()).st_size
            at_pixels = fp.read(4) in _PIXEL_TAGS
    except OSError as exc:
        raise ImageReadError(f"cannot read the file: {exc}", path=path) from exc
    except Exception as exc:  # pydicom raises many types on a corrupt header
        raise ImageReadError(f"corrupt DICOM header ({type(exc).__name__}: {exc})", path=path) from exc
    ts = ds.file_meta.get("TransferSyntaxUID")
    deflated = ts is not None and ts == pydicom.uid.DeflatedExplicitVRLittleEndian
    if not at_pixels and not deflated and offset >= size:
        sop = ds.file_meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
        sop_name = getattr(sop, "name", "") if sop is not None else ""
        if "Rows" in ds or sop_name.endswith("Image Storage"):
            raise ImageReadError(
                f"the file ends before its pixel data (truncated DICOM file, {size} bytes)", path=path
            )
        return _File(path, ds, None, size)
    return _File(path, ds, None if deflated else offset, size)


def _series_info(uid: str, files: list[_File]) -> SeriesInfo:
    ds = files[0].ds
    try:
        n_volumes = _count_volumes([fr for f in files for fr in _frames_of(f)])
    except DicomSeriesError:
        n_volumes = 1
    return SeriesInfo(
        uid=uid,
        number=_int(ds.get("SeriesNumber")),
        description=str(ds.get("SeriesDescription", "") or "").strip(),
        modality=str(ds.get("Modality", "") or ""),
        n_files=len(files),
        n_volumes=n_volumes,
        files=tuple(f.path for f in files),
    )


def _select(folder: str | os.PathLike[str], series: str | int | None
            ) -> tuple[Path, SeriesInfo, list[_Frame], list[str]]:
    root, groups = _scan(folder)
    info, files = _choose(root, groups, series)
    frames: list[_Frame] = []
    seen: dict[str, Path] = {}
    dropped: list[str] = []
    for f in files:
        for fr in _frames_of(f):
            if fr.uid in seen:
                dropped.append(f.path.name)
                continue
            seen[fr.uid] = f.path
            frames.append(fr)
    warnings = []
    if dropped:
        names = sorted(set(dropped))
        warnings.append(f"ignored {len(names)} duplicated file(s) (same SOPInstanceUID as another): "
                        + ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    return root, info, frames, warnings


def _choose(root: Path, groups: list[tuple[SeriesInfo, list[_File]]], series: str | int | None
            ) -> tuple[SeriesInfo, list[_File]]:
    listing = "; ".join(g[0].summary() for g in groups)
    if series is None:
        if len(groups) == 1:
            return groups[0]
        raise AmbiguousSeriesError(
            f"the folder holds {len(groups)} DICOM series; choose one by UID, number or "
            f"description: {listing}",
            path=root, series=[_as_dict(g[0]) for g in groups],
        )
    if isinstance(series, bool) or not isinstance(series, (str, int, np.integer)):
        raise OptionError(f"series must be a UID, a series number or a description; got {series!r}")
    if isinstance(series, (int, np.integer)):
        matches = [g for g in groups if g[0].number == int(series)]
    else:
        text = series.strip()
        matches = [g for g in groups if g[0].uid == text]
        matches = matches or [g for g in groups if g[0].description == text]
        matches = matches or [g for g in groups if g[0].description.casefold() == text.casefold()]
        if not matches and text.lstrip("+-").isdigit():
            matches = [g for g in groups if g[0].number == int(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousSeriesError(
            f"{len(matches)} series match {series!r}; choose one by UID: "
            + "; ".join(g[0].summary() for g in matches),
            path=root, series=[_as_dict(g[0]) for g in matches],
        )
    raise DicomSeriesError(f"no DICOM series matches {series!r}; the folder holds: {listing}", path=root)


def _as_dict(info: SeriesInfo) -> dict[str, Any]:
    return {"uid": info.uid, "number": info.number, "description": info.description,
            "modality": info.modality, "n_files": info.n_files, "n_volumes": info.n_volumes}


# --------------------------------------------------------------------------- header values
def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _floats(value: Any, n: int | None = None) -> list[float] | None:
    """The numbers of a DS/IS/FD value (single or multi-valued); None if absent or malformed."""
    if value is None or isinstance(value, bytes):
        return None
    if isinstance(value, str):
        items: list[Any] = value.split("\\") if value.strip() else []
    elif hasattr(value, "__iter__"):
        items = list(value)
    else:
        items = [value]
    try:
        vals = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if not vals or (n is not None and len(vals) != n):
        return None
    return vals


def _first(value: Any) -> float | None:
    vals = _floats(value)
    return vals[0] if vals else None


def _hashable(value: Any) -> Any:
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    if hasattr(value, "__iter__"):
        return tuple(_hashable(v) for v in value)
    return str(value)


def _sortable(value: Any) -> tuple:
    if isinstance(value, tuple):
        return (2, tuple(_sortable(v) for v in value))
    if value is None:
        return (0, 0.0)
    try:
        return (1, float(value))
    except (TypeError, ValueError):
        return (3, str(value))


def _get(item: Any, name: str) -> Any:
    return None if item is None else item.get(name)


def _item(ds: Any, frame: int, name: str) -> Any:
    """The item of functional group ``name`` for ``frame`` (per-frame, else shared), or None."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > index:
            inner = seq[index].get(name)
            if inner is not None and len(inner) > 0:
                return inner[0]
    return None


def _frames_of(f: _File) -> list[_Frame]:
    """One `_Frame` per frame of ``f``, with geometry and the keys that tell volumes apart."""
    if f.frames is None:
        f.frames = _parse_frames(f)
    return f.frames


def _parse_frames(f: _File) -> list[_Frame]:
    ds = f.ds
    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    if not rows or not cols:
        raise DicomSeriesError("Rows/Columns missing or zero", path=f.path)
    if (_int(ds.get("SamplesPerPixel")) or 1) != 1:
        raise DicomSeriesError("colour (RGB) images are not supported: expected one sample per pixel",
                               path=f.path)
    if "MOSAIC" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        raise DicomSeriesError(
            "a Siemens mosaic image (many slices tiled in one image): not supported; convert the "
            "series with dcm2niix and read the NIfTI", path=f.path)
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    if n_frames > 1 and not enhanced:
        raise DicomSeriesError(
            f"multi-frame file ({n_frames} frames) without per-frame functional groups: "
            "its slice positions are unknown, so it cannot be read as a volume", path=f.path)
    slope0 = _first(ds.get("RescaleSlope"))
    inter0 = _first(ds.get("RescaleIntercept"))
    out = []
    for k in range(n_frames):
        src = {}
        if enhanced:
            for group, names in (
                ("PlanePositionSequence", ("ImagePositionPatient",)),
                ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
                ("PixelMeasuresSequence", ("PixelSpacing", "SpacingBetweenSlices", "SliceThickness")),
                ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
                ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth")),
            ):
                item = _item(ds, k, group)
                for name in names:
                    src[name] = _get(item, name)
            content = _item(ds, k, "FrameContentSequence")
            diffusion = _item(ds, k, "MRDiffusionSequence")
            gradient = _get(diffusion, "DiffusionGradientDirectionSequence")
            keys = (
                ("TemporalPositionIndex", _get(content, "TemporalPositionIndex")),
                ("diffusion", (_get(diffusion, "DiffusionBValue"),
                               _get(gradient[0], "DiffusionGradientOrientation") if gradient else None)),
                ("StackID", _get(content, "StackID")),
                ("echo", _get(_item(ds, k, "MREchoSequence"), "EffectiveEchoTime")),
                ("trigger time", _get(_item(ds, k, "CardiacSynchronizationSequence"),
                                      "NominalCardiacTriggerDelayTime")),
                ("FrameType", _get(_item(ds, k, "MRImageFrameTypeSequence"), "FrameType")),
            )
            order = (_hashable(_get(content, "FrameAcquisitionDateTime")), k)
        else:
            for name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                         "SpacingBetweenSlices", "SliceThickness", "RescaleSlope", "RescaleIntercept",
                         "WindowCenter", "WindowWidth"):
                src[name] = ds.get(name)
            bval = next((ds[t].value for t in ((0x0018, 0x9087), (0x0019, 0x100C), (0x0043, 0x1039),
                                               (0x2001, 0x1003)) if t in ds), None)
            grad = next((ds[t].value for t in ((0x0018, 0x9089), (0x0019, 0x100E)) if t in ds), None)
            keys = (
                ("TemporalPositionIdentifier", ds.get("TemporalPositionIdentifier")),
                ("diffusion", (bval, grad)),
                ("AcquisitionNumber", ds.get("AcquisitionNumber")),
                ("echo", (ds.get("EchoNumbers"), ds.get("EchoTime"))),
                ("TriggerTime", ds.get("TriggerTime")),
                ("ImageType", ds.get("ImageType")),
            )
            order = (_hashable(ds.get("AcquisitionDateTime") or ds.get("AcquisitionTime")),
                     _int(ds.get("InstanceNumber")) or 0)
        pos = _floats(src["ImagePositionPatient"], 3)
        iop = _floats(src["ImageOrientationPatient"], 6)
        if pos is None or iop is None:
            raise DicomSeriesError(
                "ImagePositionPatient/ImageOrientationPatient missing or malformed: the image has no "
                "position in the patient (a secondary capture or screenshot?)", path=f.path)
        row, col = np.array(iop[:3]), np.array(iop[3:])
        if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
                and abs(row @ col) < 1e-3):
            raise DicomSeriesError(f"ImageOrientationPatient is not two orthogonal unit vectors: {iop}",
                                   path=f.path)
        row = row / np.linalg.norm(row)
        col = col - (col @ row) * row
        col = col / np.linalg.norm(col)
        ps = _floats(src["PixelSpacing"], 2)
        if ps is None or min(ps) <= 0:
            ps = None
        spacing = _first(src["SpacingBetweenSlices"]) or _first(src["SliceThickness"])
        slope = _first(src["RescaleSlope"])
        inter = _first(src["RescaleIntercept"])
        out.append(_Frame(
            file=f, frame=k, n_frames=n_frames, position=np.array(pos), row=row, col=col,
            shape=(rows, cols), pixel_spacing=(ps[0], ps[1]) if ps else (0.0, 0.0),
            slice_spacing=spacing if spacing and spacing > 0 else None,
            slope=slope if slope is not None else (slope0 if slope0 is not None else 1.0),
            intercept=inter if inter is not None else (inter0 if inter0 is not None else 0.0),
            window=(_first(src["WindowCenter"]), _first(src["WindowWidth"])),
            keys=tuple((name, _hashable(v)) for name, v in keys),
            order=order,
            uid=f"{ds.get('SOPInstanceUID') or f.path}#{k}",
        ))
    return out


# --------------------------------------------------------------------------- geometry
def _normal(frames: list[_Frame], root: Path) -> np.ndarray:
    first = frames[0]
    for fr in frames[1:]:
        if (np.abs(fr.row - first.row).max() > SAME_ORIENTATION
                or np.abs(fr.col - first.col).max() > SAME_ORIENTATION):
            raise DicomSeriesError(
                f"the series mixes slice orientations ({first.file.path.name}: "
                f"{np.round(np.r_[first.row, first.col], 4).tolist()}, {fr.file.path.name}: "
                f"{np.round(np.r_[fr.row, fr.col], 4).tolist()}): a localizer or multi-stack series "
                "is not one volume", path=root)
        if fr.shape != first.shape or not np.allclose(fr.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise DicomSeriesError(
                f"slices differ in size: {first.file.path.name} is {first.shape} pixels of "
                f"{first.pixel_spacing} mm, {fr.file.path.name} is {fr.shape} of {fr.pixel_spacing} mm",
                path=root)
    n = np.cross(first.row, first.col)
    for fr in frames:
        fr.proj = float(fr.position @ n)
    return n


def _clusters(frames: list[_Frame]) -> list[list[_Frame]]:
    """Frames grouped by position along the normal (``proj`` set), in increasing order."""
    ordered = sorted(frames, key=lambda fr: fr.proj)
    groups = [[ordered[0]]]
    for fr in ordered[1:]:
        if fr.proj - groups[-1][-1].proj < SAME_POSITION_MM:
            groups[-1].append(fr)
        else:
            groups.append([fr])
    return groups


def _count_volumes(frames: list[_Frame]) -> int:
    if not frames:
        return 1
    _normal(frames, frames[0].file.path)
    return max(len(g) for g in _clusters(frames))


def _split_volumes(frames: list[_Frame], root: Path) -> tuple[list[list[_Frame]], str]:
    """Frames split into volumes (each unsorted) and what told the volumes apart."""
    _normal(frames, root)
    groups = _clusters(frames)
    counts = Counter(len(g) for g in groups)
    if len(counts) > 1:
        usual = counts.most_common(1)[0][0]
        odd = [g for g in groups if len(g) != usual]
        raise DicomSeriesError(
            f"slice positions repeat unevenly: most of the {len(groups)} positions hold {usual} "
            "slice(s) but " + ", ".join(f"{g[0].proj:.3f} mm holds {len(g)}" for g in odd[:6])
            + (" ..." if len(odd) > 6 else "")
            + " (positions along the slice normal): an incomplete multi-volume series, or "
            "duplicated slices", path=root)
    n = len(groups[0])
    if n == 1:
        return [frames], ""
    for name_index, (name, _) in enumerate(frames[0].keys):
        values = sorted({fr.keys[name_index][1] for fr in frames}, key=_sortable)
        if len(values) == n and all(len({fr.keys[name_index][1] for fr in g}) == n for g in groups):
            rank = {v: i for i, v in enumerate(values)}
            vols: list[list[_Frame]] = [[] for _ in range(n)]
            for fr in frames:
                vols[rank[fr.keys[name_index][1]]].append(fr)
            return vols, name
    vols = [[] for _ in range(n)]
    for g in groups:
        for i, fr in enumerate(sorted(g, key=lambda fr: (_sortable(fr.order), str(fr.file.path)))):
            vols[i].append(fr)
    return vols, "acquisition order only (no header field differs consistently)"


@dataclass
class _Plan:
    frames: list[_Frame]  # sorted along the normal
    spacing: tuple[float, float, float]  # array order mm
    origin: tuple[float, float, float]  # LPS (S, P, L)
    direction: np.ndarray  # array order
    warnings: list[str]


def _plan(frames: list[_Frame], root: Path) -> _Plan:
    """Sort ``frames`` along the normal and check that they form a regular grid."""
    n = _normal(frames, root)
    frames = sorted(frames, key=lambda fr: fr.proj)
    first = frames[0]
    warnings: list[str] = []
    proj = np.array([fr.proj for fr in frames])
    if len(frames) == 1:
        step = first.slice_spacing or 1.0
        warnings.append(f"single slice: slice spacing {step} mm taken from "
                        + ("SpacingBetweenSlices/SliceThickness" if first.slice_spacing else "nowhere (1 mm assumed)"))
    else:
        steps = np.diff(proj)
        median = float(np.median(steps))
        gaps = np.flatnonzero(steps > GAP_FACTOR * median)
        if gaps.size:
            raise DicomSeriesError(
                f"missing slice(s): the usual step is {median:.4g} mm but "
                + ", ".join(f"{steps[i]:.4g} mm separate the slices at {proj[i]:.3f} and "
                            f"{proj[i + 1]:.3f} mm (about {round(steps[i] / median) - 1} missing; "
                            f"{frames[i].file.path.name} -> {frames[i + 1].file.path.name})"
                            for i in gaps[:6])
                + " (positions along the slice normal)", path=root)
        k = np.arange(len(frames))
        step, c0 = np.polyfit(k, proj, 1)
        tol = max(UNEVEN_ABS_MM, UNEVEN_REL * step)
        resid = np.abs(proj - (c0 + step * k))
        if resid.max() > tol:
            odd = np.flatnonzero(np.abs(steps - median) > tol)
            raise DicomSeriesError(
                f"uneven slice spacing: the usual step is {median:.4g} mm but "
                + ", ".join(f"{steps[i]:.4g} mm separate the slices at {proj[i]:.3f} and {proj[i + 1]:.3f} mm"
                            for i in odd[:6])
                + f" (positions along the slice normal; a slice lies {resid.max():.3g} mm off the regular "
                f"grid, tolerance {tol:.3g} mm)", path=root)
        d = np.array([fr.position for fr in frames]) - first.position
        side = np.linalg.norm(d - np.outer(d @ n, n), axis=1)
        if side.max() > tol:
            i = int(side.argmax())
            raise DicomSeriesError(
                f"the slices are sheared: the slice at {proj[i]:.3f} mm lies {side[i]:.3g} mm sideways of "
                "the normal through the first slice (gantry tilt?); resample it before reading", path=root)
        step = float(step)
    if first.pixel_spacing == (0.0, 0.0):
        warnings.append("PixelSpacing missing: 1 mm pixels assumed")
        ps = (1.0, 1.0)
    else:
        ps = first.pixel_spacing
    d_xyz = np.column_stack([first.row, first.col, n])
    return _Plan(frames, (float(step), ps[0], ps[1]), tuple(first.position[::-1]), d_xyz[::-1, ::-1], warnings)


# --------------------------------------------------------------------------- pixels
def _physical_memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _raw_dtype(ds: Any) -> np.dtype:
    bits = _int(ds.get("BitsAllocated")) or 16
    signed = _int(ds.get("PixelRepresentation")) == 1
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return np.dtype(np.float32 if bits <= 32 else np.float64)
    for size, dt in ((8, np.int8 if signed else np.uint8), (16, np.int16 if signed else np.uint16),
                     (32, np.int32 if signed else np.uint32)):
        if bits <= size:
            return np.dtype(dt)
    return np.dtype(np.int64 if signed else np.uint64)


def _decode_pydicom(f: _File) -> np.ndarray:
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.filereader import read_dataset

    if f.pixel_offset is None:
        ds = pydicom.dcmread(f.path)
    else:
        with open(f.path, "rb") as fp:
            fp.seek(f.pixel_offset)
            implicit, little = getattr(f.ds, "original_encoding", None) or (f.ds.is_implicit_VR,
                                                                             f.ds.is_little_endian)
            tail = read_dataset(fp, implicit, little)
        ds = Dataset(f.ds)
        ds.file_meta = f.ds.file_meta
        ds.update(tail)
    return ds.pixel_array


def _decode_sitk(f: _File) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(f.path))
    return sitk.GetArrayFromImage(reader.Execute())


def _decode(f: _File, frames: Sequence[_Frame], warnings: list[str]) -> tuple[np.ndarray, bool]:
    """``(n_frames, rows, cols)`` pixels of ``f`` and whether they are already rescaled."""
    n_frames, shape = frames[0].n_frames, frames[0].shape
    ts = f.ds.file_meta.get("TransferSyntaxUID")
    try:
        native = ts is not None and ts.is_transfer_syntax and not ts.is_compressed
    except ValueError:  # a private transfer syntax
        native = False
    if f.pixel_offset is not None and native:
        need = n_frames * shape[0] * shape[1] * ((_int(f.ds.get("BitsAllocated")) or 16) // 8)
        have = f.size - f.pixel_offset - (8 if ts.is_implicit_VR else 12)  # less tag, VR, length
        if have < need:
            raise ImageReadError(f"truncated DICOM file: {max(have, 0)} bytes of pixel data where the "
                                 f"header needs {need}", path=f.path)
    try:
        arr, rescaled = _decode_pydicom(f), False
    except Exception as exc:  # any decoder failure: try SimpleITK before giving up
        first_error = f"{type(exc).__name__}: {exc}"
        identity = all(fr.slope == 1 and fr.intercept == 0 for fr in frames)
        try:
            if n_frames > 1 and not identity:
                raise ImageReadError("not tried: GDCM applies one rescale to all frames of a multi-frame file")
            arr = _decode_sitk(f)
        except Exception as exc2:
            raise ImageReadError(
                f"cannot decode the pixel data (transfer syntax {getattr(ts, 'name', ts)}; truncated or "
                f"corrupt file?): pydicom: {first_error}; SimpleITK: {type(exc2).__name__}: {exc2}",
                path=f.path) from exc
        # GDCM applies RescaleSlope/Intercept itself (checked in tests/test_dicom.py).
        rescaled = not identity
        log.warning("%s: decoded by SimpleITK because pydicom failed (%s)", f.path, first_error)
        warnings.append(f"{f.path.name}: decoded by SimpleITK (pydicom: {first_error})")
    arr = np.asarray(arr)
    arr = arr.reshape((-1, *arr.shape[-2:])) if arr.ndim >= 2 else arr
    if arr.shape != (n_frames, *shape):
        raise ImageReadError(f"decoded pixel data have shape {arr.shape}, the header says "
                             f"{n_frames} frame(s) of {shape[0]}x{shape[1]}", path=f.path)
    return arr, rescaled


def _read_volumes(root: Path, info: SeriesInfo, groups: list[list[_Frame]], how: str,
                  warnings: list[str]) -> list[Volume]:
    plans = [_plan(g, root) for g in groups]
    if how.startswith("acquisition order"):
        warnings = [*warnings, f"the {len(plans)} volumes are told apart by {how}"]
    all_frames = [fr for p in plans for fr in p.frames]
    rescale = any(fr.slope != 1 or fr.intercept != 0 for fr in all_frames)
    dtype = np.dtype(np.float32) if rescale else np.result_type(*{_raw_dtype(fr.file.ds) for fr in all_frames})
    rows, cols = all_frames[0].shape
    need = len(all_frames) * rows * cols * max(dtype.itemsize, _raw_dtype(all_frames[0].file.ds).itemsize)
    phys = _physical_memory_bytes()
    if phys is not None and need > phys / 2:
        raise ResourceLimitError(
            f"{info.summary()} needs {need / 2**30:.2f} GiB ({len(all_frames)} slices of {rows}x{cols} "
            f"{dtype}), more than half of this machine's {phys / 2**30:.1f} GiB of memory", path=root)
    arrays = [np.empty((len(p.frames), rows, cols), dtype) for p in plans]
    where: dict[Path, list[tuple[int, int, _Frame]]] = {}
    for v, p in enumerate(plans):
        for z, fr in enumerate(p.frames):
            where.setdefault(fr.file.path, []).append((v, z, fr))
    decode_warnings: list[str] = []
    for targets in where.values():
        f = targets[0][2].file
        pixels, rescaled = _decode(f, [t[2] for t in targets], decode_warnings)
        for v, z, fr in targets:
            if rescale and not rescaled:
                arrays[v][z] = pixels[fr.frame] * float(fr.slope) + float(fr.intercept)
            else:
                arrays[v][z] = pixels[fr.frame]
    if "MONOCHROME1" in str(all_frames[0].file.ds.get("PhotometricInterpretation", "")):
        decode_warnings.append("MONOCHROME1: low values are displayed white by convention")
    volumes = []
    for v, (p, arr) in enumerate(zip(plans, arrays)):
        first = p.frames[0]
        meta: dict[str, Any] = {
            "source": str(root),
            "series_uid": info.uid,
            "series_number": info.number,
            "series_description": info.description,
            "modality": info.modality,
            "n_files": info.n_files,
        }
        if first.window[0] is not None and first.window[1] is not None:
            meta["window_center"], meta["window_width"] = float(first.window[0]), float(first.window[1])
        if len(plans) > 1:
            key = f"{how}: {dict(first.keys)[how]}" if how in dict(first.keys) else f"acquisition order: {v + 1}"
            meta.update(volume_index=v, n_volumes=len(plans), volume_key=key)
        meta["warnings"] = [*warnings, *p.warnings, *decode_warnings]
        name = info.description or (f"series {info.number}" if info.number is not None else "dicom")
        if len(plans) > 1:
            name = f"{name} [{v + 1}/{len(plans)}]"
        volumes.append(Volume(arr, p.spacing, p.origin, p.direction, name=name, meta=meta))
    log.info("%s: read %s as %d volume(s) of %s", root, info.summary(), len(volumes), volumes[0].shape)
    return volumes
