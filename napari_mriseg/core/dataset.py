"""Training datasets in the nnU-Net v2 raw layout.

::

    DATASET/
      dataset.json            {"channel_names": {"0": "t1", ...}, "labels": {"background": 0, ...},
                               "numTraining": N, "file_ending": ".nii.gz"}
      imagesTr/{case}_{XXXX}.nii.gz   one file per channel, XXXX = channel index (0000, 0001...)
      labelsTr/{case}.nii.gz

Every file is written atomically (temporary name, then rename), so an interrupted export never
leaves a half-written file; ``dataset.json`` is rewritten last.
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
from .io import read_volume, write_volume
from .volume import Volume

FILE_ENDING = ".nii.gz"
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
    lab_dir = root / "labelsTr"
    cases = sorted(p.name[: -len(ending)] for p in lab_dir.glob(f"*{ending}")) if lab_dir.is_dir() else []
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
    if num_training is None:
        lab = root / "labelsTr"
        num_training = len(list(lab.glob(f"*{file_ending}"))) if lab.is_dir() else 0
    labels = {"background": 0, **{k: int(v) for k, v in labels.items() if k != "background"}}
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
    match the existing ones. Returns the written paths (images first, labels last).
    """
    root = Path(root)
    check_case_id(case_id)
    names = tuple(channel_names or [v.name for v in images])
    if len(names) != len(images):
        raise DatasetError(f"{len(images)} images but {len(names)} channel names")
    if (root / "dataset.json").is_file():
        meta = json.loads((root / "dataset.json").read_text())
        existing = tuple(meta["channel_names"][k] for k in sorted(meta["channel_names"], key=int))
        if existing != names:
            raise DatasetError(f"channels {list(names)} differ from the dataset's {list(existing)}", path=root)
        label_names = label_names or {k: v for k, v in meta["labels"].items() if k != "background"}
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
    written = [write_volume(img, t, overwrite=overwrite) for img, t in zip(images, targets)]
    written.append(write_volume(labels, lab_path, overwrite=overwrite))
    write_dataset_json(root, names, label_names or {"necrotic": 1, "oedema": 2, "enhancing": 3})
    return written
