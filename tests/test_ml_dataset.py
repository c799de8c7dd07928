"""nnU-Net v2 raw datasets and subject-level splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_mriseg.core.dataset import (
    DatasetError,
    add_training_case,
    read_dataset,
    read_training_case,
    write_dataset_json,
)
from napari_mriseg.core.errors import GeometryMismatchError, OutputExistsError
from napari_mriseg.core.volume import Volume
from napari_mriseg.ml.split import check_split, make_split, read_split, subject_of

GEO = dict(spacing=(2.0, 1.0, 0.5), origin=(10.0, -5.0, 3.0))


def _vols(seed=0, shape=(4, 5, 6)):
    rng = np.random.default_rng(seed)
    imgs = [Volume(rng.normal(size=shape).astype(np.float32), **GEO, name=n) for n in ("t1", "flair")]
    lab = Volume(rng.integers(0, 4, shape).astype(np.uint8), **GEO, kind="label")
    return imgs, lab


def test_write_and_read_back(tmp_path):
    root = tmp_path / "Dataset001_Test"
    for i in range(3):
        imgs, lab = _vols(i)
        written = add_training_case(root, f"case_{i:03d}", imgs, lab)
        assert [p.name for p in written] == [f"case_{i:03d}_0000.nii.gz", f"case_{i:03d}_0001.nii.gz",
                                             f"case_{i:03d}.nii.gz"]
    meta = json.loads((root / "dataset.json").read_text())
    assert meta == {"channel_names": {"0": "t1", "1": "flair"},
                    "labels": {"background": 0, "necrotic": 1, "oedema": 2, "enhancing": 3},
                    "numTraining": 3, "file_ending": ".nii.gz"}
    info = read_dataset(root)
    assert info.cases == ("case_000", "case_001", "case_002")
    assert info.channel_names == ("t1", "flair")
    imgs, lab = read_training_case(info, "case_001")
    ref_imgs, ref_lab = _vols(1)
    np.testing.assert_array_equal(lab.array, ref_lab.array)
    np.testing.assert_allclose(imgs[1].array, ref_imgs[1].array, rtol=1e-6)
    assert lab.grid.mismatch(ref_lab.grid) is None
    assert not [p for p in root.rglob(".*")]  # no temporary files left behind


def test_refusals(tmp_path):
    root = tmp_path / "ds"
    imgs, lab = _vols()
    add_training_case(root, "a", imgs, lab)
    with pytest.raises(OutputExistsError):
        add_training_case(root, "a", imgs, lab)
    with pytest.raises(DatasetError, match="channels"):
        add_training_case(root, "b", imgs[::-1], lab, channel_names=("flair", "t1"))
    with pytest.raises(DatasetError, match="case ID"):
        add_training_case(root, "../evil", imgs, lab)
    moved = Volume(imgs[0].array, spacing=(2.0, 1.0, 0.5), name="t1")
    with pytest.raises(GeometryMismatchError):
        add_training_case(root, "c", [moved, imgs[1]], lab)
    (root / "imagesTr" / "a_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="no image for channel"):
        read_dataset(root)
    write_dataset_json(tmp_path / "x", ["t1"], {"a": 1}, num_training=5)
    (tmp_path / "x" / "labelsTr").mkdir()
    with pytest.raises(DatasetError, match="no .nii.gz label files"):
        read_dataset(tmp_path / "x")
    with pytest.raises(DatasetError, match="dataset.json"):
        read_dataset(tmp_path / "nothing")


def test_subject_ids():
    assert subject_of("027_S_0307-I34159-2006") == "027_S_0307"
    assert subject_of("027_S_0307_m12") == "027_S_0307"
    assert subject_of("BraTS_00012") == "BraTS_00012"
    assert subject_of("pat7_visit2", r"^(pat\d+)") == "pat7"
    assert subject_of("x-sub-12-ses-1", r"sub-(?P<subject>\d+)") == "12"


def test_split_keeps_subjects_together():
    cases = [f"{s:03d}_S_{s:04d}-I{v}" for s in range(10) for v in range(3)] + ["lonely"]
    split = make_split(cases, val_fraction=0.3, seed=1)
    subj = {side: {subject_of(c) for c in split[side]} for side in split}
    assert not subj["train"] & subj["val"]
    assert len(subj["val"]) == 3
    assert sorted(split["train"] + split["val"]) == sorted(cases)
    assert make_split(cases, val_fraction=0.3, seed=1) == split
    assert make_split(cases, val_fraction=0.3, seed=2) != split
    with pytest.raises(DatasetError, match="subjects in both"):
        check_split({"train": [cases[0]], "val": [cases[1]]}, cases)
    with pytest.raises(DatasetError, match="not in the dataset"):
        check_split({"train": ["nope"], "val": []}, cases)


def test_split_file(tmp_path):
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": ["a", "b"], "val": ["c"]}))
    assert read_split(f, ["a", "b", "c"]) == {"train": ["a", "b"], "val": ["c"]}
    f.write_text("{")
    with pytest.raises(DatasetError, match="cannot read"):
        read_split(f, ["a"])
