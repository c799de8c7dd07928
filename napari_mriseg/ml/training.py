"""`train(dataset_dir, out)`: a UNet trained on an nnU-Net v2 raw dataset.

Soft Dice + cross-entropy on patches sampled with foreground oversampling and augmented on the
fly; validation Dice per label each epoch (sliding window on the held-out subjects); the best and
the last model written as model files (the last also carries the optimizer state to resume).
Runs on CPU or CUDA (bf16/fp16 autocast) and, started by ``torchrun``, on several processes with
DistributedDataParallel (gloo on CPU, nccl on GPUs): each process samples its own patches, rank 0
validates and writes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.dataset import DatasetError, read_dataset, read_training_case
from ..core.errors import OutputExistsError
from ..core.resample import resample_to_grid
from .augment import AugmentConfig, augment
from .config import Architecture, ModelConfig
from .errors import CancelledError
from .inference import sliding_window
from .model_file import load_model, load_training_state, read_config, save_model
from .preprocess import bounding_box, check_channels, head_mask, model_grid, normalise
from .segment import network_predictor, resolve_device
from .split import DEFAULT_SUBJECT_PATTERN, check_split, make_split, read_split, subject_of
from .unet import build_network

log = logging.getLogger(__name__)
#: Class index of voxels carrying nnU-Net's ``ignore`` label in training targets (left out of the loss).
IGNORE_INDEX = 255


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (JSON-serialisable; stored in the model's training summary).

    Sizes are voxels in array order; ``target_spacing`` is mm ``(Z, Y, X)`` (None: the dataset's
    median spacing). For ``dim=2``, ``patch_size`` holds the two in-plane sizes and slices are
    taken along ``axis_2d``.
    """

    dim: int = 3
    patch_size: tuple[int, ...] = (64, 64, 64)
    axis_2d: int | None = None
    depth: int = 4
    base_features: int = 16
    norm: str = "instance"
    residual: bool = False
    deep_supervision: bool = False
    target_spacing: tuple[float, float, float] | None = None
    epochs: int = 50
    iterations_per_epoch: int = 50
    batch_size: int = 2
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    foreground_fraction: float = 0.33
    val_fraction: float = 0.2
    val_overlap: float = 0.25
    subject_pattern: str = DEFAULT_SUBJECT_PATTERN
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    half_weights: bool = False
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (stored in the model's training summary)."""
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d


@dataclass
class TrainResult:
    """Paths of the best and last model files, the per-epoch history and the split used."""

    best: Path
    last: Path
    history: list[dict[str, Any]]
    split: dict[str, list[str]]
    network: torch.nn.Module | None = None  # the last epoch's network (this process's replica)


@dataclass
class _Prepared:
    case_id: str
    image: np.ndarray   # (C, Z, Y, X) float32, normalised, cropped to the head (padded to >= patch)
    labels: np.ndarray  # (Z, Y, X) uint8 class indices
    foreground: list[np.ndarray]  # per class >= 1: (N, 3) voxel indices


def _prepare(info, case_id: str, model_cfg: ModelConfig) -> _Prepared:
    images, labels = read_training_case(info, case_id)
    check_channels([v.array for v in images], [f"{case_id}/{v.name}" for v in images])
    grid = model_grid(labels.grid, model_cfg.target_spacing)
    if grid is not labels.grid:
        images = [resample_to_grid(v, grid) for v in images]
        labels = resample_to_grid(labels, grid)
    x = np.stack([v.array.astype(np.float32) for v in images])
    mask = head_mask(x)
    normalise(x, model_cfg.normalisation, mask, out=x)
    lut = np.zeros(256, np.uint8)
    for k, v in enumerate(model_cfg.labels.values(), start=1):
        lut[v] = k
    ignore = info.ignore_value
    if ignore is not None:
        lut[ignore] = IGNORE_INDEX
    unknown = set(np.unique(labels.array).tolist()) - {0, *model_cfg.labels.values()} - {ignore}
    if unknown:
        raise DatasetError(f"case {case_id!r} has label values {sorted(unknown)} not in the dataset's labels",
                           path=info.root)
    y = lut[labels.array]
    box = bounding_box(mask | (y > 0))
    x, y = x[(slice(None),) + box], y[box]
    if model_cfg.axis_2d is not None:
        x, y = np.moveaxis(x, model_cfg.axis_2d + 1, 1), np.moveaxis(y, model_cfg.axis_2d, 0)
    patch = model_cfg.patch_size_3d if model_cfg.axis_2d is None else (1, *model_cfg.patch_size)
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for p, s in zip(patch, y.shape)]
    x = np.ascontiguousarray(np.pad(x, [(0, 0), *pads]))
    y = np.ascontiguousarray(np.pad(y, pads))
    fg = [np.argwhere(y == k) for k in range(1, len(model_cfg.labels) + 1)]
    return _Prepared(case_id, x, y, fg)


def _sample(cases: list[_Prepared], patch: tuple[int, int, int], n: int, fg_fraction: float,
            rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(n):
        c = cases[int(rng.integers(len(cases)))]
        shape = c.labels.shape
        present = [f for f in c.foreground if len(f)]
        if present and rng.random() < fg_fraction:
            pts = present[int(rng.integers(len(present)))]
            centre = pts[int(rng.integers(len(pts)))]
            start = [int(np.clip(ct - p // 2 + rng.integers(-(p // 4), p // 4 + 1), 0, s - p))
                     for ct, p, s in zip(centre, patch, shape)]
        else:
            start = [int(rng.integers(0, s - p + 1)) for p, s in zip(patch, shape)]
        sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
        xs.append(torch.from_numpy(c.image[(slice(None),) + sl].copy()))
        ys.append(torch.from_numpy(c.labels[sl].astype(np.int64)))
    return torch.stack(xs), torch.stack(ys)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice over foreground classes, batch Dice).

    ``logits`` ``(B, K, ...)``, ``target`` ``(B, ...)`` class indices; voxels equal to
    `IGNORE_INDEX` (nnU-Net's ``ignore`` label: not reviewed) count in neither term.
    """
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX) if (target != IGNORE_INDEX).any() \
        else logits.sum() * 0.0
    valid = (target != IGNORE_INDEX).unsqueeze(1).float()
    probs = torch.softmax(logits.float(), 1) * valid
    onehot = F.one_hot(target.clamp_max(logits.shape[1] - 1) * (target != IGNORE_INDEX),
                       logits.shape[1]).movedim(-1, 1).float() * valid
    dims = (0,) + tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return ce + (1 - dice[1:].mean())


def _loss(out, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, (list, tuple)):
        return dice_ce_loss(out, target)
    weights = [0.5**i for i in range(len(out))]
    total = 0.0
    for w, o in zip(weights, out):
        t = target if o.shape[2:] == target.shape[1:] else F.interpolate(
            target[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long()
        total = total + w * dice_ce_loss(o, t)
    return total / sum(weights)


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice of classes 1..n_classes-1 (1.0 when both are empty)."""
    out = []
    for k in range(1, n_classes):
        p, t = pred == k, truth == k
        s = p.sum() + t.sum()
        out.append(1.0 if s == 0 else float(2 * (p & t).sum() / s))
    return out


def _validate(net, cases: list[_Prepared], cfg: ModelConfig, device: str, overlap: float) -> dict[str, float]:
    net.eval()
    patch = cfg.patch_size_3d if cfg.axis_2d is None else (1, *cfg.patch_size)
    per_case, wt = [], []
    for c in cases:
        res = sliding_window(c.image, network_predictor(net, cfg.architecture.dim), patch, overlap=overlap,
                             batch_size=2, device=device)
        ignored = c.labels == IGNORE_INDEX  # not reviewed: scored neither way
        pred = np.where(ignored, IGNORE_INDEX, res.labels)
        per_case.append(dice_per_class(pred, c.labels, cfg.out_channels))
        wt.append(dice_per_class(((pred > 0) & ~ignored).astype(np.uint8),
                                 ((c.labels > 0) & ~ignored).astype(np.uint8), 2)[0])
    net.train()
    mean = np.mean(per_case, axis=0)
    out = {name: float(d) for name, d in zip(cfg.labels, mean)}
    out["mean"] = float(mean.mean())
    out["whole_tumour"] = float(np.mean(wt))
    return out


def _optimizer_state(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{i}.{k}"] = torch.as_tensor(v).clone()
    return out


def _load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _last_path(out: Path) -> Path:
    return out.with_name(out.name[: -len(".mriseg")] + "_last.mriseg" if out.name.endswith(".mriseg")
                         else out.name + "_last")


def train(dataset_dir: str | Path, out: str | Path, config: TrainConfig | None = None, *,
          resume: str | Path | None = None, init: str | Path | None = None,
          split_file: str | Path | None = None, overwrite: bool = False,
          progress: Callable[[dict[str, Any]], None] | None = None,
          cancel: Callable[[], bool] | None = None) -> TrainResult:
    """Train a UNet on an nnU-Net v2 raw dataset and write ``out`` (best) and ``*_last.mriseg``.

    Parameters
    ----------
    dataset_dir : path
        ``imagesTr``, ``labelsTr``, ``dataset.json``.
    out : path
        Best model (by mean validation Dice); the last epoch's model, with optimizer state, is
        written beside it as ``NAME_last.mriseg``.
    config : TrainConfig
    resume : path, optional
        A ``*_last.mriseg`` to continue from (architecture, split, optimizer state and epoch).
    init : path, optional
        A model to fine-tune: its architecture, preprocessing, weights and split are reused.
    split_file : path, optional
        JSON ``{"train": [...], "val": [...]}``; otherwise a seeded subject-level split.
    progress : callable(dict), optional
        Called after each iteration with ``epoch``, ``iteration``, ``loss`` and, after
        validation, ``val`` (Dice per label).
    cancel : callable() -> bool, optional
        Polled each iteration; True raises `CancelledError` (the last completed epoch's files stay).
    """
    cfg = config or TrainConfig()
    out = Path(out)
    last = _last_path(out)
    if not overwrite and resume is None:
        for p in (out, last):
            if p.exists():
                raise OutputExistsError("exists already; choose another name or allow overwriting", path=p)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(cfg.device)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    info = read_dataset(dataset_dir)
    base = resume or init
    start_epoch, prev_split, opt_state = 0, None, None
    if base is not None:
        model_cfg = read_config(base)
        missing = [s for s in model_cfg.sequences if s not in info.channel_names]
        if missing:
            raise DatasetError(f"the model needs channels {missing} that the dataset lacks", path=info.root)
        prev_split = model_cfg.training.get("split")
        if resume is not None:
            start_epoch = int(model_cfg.training.get("epoch", -1)) + 1
            opt_state = load_training_state(resume)
    else:
        spacing = cfg.target_spacing
        if spacing is None:
            spacing = _median_spacing(info)
        arch = Architecture(dim=cfg.dim, depth=cfg.depth, base_features=cfg.base_features, norm=cfg.norm,
                            residual=cfg.residual, deep_supervision=cfg.deep_supervision)
        model_cfg = ModelConfig(sequences=info.channel_names,
                                labels=info.class_labels, architecture=arch,
                                target_spacing=spacing, patch_size=cfg.patch_size, axis_2d=cfg.axis_2d)
    if list(model_cfg.sequences) != list(info.channel_names):
        raise DatasetError(f"dataset channels {list(info.channel_names)} differ from the model's "
                           f"{list(model_cfg.sequences)}", path=info.root)
    split = _choose_split(info.cases, cfg, split_file, prev_split)
    torch.manual_seed(cfg.seed)
    net = build_network(model_cfg)
    if base is not None:
        net.load_state_dict(load_model(base).network.state_dict())
    net.to(device).train()
    t0 = time.time()
    train_cases = [_prepare(info, c, model_cfg) for c in split["train"]]
    val_cases = [_prepare(info, c, model_cfg) for c in split["val"]] if rank == 0 else []
    log.info("prepared %d training and %d validation cases in %.1f s", len(train_cases), len(val_cases),
             time.time() - t0)
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=None if not device.startswith("cuda") else [device])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if opt_state:
        _load_optimizer_state(opt, opt_state)
    total_iters = cfg.epochs * cfg.iterations_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: (1 - min(it + start_epoch * cfg.iterations_per_epoch, total_iters - 1) / total_iters) ** 0.9)
    rng = np.random.default_rng([cfg.seed, rank, start_epoch])
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank * 7 + start_epoch)
    patch = model_cfg.patch_size_3d if model_cfg.axis_2d is None else (1, *model_cfg.patch_size)
    use_amp = cfg.amp and device.startswith("cuda")
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    history: list[dict[str, Any]] = list(model_cfg.training.get("history", [])) if resume else []
    best = max((h["val"]["mean"] for h in history if "val" in h), default=-float("inf"))
    summary: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        losses = []
        for it in range(cfg.iterations_per_epoch):
            if cancel is not None and cancel():
                raise CancelledError(f"training cancelled in epoch {epoch}; the files of the last "
                                     "completed epoch are kept")
            x, y = _sample(train_cases, patch, cfg.batch_size, cfg.foreground_fraction, rng)
            if model_cfg.axis_2d is not None:
                x, y = x[:, :, 0], y[:, 0]
            x, y = augment(x, y, gen, cfg.augmentation)
            x, y = x.to(device), y.to(device)
            with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
                loss = _loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.detach()))
            if progress is not None and rank == 0:
                progress({"epoch": epoch, "epochs": cfg.epochs, "iteration": it + 1,
                          "iterations": cfg.iterations_per_epoch, "loss": float(np.mean(losses))})
        record: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses))}
        if rank == 0:
            if val_cases:
                record["val"] = _validate(net, val_cases, model_cfg, device, cfg.val_overlap)
            history.append(record)
            summary = {"epoch": epoch, "epochs": cfg.epochs, "history": history, "split": split,
                       "seed": cfg.seed, "dataset": str(Path(dataset_dir).name), "train_config": cfg.to_dict(),
                       "world_size": world, "seconds": round(time.time() - t0, 1)}
            score = record.get("val", {}).get("mean", -record["loss"])
            if score > best:
                best = score
                summary_best = {**summary, "best_epoch": epoch, "val": record.get("val")}
                save_model(model_cfg.with_training(**summary_best), net, out, overwrite=True,
                           half=cfg.half_weights)
            save_model(model_cfg.with_training(**summary, val=record.get("val")), net, last, overwrite=True,
                       half=False, training_state=_optimizer_state(opt))
            log.info("epoch %d: loss %.4f%s", epoch, record["loss"],
                     f", val Dice {record['val']}" if "val" in record else "")
            if progress is not None:
                progress({"epoch": epoch, "epochs": cfg.epochs, "iteration": cfg.iterations_per_epoch,
                          "iterations": cfg.iterations_per_epoch, "loss": record["loss"],
                          "val": record.get("val")})
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(out, last, history, split, net.eval())


def _median_spacing(info) -> tuple[float, float, float]:
    from ..core.io import read_volume

    sp = [read_volume(info.label_path(c), kind="label").spacing for c in info.cases]
    return tuple(float(s) for s in np.median(np.asarray(sp), axis=0))  # type: ignore[return-value]


def _choose_split(cases, cfg: TrainConfig, split_file, prev_split) -> dict[str, list[str]]:
    if split_file is not None:
        return read_split(split_file, cases, cfg.subject_pattern)
    if not prev_split:
        return make_split(cases, val_fraction=cfg.val_fraction, seed=cfg.seed, pattern=cfg.subject_pattern)
    # reuse the saved split; cases new to it follow their subject, new subjects are split by seed
    side = {c: s for s in ("train", "val") for c in prev_split.get(s, []) if c in cases}
    subj_side = {subject_of(c, cfg.subject_pattern): s for c, s in side.items()}
    new = [c for c in cases if c not in side]
    for c in list(new):
        s = subj_side.get(subject_of(c, cfg.subject_pattern))
        if s is not None:
            side[c] = s
            new.remove(c)
    extra = make_split(new, val_fraction=cfg.val_fraction, seed=cfg.seed, pattern=cfg.subject_pattern) if new \
        else {"train": [], "val": []}
    split = {s: sorted([c for c, v in side.items() if v == s] + extra[s]) for s in ("train", "val")}
    return check_split(split, cases, cfg.subject_pattern)


__all__ = ["TrainConfig", "TrainResult", "train", "dice_ce_loss"]
