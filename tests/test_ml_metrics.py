"""Metrics: hand-checked tiny cases, empty masks, spacing, and agreement with MONAI and MedPy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from napari_mriseg.core.errors import GeometryMismatchError
from napari_mriseg.core.volume import Volume
from napari_mriseg.ml.metrics import binary_metrics, evaluate, evaluate_folders


def test_tiny_literal_masks():
    p = np.zeros((1, 4, 4), bool)
    t = np.zeros((1, 4, 4), bool)
    p[0, :2, :2] = True          # 4 voxels
    t[0, :2, :3] = True          # 6 voxels, 4 shared
    m = binary_metrics(p, t, (1.0, 1.0, 1.0))
    assert m["dice"] == pytest.approx(8 / 10)
    assert m["jaccard"] == pytest.approx(4 / 6)
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["precision"] == 1.0
    assert m["specificity"] == 1.0
    assert m["hd"] == pytest.approx(1.0)
    assert m["volume_error_ml"] == pytest.approx(-2e-3)


def test_spacing_is_honoured():
    p = np.zeros((10, 10, 10), bool)
    p[2:5, 2:5, 2:5] = True
    t = np.roll(p, 2, axis=0)    # shifted 2 voxels along Z
    assert binary_metrics(p, t, (3.0, 1.0, 1.0))["hd"] == pytest.approx(6.0)
    assert binary_metrics(p, t, (1.0, 1.0, 0.5))["hd"] == pytest.approx(2.0)
    t2 = np.roll(p, 2, axis=2)   # along X
    assert binary_metrics(p, t2, (1.0, 1.0, 0.5))["hd"] == pytest.approx(1.0)
    assert binary_metrics(p, p, (2.0, 2.0, 2.0))["volume_pred_ml"] == pytest.approx(27 * 8 / 1000)


def test_empty_masks_are_defined():
    e = np.zeros((4, 4, 4), bool)
    f = e.copy()
    f[1, 1, 1] = True
    both = binary_metrics(e, e, (1, 1, 1))
    assert both["dice"] == 1 and both["hd95"] == 0 and both["assd"] == 0 and both["sensitivity"] == 1
    miss = binary_metrics(e, f, (1, 1, 1))
    assert miss["dice"] == 0 and miss["sensitivity"] == 0 and math.isnan(miss["precision"])
    assert math.isinf(miss["hd95"]) and math.isinf(miss["assd"])
    extra = binary_metrics(f, e, (1, 1, 1))
    assert extra["dice"] == 0 and math.isnan(extra["sensitivity"]) and extra["precision"] == 0


def test_labels_and_brats_regions():
    t = np.zeros((6, 6, 6), np.uint8)
    t[1:5, 1:5, 1:5] = 2
    t[2:4, 2:4, 2:4] = 3
    t[2, 2, 2] = 1
    p = t.copy()
    p[p == 1] = 3
    r = evaluate(p, t, (1, 1, 1))
    assert r["whole_tumour"]["dice"] == 1.0
    assert r["tumour_core"]["dice"] == 1.0
    assert r["necrotic"]["dice"] == 0.0
    assert r["enhancing"]["dice"] == pytest.approx(2 * 7 / 15)
    assert r["enhancing_tumour"] == r["enhancing"]


def test_volumes_must_share_a_grid():
    a = Volume(np.zeros((3, 3, 3), np.uint8), kind="label")
    b = Volume(np.zeros((3, 3, 3), np.uint8), spacing=(2, 1, 1), kind="label")
    with pytest.raises(GeometryMismatchError):
        evaluate(a, b)
    r = evaluate(b, b)
    assert r["whole_tumour"]["dice"] == 1.0


def _blob_pair(seed: int, shape=(40, 48, 44)):
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    t = noise > np.percentile(noise, 93)
    p = ndimage.binary_dilation(t, iterations=1) if seed % 2 else ndimage.binary_erosion(t)
    p = p ^ (ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0.25)
    p[:3] = False
    return p, t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_monai(seed):
    torch = pytest.importorskip("torch")
    mm = pytest.importorskip("monai.metrics")
    p, t = _blob_pair(seed)
    spacing = (2.5, 1.0, 0.8)
    ours = binary_metrics(p, t, spacing)
    yp = torch.from_numpy(p)[None, None].float()
    yt = torch.from_numpy(t)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = float(mm.compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=spacing))
        hd = float(mm.compute_hausdorff_distance(yp, yt, include_background=True, spacing=spacing))
        assd = float(mm.compute_average_surface_distance(yp, yt, include_background=True, symmetric=True,
                                                         spacing=spacing))
        dice = float(mm.compute_dice(yp, yt, include_background=True))
    assert ours["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert ours["hd"] == pytest.approx(hd, rel=1e-5)
    assert ours["assd"] == pytest.approx(assd, rel=1e-5)
    assert ours["dice"] == pytest.approx(dice, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_medpy(seed):
    mb = pytest.importorskip("medpy.metric.binary")
    p, t = _blob_pair(seed)
    spacing = (2.5, 1.0, 0.8)
    ours = binary_metrics(p, t, spacing)
    assert ours["dice"] == pytest.approx(mb.dc(p, t))
    assert ours["jaccard"] == pytest.approx(mb.jc(p, t))
    assert ours["sensitivity"] == pytest.approx(mb.sensitivity(p, t))
    assert ours["specificity"] == pytest.approx(mb.specificity(p, t))
    assert ours["precision"] == pytest.approx(mb.precision(p, t))
    assert ours["hd"] == pytest.approx(mb.hd(p, t, voxelspacing=spacing))
    # ASSD: MedPy averages the two directed means; ours pools the distances. Both from the same
    # directed distances, so their directed means agree exactly:
    from napari_mriseg.ml.metrics import surface_distances

    d_pt, d_tp = surface_distances(p, t, spacing)
    assert d_pt.mean() == pytest.approx(mb.asd(p, t, voxelspacing=spacing))
    assert d_tp.mean() == pytest.approx(mb.asd(t, p, voxelspacing=spacing))
    # HD95: MedPy pools both directions, so it can only be <= the max of the directed percentiles
    assert mb.hd95(p, t, voxelspacing=spacing) <= ours["hd95"] + 1e-9


def test_evaluate_folders_writes_csv(tmp_path):
    from napari_mriseg.core.io import write_volume

    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    for i in range(2):
        t = np.zeros((8, 9, 10), np.uint8)
        t[2:6, 2:6, 2:7] = 2
        t[3:5, 3:5, 3:5] = 3
        p = t.copy()
        p[2] = 0 if i else p[2]
        write_volume(Volume(t, (2, 1, 1), kind="label"), tmp_path / "truth" / f"case{i}.nii.gz")
        write_volume(Volume(p, (2, 1, 1), kind="label"), tmp_path / "pred" / f"case{i}.nii.gz")
    res = evaluate_folders(tmp_path / "pred", tmp_path / "truth", tmp_path / "out")
    assert res["cases"]["case0"]["whole_tumour"]["dice"] == 1.0
    assert res["cases"]["case1"]["whole_tumour"]["dice"] < 1.0
    assert (tmp_path / "out" / "case0.csv").is_file() and (tmp_path / "out" / "summary.csv").is_file()
    lines = (tmp_path / "out" / "case1.csv").read_text().splitlines()
    assert lines[0].startswith("region,volume_pred_ml") or "dice" in lines[0]
    assert len(lines) == 1 + 6
    row = next(r for r in res["summary"] if r["region"] == "whole_tumour" and r["metric"] == "dice")
    assert row["n"] == 2 and 0.5 < row["mean"] < 1.0
