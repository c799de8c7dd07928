"""Train the demo model shipped in ``sample_data/demo_model.mriseg`` (reproducible, seeded).

    nice -n 10 python scripts/train_demo_model.py --work /tmp/mriseg_demo

1. writes an nnU-Net v2 raw dataset of phantom cases (seeds 1000..1000+N-1, 2 mm), every
   sequence put on the t1 grid through the phantom's known rigid transform (a perfect
   registration: this is training data, not a test of registration);
2. trains a small 3D UNet on it (`napari_mriseg.ml.training.train`, seed 0);
3. evaluates the best model on 10 phantom cases it never saw (seeds 5000..5009) and writes the
   Dice per label and region to ``WORK/demo_eval.json`` and into the model's config.

Steps 1 and 3 can be run alone (``--skip-train``, ``--skip-dataset``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_mriseg.core import convert  # noqa: E402
from napari_mriseg.core.case import Case  # noqa: E402
from napari_mriseg.core.dataset import add_training_case  # noqa: E402

SEQS = ("t1", "t1c", "t2", "flair")
TRAIN_SEED0, TEST_SEED0, N_TEST = 1000, 5000, 10


def aligned_phantom(seed: int, spacing_mm: float):
    """A phantom case with every sequence on the t1 grid (known transforms) and its truth."""
    import SimpleITK as sitk

    from napari_mriseg.core.phantom import make_phantom_case, rigid_transform

    pc = make_phantom_case(seed, spacing_mm=spacing_mm)
    ref = convert.to_sitk(pc.case["t1"])
    seqs = {}
    for name in SEQS:
        vol = pc.case[name]
        moved = sitk.Resample(convert.to_sitk(vol), ref, rigid_transform(pc.transforms[name]), sitk.sitkLinear,
                              0.0, sitk.sitkFloat32)
        seqs[name] = convert.from_sitk(moved, name=name)
    return Case(seqs, "t1", pc.truth, f"phantom_{seed:04d}"), pc.truth


def make_dataset(work: Path, n: int, spacing_mm: float) -> Path:
    ds = work / "Dataset900_Phantom"
    if ds.exists():
        shutil.rmtree(ds)
    for seed in range(TRAIN_SEED0, TRAIN_SEED0 + n):
        case, truth = aligned_phantom(seed, spacing_mm)
        add_training_case(ds, case.case_id, [case[s] for s in SEQS], truth, channel_names=SEQS,
                          label_names={"necrotic": 1, "oedema": 2, "enhancing": 3})
        print(f"dataset: case {seed} written", flush=True)
    return ds


def evaluate_model(model_path: Path, spacing_mm: float, out_json: Path) -> dict:
    from napari_mriseg.ml.metrics import evaluate
    from napari_mriseg.ml.model_file import load_model
    from napari_mriseg.ml.segment import segment

    model = load_model(model_path)
    rows = []
    for seed in range(TEST_SEED0, TEST_SEED0 + N_TEST):
        case, truth = aligned_phantom(seed, spacing_mm)
        pred = segment(case, model, device="cpu")
        m = evaluate(pred.labels, truth)
        rows.append({k: m[k]["dice"] for k in m})
        print(f"test case {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
    keys = list(rows[0])
    summary = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    result = {"test_seeds": [TEST_SEED0, TEST_SEED0 + N_TEST - 1], "mean_dice": summary, "per_case": rows}
    out_json.write_text(json.dumps(result, indent=2))
    print("mean Dice on 10 unseen phantoms: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/mriseg_demo"))
    p.add_argument("--out", type=Path, default=ROOT / "sample_data" / "demo_model.mriseg")
    p.add_argument("--cases", type=int, default=30)
    p.add_argument("--spacing", type=float, default=2.0)
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-dataset", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from napari_mriseg.ml.training import TrainConfig, train

    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    ds = a.work / "Dataset900_Phantom"
    t0 = time.time()
    if not a.skip_dataset:
        ds = make_dataset(a.work, a.cases, a.spacing)
    if not a.skip_train:
        cfg = TrainConfig(dim=3, patch_size=(48, 48, 48), depth=4, base_features=8, target_spacing=(a.spacing,) * 3,
                          epochs=a.epochs, iterations_per_epoch=a.iterations, batch_size=2, learning_rate=3e-3,
                          foreground_fraction=0.5, val_fraction=0.15, seed=a.seed, device="cpu")

        def bar(state: dict) -> None:
            if state.get("val") is not None:
                print(f"epoch {state['epoch'] + 1}/{state['epochs']} loss {state['loss']:.4f} val {state['val']}"
                      f" ({time.time() - t0:.0f} s)", flush=True)

        train(ds, a.out, cfg, overwrite=True, progress=bar)
        last = a.out.with_name(a.out.name.replace(".mriseg", "_last.mriseg"))
        shutil.move(str(last), str(a.work / last.name))  # only the best model ships
    result = evaluate_model(a.out, a.spacing, a.work / "demo_eval.json")
    from napari_mriseg.ml.model_file import load_model, save_model

    model = load_model(a.out)
    save_model(model.config.with_training(unseen_phantom_test=result["mean_dice"]), model.network, a.out,
               overwrite=True)
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
