"""Model files: safetensors + config.json round trips; pickles are refused without running."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_mriseg.core.errors import OutputExistsError  # noqa: E402
from napari_mriseg.ml.config import Architecture, ModelConfig  # noqa: E402
from napari_mriseg.ml.errors import ModelFileError, ModelVersionError  # noqa: E402
from napari_mriseg.ml.model_file import load_model, read_config, save_model  # noqa: E402
from napari_mriseg.ml.unet import build_network  # noqa: E402


def _config(**kw) -> ModelConfig:
    base = dict(sequences=("t1", "flair"), architecture=Architecture(depth=3, base_features=4),
                target_spacing=(2.0, 1.5, 1.5), patch_size=(16, 16, 16))
    base.update(kw)
    return ModelConfig(**base)


class _Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("arch", [Architecture(depth=3, base_features=4),
                                  Architecture(dim=2, depth=2, base_features=4, residual=True,
                                               deep_supervision=True, norm="batch")])
@pytest.mark.parametrize("archive", [False, True])
def test_round_trip_same_outputs(tmp_path, arch, archive):
    kw = dict(architecture=arch)
    if arch.dim == 2:
        kw.update(patch_size=(16, 16), axis_2d=1)
    cfg = _config(**kw)
    torch.manual_seed(0)
    net = build_network(cfg).eval()
    path = save_model(cfg.with_training(epochs=3), net, tmp_path / "m.mriseg", archive=archive)
    assert path.is_dir() != archive
    model = load_model(path)
    assert model.config.sequences == ("t1", "flair")
    assert model.config.training["epochs"] == 3
    assert model.config.software_version
    x = torch.randn(2, 2, *([16] * arch.dim))
    with torch.no_grad():
        np.testing.assert_array_equal(net(x).numpy(), model.network(x).numpy())
    assert read_config(path).to_dict() == model.config.to_dict()


def test_config_json_round_trip_exact():
    cfg = _config(labels={"oedema": 2, "necrotic": 1}, training={"dice": {"oedema": 0.9}})
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()
    assert list(again.labels) == ["necrotic", "oedema"]  # sorted by value = class order


def test_no_overwrite_without_consent(tmp_path):
    cfg = _config()
    net = build_network(cfg)
    p = save_model(cfg, net, tmp_path / "m.mriseg")
    with pytest.raises(OutputExistsError):
        save_model(cfg, net, p)
    save_model(cfg, net, p, overwrite=True)
    load_model(p)


def test_half_precision_is_smaller(tmp_path):
    cfg = _config()
    net = build_network(cfg)
    a = save_model(cfg, net, tmp_path / "a.mriseg")
    b = save_model(cfg, net, tmp_path / "b.mriseg", half=True)
    assert (b / "model.safetensors").stat().st_size < 0.6 * (a / "model.safetensors").stat().st_size
    assert load_model(b).network.encoder[0].conv1.weight.dtype == torch.float32


def _malicious_files(tmp_path: Path, target: Path) -> list[Path]:
    payload = pickle.dumps({"state_dict": _Payload(target)})
    out = []
    raw = tmp_path / "evil.pt"
    raw.write_bytes(payload)
    out.append(raw)
    ts = tmp_path / "evil_torchsave.pth"
    torch.save({"x": _Payload(target)}, ts)
    out.append(ts)
    folder = tmp_path / "evil.mriseg"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(payload)  # a pickle under the right name
    (folder / "config.json").write_text(json.dumps(_config().to_dict()))
    out.append(folder)
    z = tmp_path / "evil_zip.mriseg"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("config.json", json.dumps(_config().to_dict()))
        zf.writestr("model.safetensors", payload)
    out.append(z)
    only_pt = tmp_path / "only_pt.mriseg"
    only_pt.mkdir()
    (only_pt / "model.pt").write_bytes(payload)
    out.append(only_pt)
    return out


def test_malicious_pickle_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned"
    # the payload is real: unpickling it does create the file
    pickle.loads(pickle.dumps(_Payload(tmp_path / "control")))
    assert (tmp_path / "control").exists()
    for path in _malicious_files(tmp_path, target):
        with pytest.raises(ModelFileError, match="pickle|safetensors"):
            load_model(path)
        assert not target.exists(), f"loading {path.name} ran the payload"


def test_config_weights_mismatch_is_clear(tmp_path):
    cfg = _config()
    p = save_model(cfg, build_network(cfg), tmp_path / "m.mriseg")
    other = _config(architecture=Architecture(depth=3, base_features=8))
    (p / "config.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(ModelFileError, match="does not match model.safetensors.*shape"):
        load_model(p)
    three_seq = _config(sequences=("t1", "t2", "flair"))
    (p / "config.json").write_text(json.dumps(three_seq.to_dict()))
    with pytest.raises(ModelFileError, match="3 channels"):
        load_model(p)


def test_newer_format_refused(tmp_path):
    cfg = _config()
    p = save_model(cfg, build_network(cfg), tmp_path / "m.mriseg")
    data = json.loads((p / "config.json").read_text())
    data["format_version"] = 99
    (p / "config.json").write_text(json.dumps(data))
    with pytest.raises(ModelVersionError, match="newer"):
        load_model(p)


@pytest.mark.parametrize("bad", [dict(patch_size=(18, 16, 16)), dict(patch_size=(16, 16)),
                                 dict(labels={"a": 0}), dict(sequences=()),
                                 dict(architecture=Architecture(dim=2, depth=2), patch_size=(16, 16)),
                                 dict(normalisation=("zscore",))])
def test_invalid_configs(bad):
    with pytest.raises(ModelFileError):
        _config(**bad)


def test_missing_files_and_garbage(tmp_path):
    (tmp_path / "empty.mriseg").mkdir()
    with pytest.raises(ModelFileError, match="needs model.safetensors"):
        load_model(tmp_path / "empty.mriseg")
    g = tmp_path / "g.mriseg"
    g.mkdir()
    (g / "config.json").write_text(json.dumps(_config().to_dict()))
    (g / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        load_model(g)
    with pytest.raises(ModelFileError, match="no such"):
        load_model(tmp_path / "nope.mriseg")
