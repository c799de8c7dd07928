"""Export a corrected case: into a training dataset (nnU-Net v2 raw layout), or its labels alone.

`export_case` adds one case to a dataset folder::

    DATASET/
      dataset.json                       channel_names, labels (+ "ignore"), numTraining, file_ending
      imagesTr/{case}_{XXXX}.nii.gz      the co-registered sequences, in the model's channel order
      labelsTr/{case}.nii.gz             the corrected labels (unreviewed voxels optionally "ignore")
      provenance/{case}.json             where it came from and how much was corrected

All-or-nothing: every file of the case (and the new ``dataset.json``) is first written into a
hidden temporary folder inside the dataset, then renamed into place, ``dataset.json`` last; if
anything fails (read-only folder, full disk...) the renames done so far are undone, replaced files
are put back and the temporary folder is removed, so the dataset is left byte for byte as it was
and `ExportError` says why. An existing case is only replaced with ``overwrite=True``.

Privacy: case IDs are a hash of the voxels (`napari_mriseg.core.dataset.propose_case_id`) or a
number, never a file, folder or patient name; NIfTI headers carry geometry only
(`napari_mriseg.core.dataset.training_nifti`); the provenance lists source files by their SHA-256,
size and format, without their names or folders (which often carry the patient's name).

`labels_to_native` takes labels back onto a sequence's own grid through the inverse registration
(nearest neighbour); `write_labels` writes labels alone; `export_dicom_seg` writes a DICOM SEG
when highdicom is installed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .case import Case
from .dataset import (
    DEFAULT_LABELS,
    FILE_ENDING,
    IGNORE,
    WRITABLE_ENDINGS,
    DatasetError,
    case_ids,
    channel_names_of,
    check_anonymous_case_id,
    check_labels,
    dicom_patient_names,
    propose_case_id,
    read_dataset_meta,
    training_nifti,
    write_training_volume,
)
from .errors import MriSegError, OutputExistsError
from .volume import Grid, Volume

log = logging.getLogger(__name__)

PROVENANCE_DIR = "provenance"
#: Version of the provenance JSON written by `export_case`.
PROVENANCE_VERSION = 1
_TMP_PREFIX = ".mriseg-export-"

#: ``progress(fraction in [0, 1], message)``.
ProgressCallback = Callable[[float, str], Any]


class ExportError(MriSegError, OSError):
    """The dataset or file could not be written (read-only folder, full disk...); nothing was
    changed."""


class MissingDependencyError(MriSegError, ImportError):
    """An optional package needed for this export is not installed; the message says which."""


# --------------------------------------------------------------------------- registration
@dataclass(frozen=True, eq=False)
class RegistrationRecord:
    """What export needs from a registration: the transforms and the quality figures.

    Attributes
    ----------
    reference : str
        The reference sequence (its grid is the labels' grid).
    transforms : mapping of str to SimpleITK.Transform
        Per registered sequence: reference world -> that sequence's world (ITK convention).
    report : mapping
        Quality figures and settings (`CaseRegistration.report`), without any case name.
    """

    reference: str
    transforms: Mapping[str, Any]
    report: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, registration: Any) -> RegistrationRecord | None:
        """From a `CaseRegistration` (or a record, or None)."""
        if registration is None or isinstance(registration, cls):
            return registration
        if hasattr(registration, "results") and hasattr(registration, "report"):
            report = {k: v for k, v in registration.report().items() if k not in ("case_id", "files")}
            return cls(registration.case.reference, {n: r.transform for n, r in registration.results.items()},
                       report)
        raise TypeError(f"not a registration: {type(registration).__name__}")

    @classmethod
    def from_folder(cls, folder: str | Path) -> RegistrationRecord:
        """From a ``mriseg register --out`` folder (``registration.json`` and ``*.tfm`` files)."""
        from .registration import REPORT_NAME, load_transform

        root = Path(folder)
        path = root / REPORT_NAME
        try:
            report = json.loads(path.read_text())
            reference = str(report["reference"])
            files = dict(report.get("files", {}).get("transforms", {}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DatasetError(f"not a registration folder: {REPORT_NAME} is missing or invalid "
                               f"({type(exc).__name__}: {exc}); pass the folder `mriseg register --out` wrote",
                               path=path) from exc
        transforms = {name: load_transform(root / fname) for name, fname in files.items()}
        return cls(reference, transforms, {k: v for k, v in report.items() if k not in ("case_id", "files")})


def labels_to_native(labels: Volume, registration: Any, name: str,
                     native: Grid | Volume | Case | None = None) -> Volume:
    """``labels`` (on the reference grid) taken onto sequence ``name``'s native grid (nearest).

    Parameters
    ----------
    labels : Volume
        Label map on the reference grid, array ``(Z, Y, X)``.
    registration : CaseRegistration, RegistrationRecord or None
        Its transform for ``name`` (reference world -> sequence world) is inverted; a sequence it
        did not register (or None) only changes grid, positions in mm unchanged.
    name : str
        The sequence.
    native : Grid, Volume or Case, optional
        The sequence's own grid: the case *as loaded* (before co-registration), that sequence, or
        its grid. Only optional for the reference itself.

    Returns
    -------
    Volume
        Integer label map on the native grid, named ``labels``.
    """
    from .resample import resample_to_grid

    rec = RegistrationRecord.of(registration)
    if isinstance(native, Case):
        grid = native[name].grid
    elif isinstance(native, Volume):
        grid = native.grid
    else:
        grid = native
    labels = labels if labels.is_label else labels.with_array(labels.array, kind="label")
    if grid is None:
        if rec is not None and name == rec.reference:
            return labels.with_array(labels.array, name="labels")
        raise DatasetError(f"the native grid of {name!r} is needed: pass the case as loaded (native=)")
    transform = rec.transforms.get(name) if rec is not None else None
    if transform is None:
        out = resample_to_grid(labels, grid)
    else:
        from .registration import to_native

        out = to_native(labels, transform, grid)
    return out.with_array(out.array, name="labels")


# --------------------------------------------------------------------------- provenance pieces
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _source_entry(sequence: str, path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"sequence": sequence}
    if path.is_file():
        suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".gz") else path.suffix
        entry.update(kind="file", format=suffix.lower(), bytes=path.stat().st_size, sha256=sha256_file(path))
    elif path.is_dir():  # a DICOM folder: one hash over its files (relative names and contents)
        digest, n, size = hashlib.sha256(), 0, 0
        for f in sorted(q for q in path.rglob("*") if q.is_file()):
            digest.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode())
            n, size = n + 1, size + f.stat().st_size
        entry.update(kind="folder", n_files=n, bytes=size, sha256=digest.hexdigest())
    else:
        entry.update(kind="missing")
    return entry


Sources = Sequence[str | Path] | Mapping[str, str | Path]


def _source_items(sources: Sources | None) -> list[tuple[str, Path]]:
    if isinstance(sources, Mapping):
        return [(str(k), Path(v)) for k, v in sources.items()]
    return [("", Path(v)) for v in sources or ()]


def source_records(case: Case, sources: Sources | None = None) -> list[dict[str, Any]]:
    """Hashes of the files the case was read from: the sequences' ``meta["source"]`` plus
    ``sources`` (paths, or role -> path). File and folder names are left out (they often carry
    the patient's name)."""
    found: dict[Path, str] = {}
    for role, path in _source_items(sources):
        found.setdefault(path, role)
    for name, vol in case.sequences.items():
        src = vol.meta.get("source")
        if src:
            found.setdefault(Path(str(src)), name)
    return [_source_entry(seq, p) for p, seq in found.items()]


def edit_statistics(labels: Volume, prediction: Volume | None, label_names: Mapping[str, int]) -> dict | None:
    """Agreement between the model's prediction and the corrected labels, per label.

    Returns None without a prediction; else ``voxels_changed``, ``fraction_changed`` and per
    label: Dice (1.0 when both are empty), voxel counts, volumes in mL and the volume change
    (mL and % of the predicted volume; None when the prediction is empty).
    """
    if prediction is None:
        return None
    pred, lab = np.asarray(prediction.array), np.asarray(labels.array)
    if pred.shape != lab.shape:
        raise DatasetError(f"the prediction ({pred.shape}) and the labels ({lab.shape}) are not on one grid")
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    changed = int(np.count_nonzero(pred != lab))
    per: dict[str, Any] = {}
    for name, value in label_names.items():
        p, c = pred == value, lab == value
        n_p, n_c, inter = int(p.sum()), int(c.sum()), int(np.count_nonzero(p & c))
        per[name] = {
            "value": int(value),
            "dice": round(2.0 * inter / (n_p + n_c), 6) if n_p + n_c else 1.0,
            "voxels_prediction": n_p, "voxels_corrected": n_c,
            "volume_prediction_ml": round(n_p * voxel_ml, 4), "volume_corrected_ml": round(n_c * voxel_ml, 4),
            "volume_change_ml": round((n_c - n_p) * voxel_ml, 4),
            "volume_change_percent": round(100.0 * (n_c - n_p) / n_p, 3) if n_p else None,
        }
    return {"voxels_changed": changed, "fraction_changed": round(changed / lab.size, 6), "labels": per}


def model_provenance(path: str | Path | None = None, config: Any = None, *, name: str | None = None) -> dict:
    """Name, version and training summary of a model for the provenance JSON.

    Parameters
    ----------
    path : path, optional
        The model folder or zip; its files are hashed (``weights_sha256``: the model's version).
    config : ModelConfig or dict, optional
        Its config (sequences, labels, software version, training summary).
    """
    out: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        out["name"] = name or p.name.removesuffix(".zip").removesuffix(".mriseg")
        weights = p / "model.safetensors" if p.is_dir() else p
        if weights.is_file():
            out["weights_sha256"] = sha256_file(weights)
    elif name:
        out["name"] = name
    if config is not None:
        d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        training = d.get("training") or {}
        out.update(software_version=d.get("software_version", ""), format_version=d.get("format_version"),
                   sequences=list(d.get("sequences", ())), labels=dict(d.get("labels", {})),
                   training={k: training[k] for k in ("epoch", "best_epoch", "epochs", "seed", "val") if k in training})
    out["version"] = out.get("weights_sha256", "")[:12] or out.get("software_version", "")
    return out


# --------------------------------------------------------------------------- writing
def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    lines = str(exc).strip().splitlines()
    text = getattr(exc, "strerror", None) or (lines[-1] if lines else type(exc).__name__)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the folder is read-only ({text}); choose a folder you can write to"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"the disk is full ({text}); free some space or choose another disk"
    return str(text)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


class _Staging:
    """Files written into a hidden folder inside the dataset, then renamed in; undone on failure."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[Path] = []
        self.tmp: Path | None = None
        self.log: list[tuple[Path, Path]] = []  # renames (from, to) done so far, in order

    def open(self, subdirs: Sequence[str]) -> None:
        missing = []
        for p in [self.root, *self.root.parents]:
            if p.exists():
                break
            missing.append(p)
        for p in reversed(missing):
            p.mkdir()
            self.created.append(p)
        for sub in subdirs:
            p = self.root / sub
            if not p.exists():
                p.mkdir()
                self.created.append(p)
        self.tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))

    def commit(self, items: Sequence[tuple[Path, Path]]) -> None:
        assert self.tmp is not None
        old = self.tmp / ".replaced"
        for i, (src, dst) in enumerate(items):
            if dst.exists():
                old.mkdir(exist_ok=True)
                backup = old / f"{i}"
                os.replace(dst, backup)
                self.log.append((dst, backup))
            os.replace(src, dst)
            self.log.append((src, dst))

    def rollback(self) -> list[str]:
        problems = []
        for a, b in reversed(self.log):
            try:
                os.replace(b, a)  # new file back into the temporary folder; replaced file back in place
            except OSError as exc:
                problems.append(f"{b}: {exc}")
        self.log.clear()
        self.cleanup()
        return problems

    def cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        for p in reversed(self.created):
            try:
                p.rmdir()
            except OSError:
                pass
        self.created.clear()


@dataclass(frozen=True)
class ExportResult:
    """What `export_case` wrote.

    Attributes
    ----------
    case_id : str
    dataset : Path
    images : tuple of Path
        ``imagesTr`` files in channel order.
    labels : Path
    provenance : Path
    dataset_json : Path
    channel_names : tuple of str
    label_values : dict of str to int
        As written in dataset.json (background and ignore included).
    num_training : int
        Cases in the dataset after the export.
    ignored_voxels : int
        Voxels set to the ``ignore`` label (unreviewed).
    replaced : bool
        An existing case was overwritten.
    extra_files : tuple of Path
        Labels on native grids kept in ``provenance/``.
    warnings : tuple of str
    """

    case_id: str
    dataset: Path
    images: tuple[Path, ...]
    labels: Path
    provenance: Path
    dataset_json: Path
    channel_names: tuple[str, ...]
    label_values: dict[str, int]
    num_training: int
    ignored_voxels: int = 0
    replaced: bool = False
    extra_files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for a status bar or the command line."""
        ignored = f", {self.ignored_voxels} unreviewed voxels as ignore" if self.ignored_voxels else ""
        verb = "replaced" if self.replaced else "added"
        return (f"{verb} {self.case_id}: {len(self.images)} images ({', '.join(self.channel_names)}), labels"
                f"{ignored}, provenance; {self.dataset.name} now has {self.num_training} case(s)")


def _sequence(case: Case, name: str) -> Volume:
    if name in case.sequences:
        return case[name]
    folded = {n.lower(): n for n in case.names}
    if name.lower() in folded:
        return case[folded[name.lower()]]
    raise DatasetError(f"the case has no sequence {name!r} (it has {', '.join(case.names)}); "
                       "rename the sequence or choose another channel order")


def _mask_on(mask: np.ndarray | Volume, labels: Volume, what: str) -> np.ndarray:
    if isinstance(mask, Volume):
        if labels.grid.mismatch(mask.grid) is not None:
            raise DatasetError(f"the {what} mask is not on the labels' grid")
        mask = mask.array
    arr = np.asarray(mask)
    if arr.shape != labels.shape:
        raise DatasetError(f"the {what} mask has shape {arr.shape}; the labels have {labels.shape}")
    return arr.astype(bool, copy=False)


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _channels(case: Case, labels: Volume, channel_order: Sequence[str] | None, meta: dict | None,
              root: Path) -> tuple[list[str], list[Volume]]:
    """Channel names and their volumes, checked against the dataset and the labels' grid."""
    names = list(channel_order) if channel_order else list(channel_names_of(meta) if meta else case.names)
    if len(set(names)) != len(names) or not names:
        raise DatasetError(f"channel order {names} must list distinct sequences")
    if meta is not None and tuple(names) != channel_names_of(meta):
        raise DatasetError(f"channel order {names} differs from the dataset's {list(channel_names_of(meta))}; "
                           "export in the dataset's order or into a new dataset", path=root / "dataset.json")
    images = [_sequence(case, n) for n in names]
    for n, img in zip(names, images):
        bad = labels.grid.mismatch(img.grid)
        if bad is not None:
            raise DatasetError(f"sequence {n!r} is not on the labels' grid ({bad[0]}: {bad[2]} instead of {bad[1]}); "
                               "co-register the case first (Register panel or `mriseg register`)")
    return names, images


def _labels_to_write(labels: Volume, label_names: Mapping[str, int] | None, reviewed: Any, ignore_unreviewed: bool,
                     meta: dict | None, root: Path) -> tuple[dict[str, int], dict[str, int], Volume, Any, int]:
    """(class names, dataset.json labels, label map to write, reviewed mask or None, ignored voxels)."""
    given = dict(label_names) if label_names else (
        {k: v for k, v in meta["labels"].items() if k not in ("background", IGNORE)} if meta else dict(DEFAULT_LABELS))
    given = {str(k): int(v) for k, v in given.items() if k not in ("background", IGNORE)}
    if meta is not None:
        existing = {k: v for k, v in meta["labels"].items() if k not in ("background", IGNORE)}
        if existing != given:
            raise DatasetError(f"labels {given} differ from the dataset's {existing}; export with the dataset's "
                               "labels (its model) or into a new dataset", path=root / "dataset.json")
    unknown = sorted(set(np.unique(labels.array).tolist()) - {0} - set(given.values()))
    if unknown:
        raise DatasetError(f"the labels hold values {unknown} that have no name (named: {given}); "
                           "relabel those voxels or give their names")
    ignore_value = meta["labels"].get(IGNORE) if meta else None
    rev = _mask_on(reviewed, labels, "reviewed") if reviewed is not None else None
    array, ignored = labels.array, 0
    if ignore_unreviewed:
        if rev is None:
            raise DatasetError("no reviewed mask: mark the reviewed regions first, or export without "
                               "'unreviewed as ignore'")
        if not rev.any():
            raise DatasetError("nothing is marked reviewed: every voxel would be 'ignore'; mark the reviewed "
                               "regions first, or export without 'unreviewed as ignore'")
        ignore_value = ignore_value or max(given.values(), default=0) + 1
        ignored = int(np.count_nonzero(~rev))
        array = np.where(rev, labels.array, ignore_value)
    values = check_labels({**given, **({IGNORE: ignore_value} if ignore_value else {})}, path=root / "dataset.json")
    return given, values, labels.with_array(array, name="labels"), rev, ignored


def export_case(case: Case, labels: Volume, dataset_dir: str | Path, *, case_id: str | None = None,
                channel_order: Sequence[str] | None = None, label_names: Mapping[str, int] | None = None,
                reviewed: np.ndarray | Volume | None = None, ignore_unreviewed: bool = False,
                registration: Any = None, model_info: Mapping[str, Any] | None = None,
                prediction: Volume | None = None, overwrite: bool = False,
                sources: Sources | None = None, native_labels: Mapping[str, Volume] | None = None,
                progress: ProgressCallback | None = None) -> ExportResult:
    """Add a co-registered case and its corrected labels to an nnU-Net v2 raw dataset.

    Parameters
    ----------
    case : Case
        Its sequences on the reference grid (co-registered); not modified.
    labels : Volume
        Corrected label map on the reference grid, array ``(Z, Y, X)``.
    dataset_dir : path
        Created if needed; appended to otherwise (its channel names and labels must agree).
    case_id : str, optional
        Default: `propose_case_id` (a hash of the voxels). A given ID must have a digit and no
        part of the DICOM PatientName.
    channel_order : sequence of str, optional
        Sequence names in channel order: the model's (`ModelConfig.sequences`). Default: the
        dataset's, else the case's order. Names match case-insensitively.
    label_names : mapping of str to int, optional
        Label name -> value (background 0 implicit): the model's labels. Default: the dataset's,
        else `DEFAULT_LABELS`. Every non-zero value in ``labels`` must be named.
    reviewed : (Z, Y, X) bool array or Volume, optional
        Voxels the clinician checked (reference grid). Its fraction goes to the provenance.
    ignore_unreviewed : bool
        Write the voxels not in ``reviewed`` as nnU-Net's ``ignore`` label (added to dataset.json
        with the highest value), so a half-corrected case is still valid training data.
    registration : CaseRegistration or RegistrationRecord, optional
        Its transforms (ITK text) and quality figures go to the provenance.
    model_info : mapping, optional
        Model name/version (`model_provenance`), for the provenance.
    prediction : Volume, optional
        The model's original prediction (reference grid): Dice and volume change per label.
    overwrite : bool
        Replace a case of the same ID; otherwise `OutputExistsError` before anything is written.
    sources : sequence of path, or mapping of role to path, optional
        Files/folders the case was read from (e.g. ``{"t1": ..., "labels": ...}``), hashed into
        the provenance, in addition to the sequences' own ``meta["source"]``.
    native_labels : mapping of str to Volume, optional
        Labels on sequences' native grids (`labels_to_native`), kept as
        ``provenance/{case}_labels_{name}.nii.gz``.
    progress : callable, optional
        ``progress(fraction, message)`` between files.

    Returns
    -------
    ExportResult

    Raises
    ------
    DatasetError
        Mismatched channels or labels, sequences not co-registered, a bad case ID.
    OutputExistsError
        The case exists and ``overwrite`` is False.
    ExportError
        Read-only folder, full disk...: the dataset is left byte for byte as it was.
    """
    root = Path(dataset_dir)
    say = progress or (lambda fraction, message: None)
    meta = read_dataset_meta(root)
    ending = str(meta.get("file_ending", FILE_ENDING)) if meta else FILE_ENDING
    if ending not in WRITABLE_ENDINGS:
        raise DatasetError(f"the dataset's file_ending is {ending!r}; export writes {' or '.join(WRITABLE_ENDINGS)} "
                           "datasets: choose another dataset folder", path=root / "dataset.json")

    names, images = _channels(case, labels, channel_order, meta, root)
    labels = labels if labels.is_label else labels.with_array(labels.array, kind="label")
    given, values, out_labels, rev, ignored = _labels_to_write(labels, label_names, reviewed, ignore_unreviewed,
                                                               meta, root)
    ignore_value = values.get(IGNORE)
    array = out_labels.array

    # ---- case ID and targets
    src_paths = [Path(str(v.meta["source"])) for v in case.sequences.values() if v.meta.get("source")]
    src_paths += [p for _, p in _source_items(sources)]
    if case_id is None:
        case_id = propose_case_id(images)
    else:
        check_anonymous_case_id(case_id, patient_names=dicom_patient_names(src_paths))
    img_targets = [root / "imagesTr" / f"{case_id}_{c:04d}{ending}" for c in range(len(images))]
    lab_target = root / "labelsTr" / f"{case_id}{ending}"
    prov_target = root / PROVENANCE_DIR / f"{case_id}.json"
    native_targets = {n: root / PROVENANCE_DIR / f"{case_id}_labels_{n}{ending}" for n in (native_labels or {})}
    targets = [*img_targets, lab_target, prov_target, *native_targets.values()]
    existing_files = [t for t in targets if t.exists()]
    if existing_files and not overwrite:
        raise OutputExistsError(f"case {case_id!r} exists already in this dataset; choose another case ID or "
                                "allow overwriting", path=existing_files[0])
    others = [c for c in case_ids(root, ending) if c != case_id]
    num_training = len(others) + 1

    # ---- provenance (figures only; transforms are added as text while staging)
    rec = RegistrationRecord.of(registration)
    say(0.05, "hashing the source files")
    warnings = []
    if sorted(values.values()) != list(range(len(values))):
        warnings.append(f"label values {sorted(values.values())} are not consecutive; nnU-Net expects 0..N")
    n_rev = int(rev.sum()) if rev is not None else None
    provenance: dict[str, Any] = {
        "format": "napari-mriseg provenance", "format_version": PROVENANCE_VERSION,
        "case_id": case_id, "exported_utc": _utc_now(),
        "software": {"name": "napari-mriseg", "version": _version()},
        "dataset": {"channel_names": {str(i): n for i, n in enumerate(names)}, "labels": values,
                    "file_ending": ending},
        "files": {"images": [t.relative_to(root).as_posix() for t in img_targets],
                  "labels": lab_target.relative_to(root).as_posix(),
                  "native_labels": {n: t.relative_to(root).as_posix() for n, t in native_targets.items()}},
        "geometry": {"reference": case.reference, "shape_zyx": list(labels.shape),
                     "spacing_mm_zyx": list(labels.spacing), "origin_mm_lps": list(labels.origin[::-1]),
                     "direction_zyx": np.asarray(labels.direction).tolist()},
        "sources": source_records(case, sources),
        "registration": None,
        "model": dict(model_info) if model_info else None,
        "edits": edit_statistics(labels, prediction, given),
        "review": {"reviewed_voxels": n_rev, "total_voxels": int(labels.array.size),
                   "reviewed_fraction": None if n_rev is None else round(n_rev / labels.array.size, 6),
                   "ignore_unreviewed": bool(ignore_unreviewed),
                   "ignore_value": ignore_value if ignore_unreviewed else None,
                   "ignored_voxels": ignored},
        "label_voxels": {n: int(np.count_nonzero(array == v)) for n, v in values.items()},
        "warnings": warnings,
    }
    dataset_json = {k: v for k, v in (meta or {}).items()
                    if k not in ("channel_names", "labels", "numTraining", "file_ending")}
    dataset_json = {"channel_names": {str(i): n for i, n in enumerate(names)}, "labels": values,
                    "numTraining": num_training, "file_ending": ending, **dataset_json}

    # ---- write everything into a temporary folder inside the dataset, then rename it in
    stage = _Staging(root)
    try:
        stage.open(["imagesTr", "labelsTr", PROVENANCE_DIR])
        tmp = stage.tmp
        assert tmp is not None
        items: list[tuple[Path, Path]] = []
        for i, (img, target) in enumerate(zip(images, img_targets)):
            say(0.1 + 0.6 * i / len(images), f"writing {target.name}")
            items.append((_stage_nifti(img, tmp / target.name), target))
        say(0.75, f"writing {lab_target.name}")
        items.append((_stage_nifti(out_labels, tmp / f"labels_{lab_target.name}"), lab_target))
        for n, t in native_targets.items():
            vol = native_labels[n]  # type: ignore[index]
            items.append((_stage_nifti(vol if vol.is_label else vol.with_array(vol.array, kind="label"),
                                       tmp / t.name), t))
        if rec is not None:
            provenance["registration"] = {**rec.report, "reference": rec.reference,
                                          "transforms_itk": {n: _transform_text(t, tmp) for n, t in rec.transforms.items()}}
        items.append((_stage_text(tmp / prov_target.name, json.dumps(provenance, indent=2) + "\n"), prov_target))
        items.append((_stage_text(tmp / "dataset.json", json.dumps(dataset_json, indent=2) + "\n"),
                      root / "dataset.json"))
        say(0.9, "moving the files into the dataset")
        stage.commit(items)  # dataset.json last
    except BaseException as exc:
        problems = stage.rollback()
        if isinstance(exc, MriSegError) or not isinstance(exc, (OSError, RuntimeError)):
            raise
        tail = "" if not problems else f" (could not undo: {'; '.join(problems)})"
        raise ExportError(f"could not export case {case_id!r}: {_reason(exc)}. Nothing was changed: the dataset "
                          f"is as it was{tail}", path=root) from exc
    stage.cleanup()
    say(1.0, "done")
    log.info("exported case %s to %s (%d cases)", case_id, root, num_training)
    return ExportResult(case_id, root, tuple(img_targets), lab_target, prov_target, root / "dataset.json",
                        tuple(names), values, num_training, ignored, bool(existing_files),
                        tuple(native_targets.values()), tuple(warnings))


def _stage_nifti(volume: Volume, path: Path) -> Path:
    import nibabel as nib

    nib.save(training_nifti(volume), str(path))
    _fsync(path)
    return path


def _stage_text(path: Path, text: str) -> Path:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _transform_text(transform: Any, folder: Path) -> str:
    import SimpleITK as sitk

    path = folder / ".transform.tfm"
    try:
        sitk.WriteTransform(transform, str(path))
        return path.read_text()
    finally:
        path.unlink(missing_ok=True)


def _version() -> str:
    from .. import __version__

    return __version__


def case_exists(dataset_dir: str | Path, case_id: str) -> bool:
    """True if ``dataset_dir`` holds labels, an image or a provenance file for ``case_id``."""
    root = Path(dataset_dir)
    meta = read_dataset_meta(root) if (root / "dataset.json").is_file() else None
    ending = str(meta.get("file_ending", FILE_ENDING)) if meta else FILE_ENDING
    return ((root / "labelsTr" / f"{case_id}{ending}").exists() or (root / PROVENANCE_DIR / f"{case_id}.json").exists()
            or any((root / "imagesTr").glob(f"{case_id}_[0-9][0-9][0-9][0-9]{ending}")))


# --------------------------------------------------------------------------- labels alone
def write_labels(labels: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a label map alone, whole or not at all, with its geometry.

    ``.nii.gz``/``.nii``: `training_nifti` (no identifiers in the header); ``.nrrd``/``.mha``
    through SimpleITK. Raises `OutputExistsError` for an existing file unless ``overwrite``, and
    `napari_mriseg.core.io.ImageWriteError` for a read-only folder or a full disk.
    """
    from .io import write_volume

    p = Path(path)
    vol = labels if labels.is_label else labels.with_array(labels.array, kind="label")
    if p.name.lower().endswith(WRITABLE_ENDINGS):
        return write_training_volume(vol, p, overwrite=overwrite)
    return write_volume(vol, p, overwrite=overwrite)


def _require_highdicom():
    try:
        import highdicom
    except ImportError:
        raise MissingDependencyError("DICOM SEG export needs the highdicom package, which is not installed: "
                                     "pip install highdicom (or export NIfTI labels instead)") from None
    return highdicom


def export_dicom_seg(labels: Volume, dicom_folder: str | Path, path: str | Path, *,
                     label_names: Mapping[str, int] | None = None, series: str | int | None = None,
                     overwrite: bool = False) -> Path:
    """Write ``labels`` as a DICOM SEG of the DICOM series they were drawn on (needs highdicom).

    Each frame of the source series is sampled from ``labels`` at its pixels' patient positions
    (nearest voxel), so the SEG lines up with the series whatever its storage order. The labels
    must lie on that series' grid in patient space: the case's reference, or use
    `labels_to_native` first for another sequence. Classic single-frame series only.

    Raises
    ------
    MissingDependencyError
        highdicom is not installed (``pip install highdicom``).
    """
    hd = _require_highdicom()
    import pydicom
    from pydicom.sr.codedict import codes

    from .dicom import list_dicom_series
    from .io import atomic_write

    out = Path(path)
    if out.exists() and not overwrite:
        raise OutputExistsError("exists already; choose another name or allow overwriting", path=out)
    all_series = list_dicom_series(dicom_folder)
    chosen = [s for s in all_series if series is None or str(series) in (s.uid, str(s.number), s.description)]
    if len(chosen) != 1:
        raise DatasetError(f"choose one DICOM series (series=); found {[s.summary() for s in all_series]}",
                           path=dicom_folder)
    sources = [pydicom.dcmread(str(f)) for f in chosen[0].files]
    for ds in sources:  # type 2 attributes highdicom copies: present (empty) even when a writer left them out
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate",
                        "StudyTime", "AccessionNumber", "ReferringPhysicianName"):
            if keyword not in ds:
                setattr(ds, keyword, "")
    names = dict(label_names or DEFAULT_LABELS)
    lab = np.asarray(labels.array)
    values = sorted(v for v in set(np.unique(lab).tolist()) - {0})
    by_value = {v: k for k, v in names.items()}
    frames = []
    for ds in sources:
        if "ImagePositionPatient" not in ds or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DatasetError("DICOM SEG export supports classic single-frame series only (this one is "
                               "multi-frame); export NIfTI labels instead", path=dicom_folder)
        rows, cols = int(ds.Rows), int(ds.Columns)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        ipp = np.asarray(ds.ImagePositionPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        xyz = ipp + r[..., None] * dr * iop[3:] + c[..., None] * dc * iop[:3]
        idx = np.rint(labels.grid.world_to_index(xyz[..., ::-1].reshape(-1, 3))).astype(int)
        inside = np.all((idx >= 0) & (idx < np.asarray(lab.shape)), axis=1)
        frame = np.zeros(rows * cols, np.uint8)
        frame[inside] = lab[tuple(idx[inside].T)]
        frames.append(frame.reshape(rows, cols))
    pixel = np.stack(frames)
    segment_map = np.zeros(256, np.uint8)
    descriptions = []
    for number, value in enumerate(values, start=1):
        segment_map[value] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=by_value.get(value, f"label {value}"),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Tumor, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL))
    if not descriptions:
        raise DatasetError("the labels are empty: nothing to write as DICOM SEG")
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=segment_map[pixel], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-mriseg",
        manufacturer_model_name="napari-mriseg", software_versions=_version(), device_serial_number="0")
    return atomic_write(out, lambda tmp: seg.save_as(str(tmp)), overwrite=overwrite)
