"""`segment`: a case in, labels on its reference grid out (stand-in networks and a real UNet)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_mriseg.core.case import Case  # noqa: E402
from napari_mriseg.core.errors import GeometryMismatchError, InvalidImageError  # noqa: E402
from napari_mriseg.core.volume import Volume  # noqa: E402
from napari_mriseg.ml.config import Architecture, ModelConfig  # noqa: E402
from napari_mriseg.ml.errors import CancelledError, MissingSequenceError  # noqa: E402
from napari_mriseg.ml.model_file import Model, load_model, save_model  # noqa: E402
from napari_mriseg.ml.segment import (  # noqa: E402
    fill_holes_per_class,
    largest_component_per_class,
    segment,
)
from napari_mriseg.ml.unet import build_network  # noqa: E402

SPACING = (3.0, 1.2, 0.9)
ORIGIN = (-20.0, 35.5, 12.25)
c, s = np.cos(0.3), np.sin(0.3)
DIRECTION = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _case(shape=(24, 40, 48), seed=0):
    """An ellipsoid head with a bright sphere (the 'tumour') in flair, on an oblique grid."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    mm = np.stack([zz * SPACING[0], yy * SPACING[1], xx * SPACING[2]])
    centre = np.array([n * sp / 2 for n, sp in zip(shape, SPACING)])
    r = np.sqrt(((mm - centre[:, None, None, None]) ** 2 / np.array([30, 20, 19])[:, None, None, None] ** 2).sum(0))
    head = r < 1
    tum_c = centre + np.array([3, 4, -2])
    tumour = np.sqrt(((mm - tum_c[:, None, None, None]) ** 2).sum(0)) < 9
    t1 = np.where(head, 400, 0) + rng.normal(0, 5, shape)
    flair = np.where(head, 300, 0) + np.where(tumour, 900, 0) + rng.normal(0, 5, shape)
    vols = {n: Volume(a.astype(np.float32), SPACING, ORIGIN, DIRECTION, name=n) for n, a in
            (("t1", t1), ("flair", flair))}
    return Case(vols, "t1", case_id="synthetic"), tumour


class Stand(torch.nn.Module):
    """Pointwise stand-in: label 1 where the flair channel's z-score exceeds 1.5 (any dim)."""

    def forward(self, x):
        fg = 10 * torch.tanh(x[:, 1:2] - 1.5)
        return torch.cat([-fg, fg], 1)


def _stand_model(dim=3, spacing=(2.0, 2.0, 2.0), labels=None, axis=0):
    arch = Architecture(dim=dim, depth=1, base_features=1)
    cfg = ModelConfig(sequences=("t1", "flair"), labels=labels or {"tumour": 4}, architecture=arch,
                      target_spacing=spacing, patch_size=(16,) * dim, axis_2d=axis if dim == 2 else None)
    return Model(cfg, Stand())


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize(("dim", "spacing"), [(3, (2.0, 2.0, 2.0)), (3, SPACING), (2, (3.0, 1.0, 1.0))])
def test_labels_land_on_the_reference_grid(dim, spacing):
    case, tumour = _case()
    res = segment(case, _stand_model(dim, spacing), device="cpu")
    assert res.labels.is_label and res.labels.array.dtype == np.uint8
    assert case.grid.mismatch(res.labels.grid) is None
    assert set(np.unique(res.labels.array)) == {0, 4}  # class 1 -> the label's value
    assert _dice(res.labels.array == 4, tumour) > (0.99 if spacing == SPACING else 0.85)


def test_2d_along_each_axis_matches_3d_for_a_pointwise_net():
    case, _ = _case()
    ref = segment(case, _stand_model(3, SPACING), device="cpu").labels.array
    for axis in (0, 1, 2):
        out = segment(case, _stand_model(2, SPACING, axis=axis), device="cpu").labels.array
        np.testing.assert_array_equal(out, ref)


def test_probabilities_uncertainty_and_tta():
    case, tumour = _case()
    res = segment(case, _stand_model(3, SPACING), device="cpu", tta=True, return_probabilities=True,
                  return_uncertainty=True)
    assert set(res.probabilities) == {"background", "tumour"}
    total = res.probabilities["background"].array + res.probabilities["tumour"].array
    np.testing.assert_allclose(total, 1, atol=1e-5)
    assert res.uncertainty is not None and float(res.uncertainty.array.max()) == 0.0
    assert _dice(res.probabilities["tumour"].array > 0.5, tumour) > 0.99


def test_missing_sequence_nan_constant_and_grid_errors():
    case, _ = _case()
    model = _stand_model()
    with pytest.raises(MissingSequenceError, match="flair"):
        segment(Case({"t1": case["t1"]}), model, device="cpu")
    bad = case["flair"].array.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(InvalidImageError, match="NaN"):
        segment(case.with_sequence("flair", case["flair"].with_array(bad)), model, device="cpu")
    with pytest.raises(InvalidImageError, match="constant"):
        segment(case.with_sequence("flair", case["flair"].with_array(np.zeros_like(bad))), model, device="cpu")
    moved = Volume(case["flair"].array, SPACING, (0.0, 0.0, 0.0), DIRECTION, name="flair")
    with pytest.raises(GeometryMismatchError, match="origin"):
        segment(case.with_sequence("flair", moved), model, device="cpu")


def test_cancel_and_progress():
    case, _ = _case()
    seen = []
    segment(case, _stand_model(), device="cpu", progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]
    with pytest.raises(CancelledError):
        segment(case, _stand_model(), device="cpu", cancel=lambda: True)


def test_postprocessing_helpers():
    a = np.zeros((7, 9, 9), np.uint8)
    a[1:4, 1:6, 1:6] = 2
    a[2, 3, 3] = 0          # a hole
    a[6, 8, 0] = 2          # a speck
    a[6, 8, 8] = 3
    out = fill_holes_per_class(largest_component_per_class(a))
    assert out[6, 8, 0] == 0 and out[2, 3, 3] == 2 and out[6, 8, 8] == 3
    assert (out == 2).sum() == 3 * 5 * 5
    assert a[2, 3, 3] == 0 and a[6, 8, 0] == 2  # input untouched


def test_real_unet_from_a_model_file(tmp_path):
    case, _ = _case(shape=(12, 20, 24))
    cfg = ModelConfig(sequences=("t1", "flair"), architecture=Architecture(depth=2, base_features=4),
                      target_spacing=(3.0, 2.0, 2.0), patch_size=(8, 16, 16))
    torch.manual_seed(0)
    path = save_model(cfg, build_network(cfg), tmp_path / "m.mriseg")
    res = segment(case, path, device="cpu", postprocess=True)
    assert case.grid.mismatch(res.labels.grid) is None
    assert set(np.unique(res.labels.array)) <= {0, 1, 2, 3}
    res2 = segment(case, load_model(path), device="cpu", postprocess=True)
    np.testing.assert_array_equal(res.labels.array, res2.labels.array)


DEMO = __import__("pathlib").Path(__file__).resolve().parents[1] / "sample_data" / "demo_model.mriseg"


@pytest.fixture(scope="module")
def demo_segmentation():
    """An unseen 2 mm phantom on one grid, the demo model's labels of it and its window count."""
    if not DEMO.exists():
        pytest.skip("the demo model is made by scripts/train_demo_model.py")
    from napari_mriseg.core.phantom import make_phantom_case
    from napari_mriseg.core.resample import resample_to_grid

    pc = make_phantom_case(7001, spacing_mm=2.0, misalign=False)
    case = pc.case
    for name in case.misregistered():
        case = case.with_sequence(name, resample_to_grid(case[name], case.grid))
    windows = []
    res = segment(case, DEMO, device="cpu", progress=lambda done, total: windows.append(total))
    return pc, case, res.labels, windows[-1]


def test_demo_model_segments_an_unseen_phantom(demo_segmentation):
    from napari_mriseg.ml.metrics import evaluate

    pc, _, labels, _ = demo_segmentation
    assert labels.grid.mismatch(pc.truth.grid) is None
    assert evaluate(labels, pc.truth)["whole_tumour"]["dice"] > 0.8


def test_segment_one_slice_agrees_with_the_volume_and_leaves_the_rest_empty(demo_segmentation):
    _, case, labels, all_windows = demo_segmentation
    full = labels.array
    z = int(np.argwhere(full > 0)[:, 0].mean())
    windows = []
    one = segment(case, DEMO, roi=(slice(z, z + 1), slice(None), slice(None)),
                  progress=lambda done, total: windows.append(total)).labels.array
    assert (full[z] > 0).sum() > 50
    assert (one[z] == full[z]).mean() > 0.998  # same network, a window centred on the slice
    assert not np.delete(one, z, axis=0).any()
    assert windows[-1] * 2 <= all_windows  # one window deep: in-plane windows only


def test_precision_option_and_the_models_network_is_left_in_its_layout(monkeypatch):
    from napari_mriseg.core.errors import OptionError
    from napari_mriseg.ml import inference
    from napari_mriseg.ml.inference import sliding_window
    from napari_mriseg.ml.preprocess import head_mask, normalise

    case, _ = _case(shape=(12, 20, 24))
    cfg = ModelConfig(sequences=("t1", "flair"), architecture=Architecture(depth=2, base_features=4),
                      target_spacing=SPACING, patch_size=(8, 16, 16))
    torch.manual_seed(0)
    model = Model(cfg, build_network(cfg).eval())
    res = segment(case, model, device="cpu", return_probabilities=True)
    assert all(p.is_contiguous() for p in model.network.parameters())  # the layout change was on a copy
    # the same windows with the network as it is (default layout): the same labels
    x = np.stack([case[s].array.astype(np.float32) for s in cfg.sequences])
    mask = head_mask(x)
    normalise(x, cfg.normalisation, mask, out=x)
    from napari_mriseg.ml.preprocess import bounding_box

    box = bounding_box(mask)
    raw = sliding_window(np.ascontiguousarray(x[(slice(None), *box)]), model.network, cfg.patch_size_3d,
                         mask=mask[box], return_probabilities=True)
    probs = np.stack([res.probabilities[n].array for n in ("background", *cfg.labels)])
    np.testing.assert_allclose(probs[(slice(None), *box)], raw.probabilities, atol=1e-5)
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: False)
    with pytest.raises(OptionError, match="bf16"):
        segment(case, model, device="cpu", precision="bf16")
    with pytest.raises(OptionError, match="precision"):
        segment(case, model, device="cpu", precision="half")
