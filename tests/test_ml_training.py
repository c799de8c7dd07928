"""Training: loss, augmentation, determinism, model files, resume and fine-tune (tiny settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_mriseg.core.dataset import add_training_case  # noqa: E402
from napari_mriseg.core.volume import Volume  # noqa: E402
from napari_mriseg.ml.augment import AugmentConfig, augment  # noqa: E402
from napari_mriseg.ml.model_file import load_model, load_training_state  # noqa: E402
from napari_mriseg.ml.training import TrainConfig, dice_ce_loss, train  # noqa: E402

TINY = TrainConfig(dim=3, patch_size=(8, 16, 16), depth=2, base_features=4, epochs=2, iterations_per_epoch=2,
                   batch_size=2, val_fraction=0.34, device="cpu", seed=3)


def _dataset(root, n=3, shape=(12, 20, 20)):
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for i in range(n):
        c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        r = np.sqrt(((zz - c[0]) * 2) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        lab = np.where(r < 3, 3, np.where(r < 5, 2, 0)).astype(np.uint8)
        head = np.sqrt(((zz - 6) / 6) ** 2 + ((yy - 10) / 9) ** 2 + ((xx - 10) / 9) ** 2) < 1
        t1 = np.where(head, 300.0, 0.0) + rng.normal(0, 5, shape) - 100 * (lab == 3)
        flair = np.where(head, 200.0, 0.0) + 400 * (lab > 0) + rng.normal(0, 5, shape)
        geo = dict(spacing=(2.0, 1.0, 1.0), origin=(0.0, 10.0, -4.0))
        add_training_case(root, f"{i:03d}_S_{i:04d}-I{i}", [Volume(t1.astype(np.float32), **geo, name="t1"),
                                                            Volume(flair.astype(np.float32), **geo, name="flair")],
                          Volume(lab, **geo, kind="label"))
    return root


def test_loss_is_low_for_right_and_high_for_wrong_logits():
    y = torch.randint(0, 3, (2, 6, 6, 6))
    right = torch.nn.functional.one_hot(y, 3).movedim(-1, 1).float() * 20
    wrong = torch.nn.functional.one_hot((y + 1) % 3, 3).movedim(-1, 1).float() * 20
    assert float(dice_ce_loss(right, y)) < 0.01
    assert float(dice_ce_loss(wrong, y)) > 2


def test_ignored_voxels_count_in_neither_loss_term():
    from napari_mriseg.ml.training import IGNORE_INDEX

    y = torch.randint(0, 3, (2, 6, 6, 6))
    right = torch.nn.functional.one_hot(y, 3).movedim(-1, 1).float() * 20
    hidden = y.clone()
    hidden[:, :3] = IGNORE_INDEX
    wrong_there = right.clone()
    wrong_there[:, :, :3] = torch.roll(right[:, :, :3], 1, dims=1)  # wrong only where ignored
    assert float(dice_ce_loss(wrong_there, y)) > 1
    assert float(dice_ce_loss(wrong_there, hidden)) < 0.01
    assert torch.isfinite(dice_ce_loss(right, torch.full_like(y, IGNORE_INDEX)))


def test_a_dataset_with_unreviewed_ignore_voxels_trains_and_fine_tunes(tmp_path):
    import nibabel as nib

    from napari_mriseg.core.dataset import read_dataset

    ds = _dataset(tmp_path / "ds")
    first = train(ds, tmp_path / "m.mriseg", TINY)
    meta = json.loads((ds / "dataset.json").read_text())
    meta["labels"]["ignore"] = 4
    (ds / "dataset.json").write_text(json.dumps(meta))
    f = ds / "labelsTr" / "000_S_0000-I0.nii.gz"
    img = nib.load(f)
    lab = np.asarray(img.dataobj).copy()
    lab[:3] = 4  # three unreviewed slices
    nib.save(nib.Nifti1Image(lab, img.affine, img.header), f)
    assert read_dataset(ds).class_labels == {"necrotic": 1, "oedema": 2, "enhancing": 3}
    scratch = train(ds, tmp_path / "s.mriseg", TINY)
    assert load_model(scratch.best).config.labels == {"necrotic": 1, "oedema": 2, "enhancing": 3}
    tuned = train(ds, tmp_path / "t.mriseg", TINY, init=first.best)
    assert load_model(tuned.best).config.out_channels == 4


def test_augmentation_moves_image_and_labels_together():
    gen = torch.Generator().manual_seed(0)
    y = torch.zeros(4, 16, 16, 16, dtype=torch.long)
    y[:, 3:9, 2:12, 5:14] = 1
    y[:, 4:6, 4:6, 7:9] = 2
    x = y[:, None].float().repeat(1, 2, 1, 1, 1)
    spatial_only = AugmentConfig(p_flip=1, p_rot90=1, p_affine=1, p_elastic=1, p_gamma=0, p_noise=0, p_bias=0)
    xa, ya = augment(x, y, gen, spatial_only)
    assert not torch.equal(ya, y)  # something happened
    agree = (xa[:, 0].round().long() == ya).float().mean()
    assert agree > 0.97  # bilinear image vs nearest labels differ only at edges
    exact = AugmentConfig(p_flip=1, p_rot90=1, p_affine=0, p_elastic=0, p_gamma=0, p_noise=0, p_bias=0)
    xb, yb = augment(x, y, torch.Generator().manual_seed(1), exact)
    assert torch.equal(xb[:, 1].long(), yb)
    intensity = AugmentConfig(p_flip=0, p_rot90=0, p_affine=0, p_elastic=0, p_gamma=1, p_noise=1, p_bias=1)
    xc, yc = augment(x, y, torch.Generator().manual_seed(2), intensity)
    assert torch.equal(yc, y) and not torch.equal(xc, x)
    assert torch.equal(x[:, 0].long(), y)  # inputs untouched


def test_train_writes_best_and_last_deterministically(tmp_path):
    ds = _dataset(tmp_path / "ds")
    seen = []
    r1 = train(ds, tmp_path / "a.mriseg", TINY, progress=seen.append)
    assert r1.best.is_dir() and r1.last.name == "a_last.mriseg" and r1.last.is_dir()
    model = load_model(r1.best)
    tr = model.config.training
    assert model.config.sequences == ("t1", "flair")
    assert model.config.labels == {"necrotic": 1, "oedema": 2, "enhancing": 3}
    assert model.config.target_spacing == (2.0, 1.0, 1.0)
    assert sorted(tr["split"]["train"] + tr["split"]["val"]) == sorted(f"{i:03d}_S_{i:04d}-I{i}" for i in range(3))
    assert len(tr["split"]["val"]) == 1 and "val" in tr["history"][-1]
    assert set(tr["history"][-1]["val"]) >= {"necrotic", "oedema", "enhancing", "whole_tumour"}
    assert any("val" in s for s in seen) and seen[0]["iteration"] == 1
    assert load_training_state(r1.last)  # optimizer moments for resuming
    r2 = train(ds, tmp_path / "b.mriseg", TINY)
    w1 = (r1.last / "model.safetensors").read_bytes()
    assert w1 == (r2.last / "model.safetensors").read_bytes()  # same seed, same weights
    r3 = train(ds, tmp_path / "c.mriseg", TrainConfig(**{**TINY.__dict__, "seed": 4}))
    assert w1 != (r3.last / "model.safetensors").read_bytes()


def test_resume_and_finetune_reuse_the_split(tmp_path):
    ds = _dataset(tmp_path / "ds")
    first = train(ds, tmp_path / "m.mriseg", TINY)
    longer = TrainConfig(**{**TINY.__dict__, "epochs": 3, "seed": 99})
    resumed = train(ds, tmp_path / "m.mriseg", longer, resume=first.last)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    assert resumed.split == first.split  # a new seed would split otherwise
    tuned = train(ds, tmp_path / "t.mriseg", longer, init=first.best)
    assert tuned.split == first.split
    assert [h["epoch"] for h in tuned.history] == [0, 1, 2]
    split_file = tmp_path / "split.json"
    cases = first.split["train"] + first.split["val"]
    split_file.write_text(json.dumps({"train": cases[1:], "val": cases[:1]}))
    forced = train(ds, tmp_path / "f.mriseg", TINY, split_file=split_file)
    assert forced.split["val"] == cases[:1]


def test_2d_training(tmp_path):
    ds = _dataset(tmp_path / "ds")
    cfg = TrainConfig(**{**TINY.__dict__, "dim": 2, "patch_size": (16, 16), "axis_2d": 0, "deep_supervision": True,
                         "residual": True, "epochs": 1})
    res = train(ds, tmp_path / "m2.mriseg", cfg)
    m = load_model(res.best)
    assert m.config.architecture.dim == 2 and m.config.axis_2d == 0
