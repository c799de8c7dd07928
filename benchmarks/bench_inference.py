"""Sliding-window inference: napari-mriseg against MONAI's ``sliding_window_inference``.

Same network module and weights, same patch size, overlap and Gaussian weighting, same
4-channel 155x240x240 input (a 1 mm phantom head, normalised, centred in a BraTS-size grid), in
two variants:

* ``full``: the whole head (scalp and skull included); the foreground fills most of the field of
  view, so skipping windows without foreground saves little;
* ``stripped``: the same head skull-stripped as BraTS cases are (image zeroed outside the brain:
  the phantom's white matter, grey matter and CSF); both methods get the same stripped input, and
  ours skips the windows without brain.

``mriseg-bf16`` runs ours with ``precision="bf16"`` (its speed and its agreement with float32 are
reported). ``mriseg-crop`` runs ours as `segment` does: on the foreground's bounding box, windows placed on
the box (so they sit elsewhere than MONAI's: its agreement is measured, not assumed).

MONAI runs at its default ``sw_batch_size=1`` and at our batch size (``--batch``). Ours runs the
network as `segment` does (`module_predictor`: a channels-last copy on the CPU), once returning
probabilities and once labels only. Each method runs in its own fresh process so that its peak
memory (VmHWM growth over the input and model) is measured separately; ``--repeat`` runs each
several times (best and median quoted: the machine may be shared; MONAI at batch 1, ~6x slower,
runs once). Prints windows computed, time,
voxels/s, peak extra memory, the agreement of the outputs (probabilities inside the foreground,
argmax everywhere) and the speed ratios.

    nice python benchmarks/bench_inference.py [--variant full|stripped|both] [--methods monai,mriseg]
        [--repeat 3] [--model sample_data/demo_model.mriseg] [--patch 48]

One variant with all methods takes about 2.5 minutes on 2 cores (MONAI at batch 1: ~80 s).
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
VARIANTS = ("full", "stripped")
#: MONAI at its default sw_batch_size=1, MONAI with our batch size, ours (probabilities), ours (labels only),
#: ours on the foreground's bounding box as `segment` runs it (windows placed on the box, not the image),
#: ours with ``precision="bf16"`` (skipped on a CPU without native bfloat16).
METHODS = ("monai-default", "monai", "mriseg", "mriseg-labels", "mriseg-crop", "mriseg-bf16")
#: Phantom tissue classes kept by skull-stripping (`napari_mriseg.core.phantom.TISSUE_CLASSES`).
BRAIN_TISSUES = (1, 2, 3)


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _centre(a: np.ndarray, fill: float = 0) -> np.ndarray:
    """Crop / pad a (Z, Y, X) array symmetrically to `SHAPE`."""
    out = np.full(SHAPE, fill, a.dtype)
    src = tuple(slice(max(0, (s - t) // 2), max(0, (s - t) // 2) + min(s, t)) for s, t in zip(a.shape, SHAPE))
    dst = tuple(slice(max(0, (t - s) // 2), max(0, (t - s) // 2) + min(s, t)) for s, t in zip(a.shape, SHAPE))
    out[dst] = a[src]
    return out


def make_input(seed: int = 7, variant: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """(4, 155, 240, 240) normalised float32 channels and the foreground mask (`head_mask`).

    ``variant="stripped"`` zeroes every voxel outside the brain before normalising, as BraTS
    cases come; the foreground mask is then the brain.
    """
    from napari_mriseg.core.phantom import make_phantom_case
    from napari_mriseg.core.resample import resample_to_grid
    from napari_mriseg.ml.preprocess import head_mask, normalise

    pc = make_phantom_case(seed, spacing_mm=1.0)
    ref = pc.case.grid
    x = np.stack([_centre(resample_to_grid(pc.case[n], ref).array.astype(np.float32))
                  for n in ("t1", "t1c", "t2", "flair")])
    if variant == "stripped":
        brain = _centre(np.isin(pc.tissues.array, BRAIN_TISSUES) | (pc.truth.array > 0))
        x[:, ~brain] = 0
    mask = head_mask(x)
    normalise(x, ["zscore_head"] * 4, mask, out=x)
    return x, mask


def child(method: str, model_path: Path, patch, overlap: float, batch: int, threads: int, data: Path,
          out: Path) -> None:
    """Run one method in this (fresh) process; write its output and a JSON line with time/memory."""
    import torch

    torch.set_num_threads(threads)
    net, patch, _ = load_network(model_path, patch)
    x, mask = np.load(data / "x.npy"), np.load(data / "mask.npy")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: measure the inference, not the set-up
    base = _vm_kib("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        if method.startswith("monai"):
            from monai.inferers import sliding_window_inference

            from napari_mriseg.ml.inference import window_starts

            sw_batch = 1 if method == "monai-default" else batch
            logits = sliding_window_inference(torch.from_numpy(x)[None], patch, sw_batch, net, overlap=overlap,
                                              mode="gaussian")[0]
            probs = torch.softmax(logits, 0).numpy()
            windows = int(np.prod([len(window_starts(s, p, overlap)) for s, p in zip(x.shape[1:], patch)]))
        else:
            from napari_mriseg.ml.inference import module_predictor, sliding_window
            from napari_mriseg.ml.preprocess import bounding_box

            box = bounding_box(mask) if method == "mriseg-crop" else tuple(slice(None) for _ in mask.shape)
            r = sliding_window(np.ascontiguousarray(x[(slice(None), *box)]), module_predictor(net, 3), patch,
                               overlap=overlap, batch_size=batch, mask=mask[box],
                               return_probabilities=method != "mriseg-labels",
                               precision="bf16" if method == "mriseg-bf16" else "auto")
            if method == "mriseg-labels":
                probs = r.labels
            else:
                probs = np.zeros(r.probabilities.shape[:1] + mask.shape, np.float32)
                probs[0] = 1
                probs[(slice(None), *box)] = r.probabilities
            windows = r.windows
    dt = time.perf_counter() - t0
    peak = _vm_kib("VmHWM") - base
    np.save(out, probs)
    print(json.dumps({"seconds": dt, "peak_kib": peak, "windows": windows}))


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


def _run_variant(variant: str, methods: list[str], a: argparse.Namespace, patch, tmp: Path) -> None:
    t0 = time.perf_counter()
    x, mask = make_input(variant=variant)
    data = tmp / variant
    data.mkdir()
    np.save(data / "x.npy", x)
    np.save(data / "mask.npy", mask)
    print(f"\n[{variant}] input {x.shape} float32 ({x.nbytes / 2**20:.0f} MiB), foreground {mask.mean():.1%} of "
          f"voxels, made in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"{'method':>14}  {'windows':>7}  {'best s':>7}  {'median s':>8}  {'Mvoxel/s':>8}  {'peak MiB':>8}", flush=True)
    res = {}
    for method in methods:
        times, peaks = [], []
        for _ in range(1 if method == "monai-default" else a.repeat):  # ~80 s a run: once is enough
            out = data / f"{method}.npy"
            cmd = [sys.executable, __file__, "--child", method, "--out", str(out), "--data", str(data),
                   "--model", str(a.model), "--overlap", str(a.overlap), "--batch", str(a.batch),
                   "--threads", str(a.threads)]
            if a.patch:
                cmd += ["--patch", str(a.patch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            times.append(info["seconds"])
            peaks.append(info["peak_kib"])
        best, med = min(times), float(np.median(times))
        res[method] = (best, min(peaks), np.load(data / f"{method}.npy", mmap_mode="r"), info["windows"])
        print(f"{method:>14}  {info['windows']:>7}  {best:7.1f}  {med:8.1f}  {np.prod(SHAPE) / best / 1e6:8.2f}  "
              f"{min(peaks) / 1024:8.0f}", flush=True)
    if "mriseg" in res and "mriseg-labels" in res:
        same = float((np.asarray(res["mriseg-labels"][2]) == np.asarray(res["mriseg"][2]).argmax(0)).mean())
        print(f"labels-only run vs argmax of the probabilities: {same:.6%} identical; labels only (streaming, no "
              f"per-class volumes): peak {res['mriseg-labels'][1] / 1024:.0f} MiB over the "
              f"{x.nbytes / 2**20:.0f} MiB input")
    for ours in ("mriseg", "mriseg-crop"):
        if ours not in res:
            continue
        po = np.asarray(res[ours][2])
        ao = po.argmax(0)
        for m in ("monai", "monai-default"):
            if m not in res:
                continue
            pm = np.asarray(res[m][2])
            diff = max(float(np.abs(pm[c][mask] - po[c][mask]).max()) for c in range(pm.shape[0]))
            am = pm.argmax(0)
            print(f"{m} vs {ours}: max |dp| in the foreground {diff:.2e} (bar 1e-3); argmax identical on "
                  f"{(am[mask] == ao[mask]).mean():.5%} of foreground voxels, {(am == ao).mean():.5%} of all "
                  f"voxels (bar 99.9%)")
    if "mriseg" in res and "mriseg-bf16" in res:
        p32, p16 = np.asarray(res["mriseg"][2]), np.asarray(res["mriseg-bf16"][2])
        diff = max(float(np.abs(p32[c][mask] - p16[c][mask]).max()) for c in range(p32.shape[0]))
        same = float((p32.argmax(0)[mask] == p16.argmax(0)[mask]).mean())
        print(f"bf16 vs fp32 (ours): max |dp| in the foreground {diff:.2e}; argmax identical on {same:.5%} of "
              f"foreground voxels; speed {res['mriseg'][0] / res['mriseg-bf16'][0]:.2f}x")
    for m in ("monai-default", "monai"):
        for ours in ("mriseg", "mriseg-labels", "mriseg-crop", "mriseg-bf16"):
            if m in res and ours in res:
                print(f"speed-up {ours} vs {m}: {res[m][0] / res[ours][0]:.2f}x (bar 1.5x); peak memory "
                      f"{m}/{ours}: {res[m][1] / max(res[ours][1], 1):.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "sample_data" / "demo_model.mriseg")
    ap.add_argument("--patch", type=int, default=None, help="cubic patch size (default: the model's)")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", choices=(*VARIANTS, "both"), default="both",
                    help="full head, skull-stripped (BraTS-like) head, or both (default)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per method (best and median reported)")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.model, a.patch and (a.patch,) * 3, a.overlap, a.batch, a.threads, a.data, a.out)
        return 0
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if "mriseg-bf16" in methods:
        from napari_mriseg.ml.inference import cpu_supports_bf16

        if not cpu_supports_bf16():
            print("this CPU has no native bfloat16 (AVX512-BF16 / AMX): mriseg-bf16 skipped")
            methods.remove("mriseg-bf16")
    if any(m.startswith("monai") for m in methods):
        import monai  # noqa: F401  (fail early if the bench extra is missing)

    _, patch, what = load_network(a.model, a.patch and (a.patch,) * 3)
    print(f"UNet with {what}; patch {patch}, overlap {a.overlap}, batch {a.batch}, Gaussian, {a.threads} threads, "
          f"CPU; each method in its own process, {a.repeat} run(s) each", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS if a.variant == "both" else (a.variant,):
            _run_variant(variant, methods, a, patch, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
