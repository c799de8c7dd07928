"""Sliding-window inference with stand-in predictors (and MONAI agreement with a real UNet)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_mriseg.core.errors import ResourceLimitError  # noqa: E402
from napari_mriseg.ml.errors import CancelledError  # noqa: E402
from napari_mriseg.ml.inference import gaussian_importance, sliding_window, window_starts  # noqa: E402


def threshold_predictor(x: torch.Tensor) -> torch.Tensor:
    """Pointwise: class 1 where channel 0 > 0 (logit margin 10)."""
    fg = 10 * torch.tanh(x[:, :1])
    return torch.cat([-fg, fg], dim=1)


class Counting:
    def __init__(self, fn=threshold_predictor):
        self.fn, self.calls, self.batches = fn, 0, []

    def __call__(self, x):
        self.calls += 1
        self.batches.append(x.shape[0])
        return self.fn(x)


@pytest.mark.parametrize(("size", "patch", "overlap", "expected"), [
    (10, 4, 0.5, [0, 2, 4, 6]),
    (11, 4, 0.5, [0, 2, 4, 6, 7]),
    (4, 4, 0.5, [0]),
    (3, 8, 0.5, [0]),
    (100, 32, 0.25, [0, 24, 48, 68]),
    (9, 4, 0.0, [0, 4, 5]),
])
def test_window_starts_table(size, patch, overlap, expected):
    assert window_starts(size, patch, overlap) == expected


def test_window_starts_match_monai():
    monai_utils = pytest.importorskip("monai.data.utils")
    for size, patch, ov in [(155, 96, 0.5), (240, 96, 0.5), (37, 16, 0.3), (64, 64, 0.5), (70, 32, 0.9)]:
        slices = monai_utils.dense_patch_slices((size,), (patch,), (max(1, int(patch * (1 - ov))),))
        assert window_starts(size, patch, ov) == sorted({s[0].start for s in slices})


def test_gaussian_cached_and_monai_like():
    w = gaussian_importance((8, 6, 1))
    assert w is gaussian_importance((8, 6, 1))
    assert w.shape == (8, 6, 1)
    assert torch.allclose(w[..., 0], w[..., 0].flip(0).flip(1))
    assert float(w.min()) >= 1e-3 and float(w.max()) <= 1.0
    mu = pytest.importorskip("monai.data.utils")
    ref = mu.compute_importance_map((16, 12, 20), mode="gaussian", sigma_scale=0.125)
    np.testing.assert_allclose(gaussian_importance((16, 12, 20)).numpy(), ref.numpy(), rtol=1e-6)


@pytest.mark.parametrize("shape", [(20, 17, 23), (5, 30, 9), (8, 8, 8)])
@pytest.mark.parametrize(("overlap", "batch"), [(0.5, 1), (0.25, 3), (0.0, 5)])
def test_pointwise_predictor_is_reproduced_exactly(shape, overlap, batch):
    rng = np.random.default_rng(1)
    img = rng.normal(size=(2, *shape)).astype(np.float32)
    res = sliding_window(img, threshold_predictor, (8, 8, 8), overlap=overlap, batch_size=batch,
                         return_probabilities=True)
    np.testing.assert_array_equal(res.labels, (img[0] > 0).astype(np.uint8))
    assert res.probabilities.shape == (2, *shape)
    np.testing.assert_allclose(res.probabilities.sum(0), 1, atol=1e-6)


def test_blending_is_a_normalised_weighted_mean():
    """Each window predicts its own constant; the result is their Gaussian-weighted mean."""
    starts = []

    def window_id(x):
        # one constant logit per window: the mean of channel 0 (a position code)
        starts.append(x.shape[0])
        v = x[:, :1].mean(dim=(2, 3, 4), keepdim=True).expand(-1, 1, *x.shape[2:])
        return torch.cat([torch.zeros_like(v), v], 1)

    z = np.arange(24, dtype=np.float32)[:, None, None] * np.ones((24, 6, 6), np.float32)
    res = sliding_window(z[None] / 10, window_id, (8, 6, 6), overlap=0.5, return_probabilities=True)
    logit = np.log(res.probabilities[1] / res.probabilities[0])
    # slab z in [0, 4) is covered by the first window only: its mean position is 3.5
    np.testing.assert_allclose(logit[:4], 0.35, atol=1e-5)
    # logits grow monotonically with z (blending neighbours, never outside their range)
    col = logit[:, 3, 3]
    assert np.all(np.diff(col) >= -1e-6) and col.max() <= 1.95 + 1e-5


def test_mask_skips_windows_without_changing_foreground():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(1, 40, 40, 40)).astype(np.float32)
    mask = np.zeros((40, 40, 40), bool)
    mask[2:10, 3:12, 30:38] = True
    full_p, part_p = Counting(), Counting()
    full = sliding_window(img, full_p, (16, 16, 16), overlap=0.5, mask=None, return_probabilities=True)
    part = sliding_window(img, part_p, (16, 16, 16), overlap=0.5, mask=mask, return_probabilities=True)
    assert part.windows < full.windows / 4
    np.testing.assert_array_equal(part.labels[mask], full.labels[mask])
    np.testing.assert_allclose(part.probabilities[:, mask], full.probabilities[:, mask], atol=1e-6)
    far = np.ones_like(mask)
    far[:24, :24, 16:] = False  # the windows that touch the mask
    assert part.labels[far].max() == 0 and np.all(part.probabilities[0][far] == 1)


def test_tta_batches_mirrors_and_measures_disagreement():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
    p = Counting()
    res = sliding_window(img, p, (8, 8, 8), overlap=0.5, batch_size=2, mirror_axes=(0, 1, 2),
                         return_uncertainty=True)
    assert set(p.batches) <= {16, 8} and max(p.batches) == 16  # 2 windows x 8 mirrors in one pass
    np.testing.assert_array_equal(res.labels, (img[0] > 0).astype(np.uint8))
    assert res.uncertainty.max() == 0  # a pointwise predictor is mirror-equivariant

    def ramp(x):  # depends on the position inside the window: mirrors disagree
        r = torch.linspace(-1, 1, x.shape[2]).view(1, 1, -1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([torch.zeros_like(r), r + 0.1 * x[:, :1]], 1)

    res = sliding_window(img, ramp, (8, 8, 8), overlap=0.5, mirror_axes=(0,), return_uncertainty=True)
    assert 0 < res.uncertainty.max() <= 1 and res.uncertainty.mean() > 0.1


def test_progress_and_cancel():
    img = np.zeros((1, 32, 16, 16), np.float32)
    seen = []
    sliding_window(img, threshold_predictor, (8, 8, 8), overlap=0.5, batch_size=4,
                   progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == 7 * 3 * 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    p = Counting()
    polls = iter([False, False, True])
    with pytest.raises(CancelledError):
        sliding_window(img, p, (8, 8, 8), batch_size=1, cancel=lambda: next(polls))
    assert p.calls == 2
    assert p.batches == [2, 2]  # a lone CPU window runs as a pair (PyTorch's batch-1 3D conv path is slow)


def test_out_of_memory_halves_the_batch_then_gives_a_clear_error():
    class OOMAbove:
        def __init__(self, limit):
            self.limit, self.batches = limit, []

        def __call__(self, x):
            self.batches.append(x.shape[0])
            if x.shape[0] > self.limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (stand-in)")
            return threshold_predictor(x)

    img = np.random.default_rng(4).normal(size=(1, 8, 32, 32)).astype(np.float32)
    p = OOMAbove(2)
    res = sliding_window(img, p, (8, 8, 8), batch_size=8)
    np.testing.assert_array_equal(res.labels, (img[0] > 0).astype(np.uint8))
    assert p.batches[:3] == [8, 4, 2]  # halved until it fits
    with pytest.raises(ResourceLimitError, match="--device cpu"):
        sliding_window(img, OOMAbove(0), (8, 8, 8), batch_size=4)


def test_streaming_keeps_the_accumulator_one_slab_deep(monkeypatch):
    """Memory is bounded: no tensor of the full depth is ever allocated by the stitcher."""
    import napari_mriseg.ml.inference as inf

    shapes = []
    real_zeros = torch.zeros

    def spy(*args, **kw):
        t = real_zeros(*args, **kw)
        shapes.append(tuple(t.shape))
        return t

    monkeypatch.setattr(inf.torch, "zeros", spy)
    img = np.random.default_rng(5).normal(size=(1, 200, 16, 16)).astype(np.float32)
    res = sliding_window(img, threshold_predictor, (8, 16, 16), overlap=0.5)
    np.testing.assert_array_equal(res.labels, (img[0] > 0).astype(np.uint8))
    assert shapes and max(s[-3] for s in shapes if len(s) >= 3) == 8


def test_agrees_with_monai_on_a_real_unet():
    monai_inf = pytest.importorskip("monai.inferers")
    from napari_mriseg.ml.config import Architecture, ModelConfig
    from napari_mriseg.ml.unet import build_network

    torch.manual_seed(0)
    cfg = ModelConfig(sequences=("a", "b"), architecture=Architecture(depth=3, base_features=4),
                      patch_size=(16, 16, 16))
    net = build_network(cfg).eval()
    img = torch.randn(2, 30, 37, 21)
    mask = np.zeros(img.shape[1:], bool)
    mask[5:20, 10:30, 3:18] = True
    with torch.no_grad():
        ref = torch.softmax(monai_inf.sliding_window_inference(img[None], (16, 16, 16), 2, net, overlap=0.5,
                                                               mode="gaussian")[0], 0).numpy()
    ours = sliding_window(img, net, (16, 16, 16), overlap=0.5, batch_size=3, mask=mask, return_probabilities=True)
    np.testing.assert_allclose(ours.probabilities[:, mask], ref[:, mask], atol=1e-5)
    np.testing.assert_array_equal(ours.labels[mask], ref.argmax(0)[mask])


def _context_predictor(x: torch.Tensor) -> torch.Tensor:
    """Not pointwise: each voxel's logit mixes its value, the window's mean and its place in the
    window, so the blended result depends on which windows ran and how they were weighted."""
    ramp = torch.linspace(-1, 1, x.shape[2]).view(1, 1, -1, 1, 1)
    m = x[:, :1].mean(dim=(2, 3, 4), keepdim=True)
    fg = x[:, :1] + 0.5 * m + 0.3 * ramp
    return torch.cat([torch.zeros_like(fg), fg, 0.5 * fg - 0.2], 1)


def _reference_blend(img, predictor, patch, overlap, mask):
    """Plain full-volume Gaussian blending, one window per call: the result batching must keep."""
    from napari_mriseg.ml.inference import window_starts

    shape = img.shape[1:]
    starts = [window_starts(s, p, overlap) for s, p in zip(shape, patch)]
    w = gaussian_importance(patch)
    acc, wsum = torch.zeros((3, *shape)), torch.zeros(shape)
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                if not mask[sl].any():
                    continue
                acc[(slice(None), *sl)] += predictor(torch.from_numpy(img[(slice(None), *sl)])[None])[0] * w
                wsum[sl] += w
    return torch.softmax(acc / wsum.clamp_min(1e-12), 0).numpy(), wsum.numpy() > 0


def test_batches_span_rows_so_a_3d_network_never_gets_a_lone_window():
    """Rows of 3 and 4 windows: batches cross rows; only the final odd window is padded."""
    rng = np.random.default_rng(6)
    img = rng.normal(size=(1, 28, 20, 36)).astype(np.float32)
    mask = np.zeros(img.shape[1:], bool)
    mask[:, 2, 2:10] = True  # every z row keeps 3 of its 4 x 8 windows ...
    mask[0, 19, 35] = True  # ... the first row a 4th: 19 windows in all
    patch = (8, 8, 8)
    ref, covered = _reference_blend(img, _context_predictor, patch, 0.5, mask)
    results = {}
    for bs in (1, 2, 3, 4):
        p = Counting(_context_predictor)
        res = sliding_window(img, p, patch, overlap=0.5, batch_size=bs, mask=mask, return_probabilities=True)
        results[bs] = res
        assert res.windows == 19
        # full batches although rows hold 3 or 4 windows; a batch of one 3D window runs as a pair on
        # the CPU (PyTorch's oneDNN path), and the copy's output is dropped
        expected = [2] * 19 if bs == 1 else [bs] * (19 // bs) + ([max(19 % bs, 2)] if 19 % bs else [])
        assert p.batches == expected
        np.testing.assert_allclose(res.probabilities[:, covered], ref[:, covered], atol=1e-6)
    for bs in (2, 3, 4):
        np.testing.assert_array_equal(results[bs].labels, results[1].labels)
        np.testing.assert_array_equal(results[bs].probabilities, results[1].probabilities)


def test_2d_windows_are_not_padded():
    """pz = 1 (a 2D network): PyTorch's batch-1 Conv2d already runs on oneDNN, so no pad is added."""
    img = np.random.default_rng(7).normal(size=(1, 3, 24, 24)).astype(np.float32)
    p = Counting()
    res = sliding_window(img, p, (1, 16, 16), overlap=0.5, batch_size=2)
    assert res.windows == 3 * 2 * 2 and p.batches == [2] * 6
    p = Counting()
    sliding_window(img, p, (1, 16, 16), overlap=0.5, batch_size=1)
    assert p.batches == [1] * 12
    np.testing.assert_array_equal(res.labels, (img[0] > 0).astype(np.uint8))


def _small_unet(dim=3):
    from napari_mriseg.ml.config import Architecture, ModelConfig
    from napari_mriseg.ml.unet import build_network

    torch.manual_seed(0)
    cfg = ModelConfig(sequences=("a", "b"), architecture=Architecture(dim=dim, depth=3, base_features=4),
                      patch_size=(16,) * dim, axis_2d=0 if dim == 2 else None)
    return build_network(cfg).eval()


def test_module_predictor_runs_a_channels_last_copy_and_leaves_the_network_alone():
    from napari_mriseg.ml.inference import module_predictor

    net = _small_unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pred = module_predictor(net, 3, channels_last=True)
    x = torch.randn(3, 2, 16, 16, 16)
    with torch.inference_mode():
        out, ref = pred(x), net(x)
    assert out.is_contiguous() and out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-5)
    for k, v in net.state_dict().items():  # the caller's weights: same values, same (default) layout
        assert v.is_contiguous() and torch.equal(v, before[k])
    assert module_predictor(net, 3, channels_last=False) is net
    net2 = _small_unet(dim=2)
    pred2 = module_predictor(net2, 2)
    x2 = torch.randn(2, 2, 1, 16, 16)
    with torch.inference_mode():
        np.testing.assert_array_equal(pred2(x2)[:, :, 0].numpy(), net2(x2[:, :, 0]).numpy())


def test_precision_is_checked_and_bf16_stays_close_to_fp32(monkeypatch):
    from napari_mriseg.core.errors import OptionError
    from napari_mriseg.ml import inference

    img = np.random.default_rng(8).normal(size=(2, 20, 24, 18)).astype(np.float32)
    with pytest.raises(OptionError, match="'auto', 'fp32', 'bf16'.*'fp16'"):
        sliding_window(img, threshold_predictor, (8, 8, 8), precision="fp16")
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: False)
    with pytest.raises(OptionError, match="AVX512-BF16 or AMX.*use precision 'fp32'"):
        sliding_window(img, threshold_predictor, (8, 8, 8), precision="bf16")
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: True)  # emulated where absent: slow, same numbers
    pred = inference.module_predictor(_small_unet(), 3)
    seen = []

    def spy(x):
        out = pred(x)
        seen.append(out.dtype)
        return out

    f32 = sliding_window(img, pred, (16, 16, 16), return_probabilities=True, precision="fp32")
    b16 = sliding_window(img, spy, (16, 16, 16), return_probabilities=True, precision="bf16")
    assert set(seen) == {torch.bfloat16}
    dp = np.abs(f32.probabilities - b16.probabilities).max()
    assert 0 < dp < 5e-2
    assert (f32.labels == b16.labels).mean() > 0.97
