"""Sliding-window inference: napari-mriseg against MONAI's ``sliding_window_inference``.

Same network module and weights, same patch size, overlap and Gaussian weighting, same
4-channel 155x240x240 input (a 1 mm phantom head, normalised, centred in a BraTS-size grid).
MONAI runs twice: at its default ``sw_batch_size=1`` and at our batch size (``--batch``).
Each method runs in its own fresh process so that its peak memory (VmHWM growth over the
input and model) is measured separately. Prints time, voxels/s, peak extra memory, the speed ratio and
the agreement of the outputs (probabilities inside the head, argmax everywhere).

    nice python benchmarks/bench_inference.py [--model sample_data/demo_model.mriseg] [--patch 48]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAPE = (155, 240, 240)
#: MONAI at its default sw_batch_size=1, MONAI with our batch size, ours (probabilities), ours (labels only).
METHODS = ("monai-default", "monai", "mriseg", "mriseg-labels")


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def make_input(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(4, 155, 240, 240) normalised float32 channels and the head mask."""
    from napari_mriseg.core.phantom import make_phantom_case
    from napari_mriseg.core.resample import resample_to_grid
    from napari_mriseg.ml.preprocess import head_mask, normalise

    pc = make_phantom_case(seed, spacing_mm=1.0)
    ref = pc.case.grid
    chans = [resample_to_grid(pc.case[n], ref).array.astype(np.float32) for n in ("t1", "t1c", "t2", "flair")]
    x = np.zeros((4, *SHAPE), np.float32)
    src = [slice(max(0, (s - t) // 2), max(0, (s - t) // 2) + min(s, t)) for s, t in zip(ref.shape, SHAPE)]
    dst = [slice(max(0, (t - s) // 2), max(0, (t - s) // 2) + min(s, t)) for s, t in zip(ref.shape, SHAPE)]
    for c, a in enumerate(chans):
        x[(c, *dst)] = a[tuple(src)]
    mask = head_mask(x)
    normalise(x, ["zscore_head"] * 4, mask, out=x)
    return x, mask


def child(method: str, model_path: Path, patch, overlap: float, batch: int, threads: int, out: Path) -> None:
    """Run one method in this (fresh) process; write its probabilities and a JSON line with time/memory."""
    import torch

    torch.set_num_threads(threads)
    net, patch, _ = load_network(model_path, patch)
    x, mask = make_input()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: measure the inference, not the set-up
    base = _vm_kib("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        if method.startswith("monai"):
            from monai.inferers import sliding_window_inference

            sw_batch = 1 if method == "monai-default" else batch
            logits = sliding_window_inference(torch.from_numpy(x)[None], patch, sw_batch, net, overlap=overlap,
                                              mode="gaussian")[0]
            probs = torch.softmax(logits, 0).numpy()
        else:
            from napari_mriseg.ml.inference import sliding_window

            r = sliding_window(x, net, patch, overlap=overlap, batch_size=batch, mask=mask,
                               return_probabilities=method == "mriseg")
            probs = r.probabilities if method == "mriseg" else r.labels
    dt = time.perf_counter() - t0
    peak = _vm_kib("VmHWM") - base
    np.save(out, probs)
    print(json.dumps({"seconds": dt, "peak_kib": peak}))


def load_network(model_path: Path, patch_arg):
    import torch

    from napari_mriseg.ml.config import Architecture, ModelConfig
    from napari_mriseg.ml.model_file import load_model
    from napari_mriseg.ml.unet import build_network

    torch.manual_seed(0)
    if model_path.exists():
        model = load_model(model_path)
        patch = tuple(patch_arg) if patch_arg else model.config.patch_size_3d
        return model.network.eval(), patch, f"{model_path.name} weights"
    patch = tuple(patch_arg) if patch_arg else (48, 48, 48)
    cfg = ModelConfig(sequences=("t1", "t1c", "t2", "flair"), architecture=Architecture(base_features=8),
                      patch_size=patch)
    return build_network(cfg).eval(), patch, "random weights (no demo model found)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "sample_data" / "demo_model.mriseg")
    ap.add_argument("--patch", type=int, default=None, help="cubic patch size (default: the model's)")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.model, a.patch and (a.patch,) * 3, a.overlap, a.batch, a.threads, a.out)
        return 0
    import monai  # noqa: F401  (fail early if the bench extra is missing)

    _, patch, what = load_network(a.model, a.patch and (a.patch,) * 3)
    t0 = time.perf_counter()
    x, mask = make_input()
    print(f"input {x.shape} float32 ({x.nbytes / 2**20:.0f} MiB), head {mask.mean():.1%} of voxels, made in "
          f"{time.perf_counter() - t0:.0f} s; UNet with {what}; patch {patch}, overlap {a.overlap}, "
          f"batch {a.batch}, Gaussian, {a.threads} threads, CPU; each method in its own process", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = {}
        for method in METHODS:
            out = Path(tmp) / f"{method}.npy"
            cmd = [sys.executable, __file__, "--child", method, "--out", str(out), "--model", str(a.model),
                   "--overlap", str(a.overlap), "--batch", str(a.batch), "--threads", str(a.threads)]
            if a.patch:
                cmd += ["--patch", str(a.patch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            dt, peak = info["seconds"], info["peak_kib"]
            res[method] = (dt, peak, np.load(out, mmap_mode="r"))
            print(f"{method:>14}: {dt:7.1f} s  {np.prod(SHAPE) / dt / 1e6:6.2f} Mvoxel/s  peak memory over the "
                  f"input {peak / 1024:7.0f} MiB", flush=True)
        pm, po = res["monai"][2], res["mriseg"][2]
        assert np.array_equal(np.asarray(res["mriseg-labels"][2]), np.asarray(po).argmax(0))
        diff = max(float(np.abs(pm[c][mask] - po[c][mask]).max()) for c in range(pm.shape[0]))
        am, ao = np.asarray(pm).argmax(0), np.asarray(po).argmax(0)
        agree_fg = float((am[mask] == ao[mask]).mean())
        agree_all = float((am == ao).mean())
        print(f"max |p_monai - p_mriseg| inside the head: {diff:.2e} (bar 1e-3)")
        print(f"argmax identical: {agree_fg:.5%} of head voxels, {agree_all:.5%} of all voxels (bar 99.9%)")
        same = float(np.abs(np.asarray(res["monai-default"][2]) - np.asarray(pm)).max())
        print(f"MONAI sw_batch_size=1 vs ={a.batch}: max probability difference {same:.2e}")
        print(f"labels only (streaming, no per-class volumes): peak {res['mriseg-labels'][1] / 1024:.0f} MiB over "
              f"the {x.nbytes / 2**20:.0f} MiB input")
        for m in ("monai-default", "monai"):
            print(f"speed-up mriseg vs {m}: {res[m][0] / res['mriseg'][0]:.2f}x (bar 1.5x); peak memory "
                  f"{m}/mriseg: {res[m][1] / max(res['mriseg'][1], 1):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
