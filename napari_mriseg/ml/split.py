"""Subject-level train/validation splits: cases of one subject never land on both sides."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.dataset import DatasetError

#: ADNI-style subject IDs: ``027_S_0307-I34159-...`` -> ``027_S_0307``; other names are their own subject.
DEFAULT_SUBJECT_PATTERN = r"^(\d{3}_S_\d{4})"


def subject_of(case_id: str, pattern: str = DEFAULT_SUBJECT_PATTERN) -> str:
    """The subject ID of ``case_id``: the first group (or named group ``subject``) of ``pattern``
    matched at the start, or the whole case ID when the pattern does not match."""
    m = re.search(pattern, case_id)
    if m is None:
        return case_id
    if "subject" in m.groupdict():
        return m.group("subject")
    return m.group(1) if m.groups() else m.group(0)


def make_split(cases: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0,
               pattern: str = DEFAULT_SUBJECT_PATTERN) -> dict[str, list[str]]:
    """Split ``cases`` by subject (seeded); at least one subject each side when there are two or more."""
    subjects: dict[str, list[str]] = {}
    for c in sorted(cases):
        subjects.setdefault(subject_of(c, pattern), []).append(c)
    names = sorted(subjects)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = 0 if len(names) < 2 else min(len(names) - 1, max(1, round(val_fraction * len(names))))
    val_subjects = {names[i] for i in order[:n_val]}
    split = {"train": [], "val": []}
    for s in names:
        split["val" if s in val_subjects else "train"].extend(subjects[s])
    return split


def check_split(split: dict[str, list[str]], cases: Sequence[str], pattern: str = DEFAULT_SUBJECT_PATTERN,
                *, path: Path | None = None) -> dict[str, list[str]]:
    """Validate a split: known cases only, no case twice, no subject on both sides."""
    if not isinstance(split, dict) or set(split) - {"train", "val"} or "train" not in split:
        raise DatasetError('a split must be {"train": [...], "val": [...]}', path=path)
    train, val = list(split["train"]), list(split.get("val", []))
    unknown = sorted(set(train + val) - set(cases))
    if unknown:
        raise DatasetError(f"split names cases not in the dataset: {unknown[:5]}", path=path)
    both = sorted(set(train) & set(val))
    if both:
        raise DatasetError(f"cases in both training and validation: {both[:5]}", path=path)
    shared = sorted({subject_of(c, pattern) for c in train} & {subject_of(c, pattern) for c in val})
    if shared:
        raise DatasetError(f"subjects in both training and validation: {shared[:5]} (pattern {pattern!r})",
                           path=path)
    if not train:
        raise DatasetError("the split has no training case", path=path)
    return {"train": train, "val": val}


def read_split(path: str | Path, cases: Sequence[str], pattern: str = DEFAULT_SUBJECT_PATTERN) -> dict[str, list[str]]:
    """Read and validate (`check_split`) a JSON split file ``{"train": [...], "val": [...]}``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read the split file ({exc})", path=p) from exc
    return check_split(data, cases, pattern, path=p)
