"""Model files: ``NAME.mriseg`` = ``model.safetensors`` + ``config.json``, as a folder or a zip.

Loading never unpickles. Files are recognised by their first bytes: a pickle (``.pt``, ``.pth``,
``.ckpt``, a renamed pickle) or a ``torch.save`` zip (which holds ``data.pkl``) is refused before
any of its content is interpreted, so a malicious payload never runs. Weights are read with
``safetensors``, which parses a JSON header and raw tensor bytes only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import OutputExistsError
from .config import ModelConfig
from .errors import ModelFileError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .unet import UNet

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINING_STATE = "training_state.safetensors"
MAX_MEMBER_BYTES = 4 * 2**30
_PICKLE_MAGIC = (b"\x80", b"(", b"c", b"]", b"}")
_PICKLE_MESSAGE = (
    "is a pickle checkpoint (torch.save / .pt / .pth); pickles can run code when loaded, so "
    "napari-mriseg refuses them and ran nothing from it. A model must be a NAME.mriseg folder or "
    "zip with model.safetensors and config.json (convert a checkpoint you trust with "
    "`napari_mriseg.ml.model_file.save_model`)"
)


@dataclass
class Model:
    """A network with the config that describes it (in eval mode after loading)."""

    config: ModelConfig
    network: UNet
    path: Path | None = None


def _check_not_pickle(data: bytes, path: Path, member: str = "") -> None:
    where = f"{member} " if member else ""
    if data[:1] in _PICKLE_MAGIC or data[:2] == b"PK":
        raise ModelFileError(f"{where}{_PICKLE_MESSAGE}", path=path)


def _read_members(path: Path) -> tuple[bytes, bytes, bytes | None]:
    """Raw bytes of config.json, model.safetensors and (if any) training_state.safetensors."""
    if path.is_dir():
        cfg, wts = path / CONFIG, path / WEIGHTS
        found = sorted(p.name for p in path.iterdir())
        if not wts.is_file() or not cfg.is_file():
            pickles = [n for n in found if n.endswith((".pt", ".pth", ".ckpt", ".pkl", ".bin"))]
            hint = f" (found {pickles}: pickle checkpoints are refused)" if pickles else ""
            raise ModelFileError(f"a model folder needs {WEIGHTS} and {CONFIG}; found {found}{hint}",
                                 path=path)
        state = path / TRAINING_STATE
        return cfg.read_bytes(), wts.read_bytes(), state.read_bytes() if state.is_file() else None
    if not path.exists():
        raise ModelFileError("no such model file or folder", path=path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not zipfile.is_zipfile(path):
        _check_not_pickle(head, path)
        raise ModelFileError(f"is not a model ({path.name} is neither a NAME.mriseg folder nor a zip)",
                             path=path)
    with zipfile.ZipFile(path) as zf:
        infos = {Path(i.filename).name: i for i in zf.infolist() if not i.is_dir()}
        if any(n.endswith(".pkl") for n in infos) or "data.pkl" in infos:
            raise ModelFileError(_PICKLE_MESSAGE, path=path)
        if WEIGHTS not in infos or CONFIG not in infos:
            raise ModelFileError(f"a model zip needs {WEIGHTS} and {CONFIG}; found {sorted(infos)}", path=path)
        out = []
        for name in (CONFIG, WEIGHTS, TRAINING_STATE):
            info = infos.get(name)
            if info is None:
                out.append(None)
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                raise ModelFileError(f"{name} declares {info.file_size} bytes; refusing", path=path)
            out.append(zf.read(info))
    return out[0], out[1], out[2]  # type: ignore[return-value]


def _load_tensors(data: bytes, path: Path, member: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as st_load

    _check_not_pickle(data, path, member)
    try:
        return st_load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError / ValueError types
        raise ModelFileError(f"{member} is not a valid safetensors file ({exc})", path=path) from exc


def check_weights(config: ModelConfig, network: UNet, tensors: dict[str, torch.Tensor],
                  path: Path | None = None) -> None:
    """Raise `ModelFileError` unless ``tensors`` holds exactly ``network``'s parameters and shapes."""
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (first {extra[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (first {k}: config {expected[k]}, weights {got[k]})")
        arch = config.architecture
        raise ModelFileError(
            f"config.json ({arch.dim}D, depth {arch.depth}, {arch.base_features} base features, "
            f"{config.in_channels} channels, {config.out_channels} classes) does not match "
            f"model.safetensors: " + "; ".join(parts), path=path)


def load_model(path: str | Path, *, device: str = "cpu") -> Model:
    """Read a model folder or zip; never unpickles anything.

    Raises
    ------
    ModelFileError
        Missing files, a pickle checkpoint, invalid safetensors, or weights that do not match
        the config. `ModelVersionError` for a newer format version.
    """
    from .unet import build_network

    p = Path(path)
    cfg_bytes, wts_bytes, _ = _read_members(p)
    try:
        cfg_data = json.loads(cfg_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"config.json is not valid JSON ({exc})", path=p) from exc
    try:
        config = ModelConfig.from_dict(cfg_data)
    except ModelFileError as exc:
        raise type(exc)(exc.message, path=p) from None
    tensors = _load_tensors(wts_bytes, p, WEIGHTS)
    network = build_network(config)
    check_weights(config, network, tensors, p)
    state = {k: v.to(network.state_dict()[k].dtype) for k, v in tensors.items()}
    network.load_state_dict(state)
    network.eval().to(device)
    return Model(config, network, p)


def load_training_state(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The optimizer tensors saved next to the weights of a ``last`` model (for resuming)."""
    p = Path(path)
    _, _, state = _read_members(p)
    return None if state is None else _load_tensors(state, p, TRAINING_STATE)


def save_model(config: ModelConfig, network: torch.nn.Module, path: str | Path, *, overwrite: bool = False,
               archive: bool = False, half: bool = False,
               training_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``network``'s weights and ``config`` as ``path`` (a folder, or a zip if ``archive``).

    The model appears complete or not at all (written under a temporary name, then renamed).
    ``half`` stores floating weights as float16 (half the size; loaded back as float32).
    """
    from safetensors.torch import save as st_save

    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError("exists already; choose another name or allow overwriting", path=p)
    net = getattr(network, "module", network)  # DistributedDataParallel
    tensors = {}
    for k, v in net.state_dict().items():
        t = v.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.half()
        tensors[k] = t.contiguous()
    from .. import __version__

    cfg = config if config.software_version else ModelConfig.from_dict(
        {**config.to_dict(), "software_version": __version__})
    members = {CONFIG: json.dumps(cfg.to_dict(), indent=2).encode(), WEIGHTS: st_save(tensors)}
    if training_state:
        members[TRAINING_STATE] = st_save({k: v.detach().cpu().contiguous() for k, v in training_state.items()})
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", dir=p.parent))
    try:
        if archive:
            target = tmp / "model.zip"
            with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
                for name, data in members.items():
                    zf.writestr(name, data)
        else:
            target = tmp / "model"
            target.mkdir()
            for name, data in members.items():
                (target / name).write_bytes(data)
        if p.exists():
            old = tmp / "old"
            os.replace(p, old)
        os.replace(target, p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote model %s", p)
    return p


def read_config(path: str | Path) -> ModelConfig:
    """Only the config of a model file (no weights are read)."""
    p = Path(path)
    cfg_bytes, _, _ = _read_members(p)
    try:
        return ModelConfig.from_dict(json.loads(cfg_bytes))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"config.json is not valid JSON ({exc})", path=p) from exc


__all__ = ["Model", "load_model", "save_model", "read_config", "check_weights", "load_training_state"]
