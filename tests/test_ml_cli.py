"""`mriseg predict`, `train` and `evaluate` end to end on tiny files."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_mriseg.cli import main  # noqa: E402
from napari_mriseg.cli.ml import add_commands  # noqa: E402
from napari_mriseg.core.io import read_volume, write_volume  # noqa: E402
from napari_mriseg.core.volume import Volume  # noqa: E402
from napari_mriseg.ml.config import Architecture, ModelConfig  # noqa: E402
from napari_mriseg.ml.model_file import save_model  # noqa: E402
from napari_mriseg.ml.unet import build_network  # noqa: E402

c, s = np.cos(0.2), np.sin(0.2)
GEO = dict(spacing=(2.5, 1.1, 0.9), origin=(-3.0, 20.0, 7.5), direction=np.array([[1, 0, 0], [0, c, -s], [0, s, c]]))


def _case_folder(root, names=("t1", "flair"), shape=(10, 18, 20)):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in names:
        arr = (rng.normal(300, 30, shape) * (np.indices(shape)[0] > 1)).astype(np.float32)
        write_volume(Volume(arr, **GEO, name=n), root / f"{n}.nii.gz")
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    cfg = ModelConfig(sequences=("t1", "flair"), architecture=Architecture(depth=2, base_features=4),
                      target_spacing=(2.0, 1.0, 1.0), patch_size=(8, 16, 16))
    torch.manual_seed(0)
    return save_model(cfg, build_network(cfg), tmp_path_factory.mktemp("m") / "tiny.mriseg")


def test_subcommands_have_examples():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_commands(sub)
    for name in ("predict", "train", "evaluate"):
        p = sub.choices[name]
        assert "example:" in p.description and "mriseg " + name in p.description
        assert callable(p.get_default("func"))


def test_predict_writes_labels_on_the_image_grid(tmp_path, model_path):
    import nibabel as nib

    case = _case_folder(tmp_path / "case01")
    out = tmp_path / "new" / "folder" / "labels.nii.gz"  # predict creates the folder
    assert main(["predict", str(case), "--model", str(model_path), "--out", str(out), "--device", "cpu"]) == 0
    lab = read_volume(out, kind="label")
    assert lab.array.dtype == np.uint8
    assert lab.grid.mismatch(read_volume(case / "t1.nii.gz").grid) is None
    np.testing.assert_allclose(nib.load(out).affine, nib.load(case / "t1.nii.gz").affine, atol=1e-5)
    # refuses to overwrite, then overwrites when told
    assert main(["predict", str(case), "--model", str(model_path), "--out", str(out)]) == 1
    assert main(["predict", str(case), "--model", str(model_path), "--out", str(out), "--overwrite",
                 "--tta", "--uncertainty", str(tmp_path / "unc.nii.gz")]) == 0
    assert (tmp_path / "unc.nii.gz").is_file()


def test_predict_folder_of_cases_and_errors(tmp_path, model_path, capsys):
    _case_folder(tmp_path / "cases" / "a")
    _case_folder(tmp_path / "cases" / "b")
    assert main(["predict", str(tmp_path / "cases"), "--model", str(model_path), "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    lonely = _case_folder(tmp_path / "t1only", names=("t1",))
    out = tmp_path / "never.nii.gz"
    capsys.readouterr()
    assert main(["predict", str(lonely), "--model", str(model_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "flair" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    pickle_model = tmp_path / "evil.pt"
    pickle_model.write_bytes(b"\x80\x04K\x01.")
    assert main(["predict", str(lonely), "--model", str(pickle_model), "--out", str(out)]) == 1
    assert "pickle" in capsys.readouterr().err and not out.exists()


def test_evaluate_cli(tmp_path, capsys):
    for d in ("p", "t"):
        (tmp_path / d).mkdir()
    lab = np.zeros((6, 8, 8), np.uint8)
    lab[1:5, 2:6, 2:6] = 2
    write_volume(Volume(lab, **GEO, kind="label"), tmp_path / "t" / "x.nii.gz")
    write_volume(Volume(lab, **GEO, kind="label"), tmp_path / "p" / "x.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--out",
                 str(tmp_path / "m")]) == 0
    assert "whole_tumour" in capsys.readouterr().out
    assert (tmp_path / "m" / "x.csv").is_file()
    assert main(["evaluate", "--pred", str(tmp_path / "t"), "--truth", str(tmp_path / "nope")]) == 1


def test_train_cli(tmp_path, capsys):
    ds = _training_helpers()._dataset(tmp_path / "ds")
    out = tmp_path / "cli.mriseg"
    args = ["train", str(ds), "--out", str(out), "--patch", "8", "16", "16", "--depth", "2", "--base-features", "4",
            "--epochs", "1", "--iterations", "1", "--device", "cpu"]
    assert main(args) == 0
    assert out.is_dir() and (tmp_path / "cli_last.mriseg").is_dir()
    assert '"best"' in capsys.readouterr().out
    assert main(args) == 1  # the model exists: no silent overwrite
    assert main([*args[:2], "--out", str(tmp_path / "x.mriseg"), "--patch", "7", "16", "16"]) == 1


def test_ml_ring_imports_without_torch_where_it_can():
    import subprocess
    import sys

    code = ("import sys, napari_mriseg.ml, napari_mriseg.ml.metrics, napari_mriseg.ml.config, "
            "napari_mriseg.cli.ml, napari_mriseg.core.dataset; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'napari', 'qtpy', 'magicgui')]; "
            "assert not bad, bad")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": ""})
    assert proc.returncode == 0, proc.stderr


def _training_helpers():
    """tests/test_ml_training.py as a module (its tiny dataset and settings)."""
    from . import test_ml_training

    return test_ml_training
