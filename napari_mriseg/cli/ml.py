"""``mriseg predict``, ``train`` and ``evaluate``: the UNet engine from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..core.errors import MriSegError, OutputExistsError
from ._common import add_command


class _Bar:
    """A one-line text progress bar on stderr."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label, self.enabled, self.t0 = label, enabled and sys.stderr.isatty(), time.time()

    def __call__(self, done: int, total: int, extra: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        n = int(30 * done / total)
        sys.stderr.write(f"\r{self.label} [{'#' * n}{'.' * (30 - n)}] {done}/{total} "
                         f"{time.time() - self.t0:.0f}s {extra}   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def add_commands(sub) -> None:
    """Add ``predict``, ``train`` and ``evaluate`` to the ``mriseg`` sub-parsers."""
    p = add_command(sub, "predict", "segment a case (or a folder of cases) with a UNet model",
             "mriseg predict case01/ --model sample_data/demo_model.mriseg --out case01_labels.nii.gz --tta")
    p.add_argument("case", help="a case folder (t1/t1c/t2/flair files) or a folder of case folders")
    p.add_argument("--model", required=True, help="NAME.mriseg model folder or zip")
    p.add_argument("--out", required=True,
                   help="output label file (.nii.gz); a folder when CASE is a folder of cases")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8x work in 3D)")
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap fraction (default 0.5)")
    p.add_argument("--batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="network arithmetic: auto = float32 on the CPU, mixed on CUDA; bf16 is faster on a CPU "
                        "with AVX512-BF16/AMX but moves probabilities by up to ~3e-2 (default auto)")
    p.add_argument("--postprocess", action="store_true", help="largest component per label, holes filled")
    p.add_argument("--resample", action="store_true",
                   help="resample sequences that are not on the reference grid onto it (no registration; "
                        "use `mriseg register` when they are misaligned)")
    p.add_argument("--uncertainty", help="also write the TTA disagreement map to this file")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=predict_cmd)

    p = add_command(sub, "train", "train a UNet on an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)",
             "mriseg train Dataset001_Brain/ --out brain.mriseg --epochs 100 --patch 96 96 96")
    p.add_argument("dataset", help="dataset folder (as written by `mriseg export`)")
    p.add_argument("--out", required=True, help="best model NAME.mriseg (the last epoch goes to NAME_last.mriseg)")
    p.add_argument("--dim", type=int, default=3, choices=(2, 3), help="3D patches or 2D slices")
    p.add_argument("--patch", type=int, nargs="+", default=None,
                   help="patch size in voxels, array order (3 numbers in 3D, 2 in 2D)")
    p.add_argument("--axis", type=int, default=0, choices=(0, 1, 2), help="2D: array axis to slice along")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="target spacing mm (Z Y X); default median")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--base-features", type=int, default=16)
    p.add_argument("--residual", action="store_true")
    p.add_argument("--deep-supervision", action="store_true")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iterations", type=int, default=50, help="iterations per epoch")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--split", help='split file {"train": [...], "val": [...]} (default: seeded, by subject)')
    p.add_argument("--subject-pattern", default=None,
                   help=r"regex whose first group is the subject ID (default '^(\d{3}_S_\d{4})')")
    p.add_argument("--resume", help="continue from NAME_last.mriseg")
    p.add_argument("--init", help="fine-tune from this model")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=train_cmd)

    p = add_command(sub, "evaluate", "Dice, Jaccard, sensitivity, specificity, precision, HD95, HD, ASSD and volumes "
             "per label and BraTS region", "mriseg evaluate --pred predictions/ --truth labelsTr/ --out metrics/")
    p.add_argument("--pred", required=True, help="folder of predicted label files CASE.nii.gz")
    p.add_argument("--truth", required=True, help="folder of CASE.nii.gz truths or of case folders")
    p.add_argument("--out", help="write CASE.csv per case, summary.csv and summary.json here")
    p.set_defaults(func=evaluate_cmd)


def _is_case_folder(path: Path) -> bool:
    from ..core.io import is_volume_file

    return any(is_volume_file(p) for p in path.iterdir() if p.is_file())


def _predict_one(case_path: Path, out: Path, model, args) -> None:
    from ..core.case import load_case
    from ..core.io import write_volume
    from ..core.resample import resample_to_grid
    from ..ml.segment import segment

    for p in [out, Path(args.uncertainty)] if args.uncertainty else [out]:
        if p.exists() and not args.overwrite:
            raise OutputExistsError("exists already; add --overwrite to replace it", path=p)
    case = load_case(case_path)
    if args.resample:
        for name in case.misregistered():
            case = case.with_sequence(name, resample_to_grid(case[name], case.grid))
    bar = _Bar(case.case_id or case_path.name)
    res = segment(case, model, device=args.device, tta=args.tta or bool(args.uncertainty), overlap=args.overlap,
                  batch_size=args.batch_size, postprocess=args.postprocess, precision=args.precision,
                  return_uncertainty=bool(args.uncertainty), progress=bar)
    write_volume(res.labels, out, overwrite=args.overwrite)
    if args.uncertainty and res.uncertainty is not None:
        write_volume(res.uncertainty, Path(args.uncertainty), overwrite=args.overwrite)
    sys.stdout.write(f"{out}\n")


def predict_cmd(args: argparse.Namespace) -> int:
    """Handler of ``mriseg predict``."""
    from ..ml.model_file import load_model
    from ..ml.segment import resolve_device

    case = Path(args.case)
    if not case.exists():
        raise MriSegError("no such case file or folder", path=case)
    args.device = resolve_device(args.device)
    model = load_model(args.model, device=args.device)
    out = Path(args.out)
    if case.is_dir() and not _is_case_folder(case):
        cases = sorted(p for p in case.iterdir() if p.is_dir())
        if not cases:
            raise MriSegError("holds neither volume files nor case folders", path=case)
        out.mkdir(parents=True, exist_ok=True)
        if args.uncertainty:
            raise MriSegError("--uncertainty takes one file; use it with a single case")
        for c in cases:
            _predict_one(c, out / f"{c.name}.nii.gz", model, args)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    _predict_one(case, out, model, args)
    return 0


def train_cmd(args: argparse.Namespace) -> int:
    """Handler of ``mriseg train``."""
    from ..ml.split import DEFAULT_SUBJECT_PATTERN
    from ..ml.training import TrainConfig, train

    patch = tuple(args.patch) if args.patch else ((128, 128, 128) if args.dim == 3 else (192, 192))
    cfg = TrainConfig(dim=args.dim, patch_size=patch, axis_2d=args.axis if args.dim == 2 else None,
                      depth=args.depth, base_features=args.base_features, residual=args.residual,
                      deep_supervision=args.deep_supervision,
                      target_spacing=tuple(args.spacing) if args.spacing else None, epochs=args.epochs,
                      iterations_per_epoch=args.iterations, batch_size=args.batch_size,
                      learning_rate=args.lr, seed=args.seed, device=args.device,
                      subject_pattern=args.subject_pattern or DEFAULT_SUBJECT_PATTERN)
    bar = _Bar("train")

    def progress(state: dict) -> None:
        val = state.get("val")
        extra = f"epoch {state['epoch'] + 1}/{state['epochs']} loss {state['loss']:.4f}"
        if val:
            extra += " Dice " + " ".join(f"{k} {v:.3f}" for k, v in val.items())
        bar(state["iteration"], state["iterations"], extra)

    res = train(args.dataset, args.out, cfg, resume=args.resume, init=args.init, split_file=args.split,
                overwrite=args.overwrite, progress=progress)
    last_val = next((h["val"] for h in reversed(res.history) if "val" in h), None)
    sys.stdout.write(json.dumps({"best": str(res.best), "last": str(res.last), "val": last_val}) + "\n")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    """Handler of ``mriseg evaluate``."""
    from ..ml.metrics import evaluate_folders

    res = evaluate_folders(args.pred, args.truth, args.out)
    rows = [r for r in res["summary"] if r["metric"] in ("dice", "hd95", "volume_error_ml")]
    sys.stdout.write(f"{len(res['cases'])} cases\n{'region':<18}{'metric':<17}{'mean':>10}{'std':>10}{'n_inf':>7}\n")
    for r in rows:
        sys.stdout.write(f"{r['region']:<18}{r['metric']:<17}{r['mean']:>10.4f}{r['std']:>10.4f}{r['n_inf']:>7}\n")
    return 0
