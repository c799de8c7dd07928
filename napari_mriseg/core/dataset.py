"""Training datasets in the nnU-Net v2 raw layout.

::

    DATASET/
      dataset.json            {"channel_names": {"0": "t1", ...}, "labels": {"background": 0, ...},
                               "numTraining": N, "file_ending": ".nii.gz"}
      imagesTr/{case}_{XXXX}.nii.gz   one file per channel, XXXX = channel index (0000, 0001...)
      labelsTr/{case}.nii.gz

Every file is written atomically (temporary name, then rename), so an interrupted export never
leaves a half-written file; ``dataset.json`` is rewritten last. NIfTI files are written with
`training_nifti`: geometry only, every free-text header field (``descrip``, ``aux_file``,
``intent_name``, ``db_name``) empty and no header extensions, so no patient identifier can travel
in them. nnU-Net's ``ignore`` label, when present, is the highest label value
(`check_labels`). `napari_mriseg.core.export.export_case` adds a whole case (images, labels,
provenance, dataset.json) all-or-nothing on top of these helpers.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GeometryMismatchError, MriSegError, OutputExistsError
from .io import read_volume
from .volume import Volume

FILE_ENDING = ".nii.gz"
#: File endings `training_nifti` can write (nnU-Net's ``file_ending``).
WRITABLE_ENDINGS = (".nii.gz", ".nii")
#: Name of nnU-Net v2's ignore label (voxels excluded from the loss); its value must be the highest.
IGNORE = "ignore"
#: Label names used when neither a model nor an existing dataset says otherwise (BraTS values).
DEFAULT_LABELS: dict[str, int] = {"necrotic": 1, "oedema": 2, "enhancing": 3}
#: NIfTI-1 header fields that hold free text; `training_nifti` leaves them empty.
NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class DatasetError(MriSegError, ValueError):
    """A dataset folder is missing files, or its dataset.json is inconsistent."""


@dataclass(frozen=True)
class DatasetInfo:
    """The content of a dataset's ``dataset.json`` plus the cases found on disk.

    Attributes
    ----------
    root : Path
    channel_names : tuple of str
        Sequence name of each channel, in channel order.
    labels : dict of str to int
        Label name -> value, background included.
    cases : tuple of str
        Case IDs with labels in ``labelsTr`` (sorted).
    file_ending : str
    """

    root: Path
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    cases: tuple[str, ...] = ()
    file_ending: str = FILE_ENDING
    extra: dict = field(default_factory=dict)

    def image_paths(self, case_id: str) -> list[Path]:
        """``imagesTr/{case}_{XXXX}{ending}`` of each channel, in channel order."""
        return [self.root / "imagesTr" / f"{case_id}_{c:04d}{self.file_ending}" for c in range(len(self.channel_names))]

    def label_path(self, case_id: str) -> Path:
        """``labelsTr/{case}{ending}``."""
        return self.root / "labelsTr" / f"{case_id}{self.file_ending}"

    @property
    def ignore_value(self) -> int | None:
        """Value of nnU-Net's ``ignore`` label (voxels left out of training), or None."""
        return self.labels.get(IGNORE)

    @property
    def class_labels(self) -> dict[str, int]:
        """Label name -> value without background and ``ignore``: the classes a model learns."""
        return {k: v for k, v in self.labels.items() if v != 0 and k != IGNORE}


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def training_nifti(volume: Volume):
    """A NIfTI-1 image of ``volume`` for a training dataset: geometry and voxels only.

    qform = sform (code 1) as `napari_mriseg.core.convert.to_nifti` writes them; the free-text
    fields `NIFTI_TEXT_FIELDS` are empty and there are no header extensions, so the file cannot
    carry a patient identifier.
    """
    from . import convert

    image = convert.to_nifti(volume)
    header = image.header
    for name in NIFTI_TEXT_FIELDS:
        if name in header:
            header[name] = b""
    header.extensions.clear()
    return image


def write_training_volume(volume: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``volume`` as `training_nifti` to a ``.nii.gz``/``.nii`` file, whole or not at all.

    Raises `OutputExistsError` if ``path`` exists and not ``overwrite``, and
    `napari_mriseg.core.io.ImageWriteError` if the folder is missing, read-only or full.
    """
    from .io import atomic_write

    p = Path(path)
    if not p.name.endswith(WRITABLE_ENDINGS):
        raise DatasetError(f"training files are written as {' or '.join(WRITABLE_ENDINGS)}", path=p)

    def write(tmp: Path) -> None:
        import nibabel as nib

        nib.save(training_nifti(volume), str(tmp))

    return atomic_write(p, write, overwrite=overwrite)


def check_labels(labels: dict[str, int], *, path: str | Path | None = None) -> dict[str, int]:
    """Return ``labels`` (name -> value) with background 0 first, checked against nnU-Net's rules.

    Values must be distinct non-negative integers; an ``ignore`` label must have the highest value.
    Raises `DatasetError` naming the offending label.
    """
    out = {"background": 0}
    for k, v in labels.items():
        if k == "background":
            if int(v) != 0:
                raise DatasetError(f"background must be 0; got {v}", path=path)
            continue
        if int(v) <= 0:
            raise DatasetError(f"label {k!r} has value {v}; label values must be positive (0 is background)",
                               path=path)
        out[str(k)] = int(v)
    values = list(out.values())
    if len(set(values)) != len(values):
        raise DatasetError(f"two labels share a value: {out}", path=path)
    if IGNORE in out and out[IGNORE] != max(values):
        raise DatasetError(f"the {IGNORE!r} label must have the highest value (nnU-Net's rule); "
                           f"got {out}", path=path)
    return out


def read_dataset_meta(root: str | Path) -> dict | None:
    """The parsed ``dataset.json`` of ``root`` (None if there is none yet).

    Raises `DatasetError` if it exists but is not valid JSON with ``channel_names`` and ``labels``.
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
        channels = meta["channel_names"]
        meta["labels"] = {str(k): int(v) for k, v in meta["labels"].items()}
        [channels[k] for k in sorted(channels, key=int)]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"dataset.json is not valid ({type(exc).__name__}: {exc}); it needs "
                           "channel_names, labels and file_ending", path=path) from exc
    return meta


def channel_names_of(meta: dict) -> tuple[str, ...]:
    """The channel names of a parsed ``dataset.json``, in channel order."""
    channels = meta["channel_names"]
    return tuple(str(channels[k]) for k in sorted(channels, key=int))


def case_ids(root: str | Path, file_ending: str = FILE_ENDING) -> list[str]:
    """IDs of the cases with a label file in ``root/labelsTr`` (sorted; [] if none)."""
    lab_dir = Path(root) / "labelsTr"
    if not lab_dir.is_dir():
        return []
    return sorted(p.name[: -len(file_ending)] for p in lab_dir.iterdir()
                  if p.name.endswith(file_ending) and not p.name.startswith("."))


def check_case_id(case_id: str) -> str:
    """Return ``case_id`` if it is a safe file-name stem, else raise `DatasetError`."""
    if not _CASE_ID.match(case_id):
        raise DatasetError(f"case ID {case_id!r} must be letters, digits, '_', '-' and '.', starting with a "
                           "letter or digit")
    return case_id


def read_dataset(root: str | Path) -> DatasetInfo:
    """Read ``dataset.json`` and list the labelled cases, checking every channel file exists."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError("no dataset.json: not an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)",
                           path=root)
    try:
        meta = json.loads(meta_path.read_text())
        channels = meta["channel_names"]
        names = tuple(str(channels[k]) for k in sorted(channels, key=int))
        labels = {str(k): int(v) for k, v in meta["labels"].items()}
        ending = str(meta.get("file_ending", FILE_ENDING))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"dataset.json is not valid ({type(exc).__name__}: {exc}); it needs "
                           "channel_names, labels and file_ending", path=meta_path) from exc
    labels = {**check_labels(labels, path=meta_path), **labels}  # checked, in the file's order
    cases = case_ids(root, ending)
    if not cases:
        raise DatasetError(f"labelsTr holds no {ending} label files", path=root)
    info = DatasetInfo(root, names, labels, tuple(cases), ending,
                       {k: v for k, v in meta.items() if k not in ("channel_names", "labels", "file_ending")})
    for case in cases:
        for p in info.image_paths(case):
            if not p.is_file():
                raise DatasetError(f"case {case!r} has labels but no image for channel {p.name}", path=p)
    n = meta.get("numTraining")
    if n is not None and int(n) != len(cases):
        raise DatasetError(f"dataset.json says numTraining={n} but labelsTr holds {len(cases)} cases",
                           path=meta_path)
    return info


def read_training_case(info: DatasetInfo, case_id: str) -> tuple[list[Volume], Volume]:
    """The channel volumes (in channel order) and the label map of one case, on one grid."""
    images = [read_volume(p, name=n) for p, n in zip(info.image_paths(case_id), info.channel_names)]
    labels = read_volume(info.label_path(case_id), kind="label", name="labels")
    for img in images:
        try:
            labels.grid.check_same(img.grid, this_name="labels", other_name=f"channel {img.name!r}")
        except GeometryMismatchError as exc:
            raise DatasetError(f"case {case_id!r}: {exc.message}", path=info.root) from None
    return images, labels


def write_dataset_json(root: str | Path, channel_names: Sequence[str], labels: dict[str, int], *,
                       num_training: int | None = None, file_ending: str = FILE_ENDING, **extra) -> Path:
    """Write (atomically) ``dataset.json``; ``num_training`` defaults to the label files present."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels = check_labels(labels, path=root / "dataset.json")
    if num_training is None:
        lab = root / "labelsTr"
        num_training = len(list(lab.glob(f"*{file_ending}"))) if lab.is_dir() else 0
    meta = {"channel_names": {str(i): n for i, n in enumerate(channel_names)}, "labels": labels,
            "numTraining": int(num_training), "file_ending": file_ending, **extra}
    path = root / "dataset.json"
    _atomic_text(path, json.dumps(meta, indent=2) + "\n")
    return path


def add_training_case(root: str | Path, case_id: str, images: Sequence[Volume], labels: Volume, *,
                      channel_names: Sequence[str] | None = None, label_names: dict[str, int] | None = None,
                      overwrite: bool = False) -> list[Path]:
    """Add one case (channel volumes in order + labels, all on one grid) to a dataset.

    Creates the dataset (and its ``dataset.json``) if needed; otherwise the channel names must
    match the existing ones. Returns the written paths (images first, labels last). Each file is
    atomic but the case as a whole is not, and no provenance is written: for a clinician's case
    use `napari_mriseg.core.export.export_case`.
    """
    root = Path(root)
    check_case_id(case_id)
    names = tuple(channel_names or [v.name for v in images])
    if len(names) != len(images):
        raise DatasetError(f"{len(images)} images but {len(names)} channel names")
    meta = read_dataset_meta(root)
    extra: dict = {}
    if meta is not None:
        existing = channel_names_of(meta)
        if existing != names:
            raise DatasetError(f"channels {list(names)} differ from the dataset's {list(existing)}", path=root)
        label_names = label_names or {k: v for k, v in meta["labels"].items() if k != "background"}
        extra = {k: v for k, v in meta.items()
                 if k not in ("channel_names", "labels", "numTraining", "file_ending")}
    for img in images:
        labels.grid.check_same(img.grid, this_name="labels", other_name=f"channel {img.name!r}")
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    targets = [root / "imagesTr" / f"{case_id}_{c:04d}{FILE_ENDING}" for c in range(len(images))]
    lab_path = root / "labelsTr" / f"{case_id}{FILE_ENDING}"
    if not overwrite:
        for t in [*targets, lab_path]:
            if t.exists():
                raise OutputExistsError("exists already in the dataset; allow overwriting to replace it", path=t)
    written = [write_training_volume(img, t, overwrite=overwrite) for img, t in zip(images, targets)]
    written.append(write_training_volume(labels, lab_path, overwrite=overwrite))
    write_dataset_json(root, names, label_names or DEFAULT_LABELS, **extra)
    return written


# --------------------------------------------------------------------------- anonymous case IDs
def propose_case_id(images: Sequence[Volume], *, prefix: str = "case") -> str:
    """A case ID derived from the voxels of ``images``: ``{prefix}_{10 hex digits of SHA-256}``.

    Never taken from a file, folder or DICOM PatientName (they often carry the patient's name);
    the same images always give the same ID, so exporting a case twice finds the first export
    instead of adding a duplicate.
    """
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for vol in images:
        arr = np.ascontiguousarray(vol.array)
        digest.update(f"{arr.dtype.str}{arr.shape}{vol.spacing}{vol.origin}".encode())
        digest.update(arr.tobytes())
    return check_case_id(f"{prefix}_{digest.hexdigest()[:10]}")


def dicom_patient_names(paths: Sequence[str | Path]) -> set[str]:
    """Lower-case parts (3+ letters) of the DICOM PatientName of the DICOM files/folders in
    ``paths`` (one header per folder is read); empty for non-DICOM sources."""
    names: set[str] = set()
    for p in (Path(x) for x in paths):
        candidates = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())[:20] if p.is_dir() else []
        for f in candidates:
            try:
                import pydicom

                ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["PatientName"])
            except Exception:  # not DICOM (or unreadable): nothing to learn from it
                continue
            raw = str(ds.get("PatientName", "") or "")
            names.update(t for t in re.split(r"[^a-z]+", raw.lower()) if len(t) >= 3)
            break
    return names


def check_anonymous_case_id(case_id: str, *, patient_names: set[str] | frozenset[str] = frozenset()) -> str:
    """Return ``case_id`` if it is a safe file-name stem that does not look like a person's name.

    Refused (`DatasetError`, with the hint to use `propose_case_id`'s hash or a counter): IDs with
    no digit (``DoeJohn``, ``smith``: a case ID is a number or a hash), and IDs that contain a part
    of the case's DICOM PatientName (``patient_names``, lower case, see `dicom_patient_names`).
    """
    check_case_id(case_id)
    if not re.search(r"\d", case_id):
        raise DatasetError(f"case ID {case_id!r} has no digit and may be a person's name; use a number or "
                           "a hash (e.g. case_0001, or the proposed ID)")
    low = case_id.lower()
    hits = sorted(n for n in patient_names if n in low)
    if hits:
        raise DatasetError(f"case ID {case_id!r} contains part of the patient's name; use a number or a "
                           "hash (e.g. case_0001, or the proposed ID)")
    return case_id
