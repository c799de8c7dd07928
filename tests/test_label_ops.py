"""label_ops: each correction on small synthetic shapes whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mriseg.core import label_ops as ops
from napari_mriseg.core.errors import MriSegError, OptionError


def _disc(shape: tuple[int, int], radius: float, centre: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius * radius


def _ball(shape, spacing, centre, radius_mm) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True)) <= radius_mm ** 2


def _radius(mask2d: np.ndarray) -> float:
    return float(np.sqrt(mask2d.sum() / np.pi))


# ---------------------------------------------------------------------------- interpolation
def test_interpolation_between_two_discs_gives_the_intermediate_discs():
    labels = np.zeros((9, 64, 64), np.uint8)
    labels[0][_disc((64, 64), 8, (32, 32))] = 2
    labels[8][_disc((64, 64), 20, (32, 32))] = 2
    before = labels.copy()
    out = ops.interpolate_label(labels, 2, axis=0, spacing=(3.0, 1.0, 1.0))
    np.testing.assert_array_equal(labels, before)  # the input is untouched
    for z in range(9):
        expected = 8 + 12 * z / 8
        assert abs(_radius(out[z] == 2) - expected) < 1.0, z
        # and it is a disc: every pixel of the expected disc shrunk by a voxel is in
        assert (out[z] == 2)[_disc((64, 64), expected - 1, (32, 32))].all()
    assert set(np.unique(out)) == {0, 2}


def test_interpolation_follows_a_moving_shape_along_any_axis():
    labels = np.zeros((40, 30, 7), np.uint8)
    labels[:, :, 0][_disc((40, 30), 8, (14, 12))] = 1
    labels[:, :, 6][_disc((40, 30), 8, (22, 16))] = 1  # moved, still overlapping
    out = ops.interpolate_label(labels, 1, axis=2, spacing=(1.0, 1.0, 2.0))
    zz, yy = np.nonzero(out[:, :, 3] == 1)
    assert abs(zz.mean() - 18) <= 1 and abs(yy.mean() - 14) <= 1  # half way
    assert abs(_radius(out[:, :, 3] == 1) - 8) < 1.0


def test_interpolation_fills_only_empty_voxels_by_default_and_only_between_drawn_slices():
    labels = np.zeros((7, 20, 20), np.uint8)
    labels[1][_disc((20, 20), 5, (10, 10))] = 3
    labels[5][_disc((20, 20), 5, (10, 10))] = 3
    labels[3, 8:12, 8:12] = 1  # another structure in the way
    out = ops.interpolate_label(labels, 3, axis=0)
    assert (out[3, 8:12, 8:12] == 1).all()
    assert (out[3] == 3).sum() == (labels[1] == 3).sum() - 16
    assert not out[0].any() and not out[6].any()  # nothing outside the drawn range
    forced = ops.interpolate_label(labels, 3, axis=0, only_empty=False)
    assert (forced[3, 8:12, 8:12] == 3).all()


def test_interpolation_needs_two_drawn_slices():
    labels = np.zeros((5, 8, 8), np.uint8)
    labels[2, 3:5, 3:5] = 1
    np.testing.assert_array_equal(ops.interpolate_label(labels, 1, axis=0), labels)
    with pytest.raises(OptionError, match="axis"):
        ops.interpolate_label(labels, 1, axis=3)


# ---------------------------------------------------------------------------- holes, islands, components
def test_fill_holes_3d_and_per_slice():
    labels = np.zeros((7, 12, 12), np.uint8)
    labels[1:6, 2:10, 2:10] = 2
    labels[2:5, 4:8, 4:8] = 0  # a closed cavity
    labels[3, 5, 5] = 1  # another label inside the cavity
    out = ops.fill_holes(labels, 2)
    assert (out[2:5, 4:8, 4:8] == 2).all() and (out == 2).sum() == 5 * 64
    assert out[3, 5, 5] == 2  # proposed; the policy decides whether label 1 may be overwritten
    idx, vals = ops.policy_change(labels, out, policy="background", selected=2)
    assert len(idx[0]) == 3 * 16 - 1 and (vals == 2).all()

    tube = np.zeros((5, 12, 12), np.uint8)
    tube[:, 2:10, 2:10] = 1
    tube[:, 4:8, 4:8] = 0  # open at both ends: no 3D hole, a hole in every axial slice
    np.testing.assert_array_equal(ops.fill_holes(tube, 1), tube)
    assert (ops.fill_holes(tube, 1, axis=0)[:, 4:8, 4:8] == 1).all()
    assert (ops.fill_holes(tube, 1, axis=1) == tube).all()  # across the tube's side: no holes


def test_remove_islands_by_volume_in_mm3_on_anisotropic_voxels():
    spacing = (3.0, 1.0, 0.5)  # 1.5 mm^3 per voxel
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[1:3, 1:4, 1:4] = 1  # 18 voxels = 27 mm^3
    labels[5:8, 10:15, 10:15] = 1  # 75 voxels = 112.5 mm^3
    labels[8, 1, 1] = 1  # 1 voxel = 1.5 mm^3
    labels[0, 18, 18] = 2  # another label's speck
    out = ops.remove_islands(labels, 1, min_volume_mm3=100.0, spacing=spacing)
    assert (out == 1).sum() == 75 and out[0, 18, 18] == 2
    out = ops.remove_islands(labels, 1, min_volume_mm3=27.0, spacing=spacing)  # strictly smaller goes
    assert (out == 1).sum() == 75 + 18
    out = ops.remove_islands(labels, None, min_volume_mm3=2.0, spacing=spacing)
    assert (out == 1).sum() == 93 and (out == 2).sum() == 0
    # diagonal neighbours are one piece with corner connectivity, separate ones with face connectivity
    diag = np.zeros((3, 3, 3), np.uint8)
    diag[0, 0, 0] = diag[1, 1, 1] = 1
    assert (ops.remove_islands(diag, 1, min_volume_mm3=2, spacing=(1, 1, 1)) == 1).sum() == 2
    assert (ops.remove_islands(diag, 1, min_volume_mm3=2, spacing=(1, 1, 1), connectivity=1) == 1).sum() == 0


def test_keep_largest_component():
    labels = np.zeros((6, 10, 10), np.uint8)
    labels[0:2, 0:2, 0:2] = 3
    labels[3:6, 5:9, 5:9] = 3
    labels[0, 9, 9] = 1
    out = ops.keep_largest_component(labels, 3)
    assert (out == 3).sum() == 48 and out[0, 0, 0] == 0 and out[0, 9, 9] == 1


# ---------------------------------------------------------------------------- margins
def test_grow_by_2mm_on_1x1x3mm_voxels_is_2_voxels_in_plane_and_1_through_plane():
    labels = np.zeros((11, 21, 21), np.uint8)
    labels[5, 10, 10] = 1
    out = ops.grow(labels, 1, margin_mm=2.0, spacing=(3.0, 1.0, 1.0))
    mask = out == 1
    np.testing.assert_array_equal(np.flatnonzero(mask[:, 10, 10]), [4, 5, 6])  # 1.5 mm in, 4.5 mm out
    np.testing.assert_array_equal(np.flatnonzero(mask[5, 10, :]), [8, 9, 10, 11, 12])  # 0.5, 1.5 in; 2.5 out
    np.testing.assert_array_equal(np.flatnonzero(mask[5, :, 10]), [8, 9, 10, 11, 12])
    assert not mask[4, 10, 12]  # (1.5, 1.5) mm from the surface: 2.1 mm
    # 1 mm: the 3 x 3 pixels around it (corners 0.71 mm from the surface), none through-plane
    one = ops.grow(labels, 1, margin_mm=1.0, spacing=(3.0, 1.0, 1.0)) == 1
    assert one.sum() == 9 and one[5, 9:12, 9:12].all() and not one[4, 10, 10]


def test_grow_then_shrink_a_box_and_the_policy_protects_other_labels():
    spacing = (2.0, 1.0, 1.0)
    labels = np.zeros((12, 30, 30), np.uint8)
    labels[4:8, 10:20, 10:20] = 2
    labels[4:8, 21:25, 10:20] = 1  # a neighbour 1 voxel away in x... y
    grown = ops.grow(labels, 2, margin_mm=2.0, spacing=spacing)
    g2 = grown == 2
    assert g2[3:9, 10:20, 10:20].all() and not g2[2].any() and not g2[9].any()  # 1 slice each way
    assert g2[4:8, 8:22, 10:20].all() and g2[4:8, 10:20, 8:22].all() and not g2[4:8, 7].any()  # 2 pixels
    assert not g2[4, 8, 8] and g2[4, 9, 9]  # in-plane corners rounded: 2.1 mm vs 0.7 mm
    assert (grown[4:8, 21, 10:20] == 2).all()  # proposed over label 1 ...
    idx, vals = ops.policy_change(labels, grown, policy="background", selected=2)
    applied = labels.copy()
    applied[idx] = vals
    assert (applied == 1).sum() == (labels == 1).sum()  # ... but the policy keeps it
    assert (applied == 2).sum() < (grown == 2).sum()
    shrunk = ops.shrink(grown, 2, margin_mm=2.0, spacing=spacing)
    np.testing.assert_array_equal(shrunk == 2, labels == 2)  # the box comes back exactly
    assert (shrunk == 1).sum() == (grown == 1).sum() < (labels == 1).sum()  # shrink only erases
    np.testing.assert_array_equal(ops.grow(grown, 2, margin_mm=-2.0, spacing=spacing), shrunk)


def test_shrink_does_not_erode_from_the_array_border():
    labels = np.ones((4, 6, 6), np.uint8)
    np.testing.assert_array_equal(ops.shrink(labels, 1, margin_mm=1.0, spacing=(1, 1, 1)), labels)


# ---------------------------------------------------------------------------- the policy
def test_overwrite_policy():
    before = np.array([0, 0, 1, 1, 2, 2, 3], np.uint8).reshape(1, 1, 7)
    proposed = np.array([2, 0, 2, 0, 0, 2, 0], np.uint8).reshape(1, 1, 7)
    def applied(policy):
        idx, vals = ops.policy_change(before, proposed, policy=policy, selected=2)
        out = before.copy()
        out[idx] = vals
        return out.ravel().tolist()
    assert applied("all") == [2, 0, 2, 0, 0, 2, 0]
    assert applied("selected") == [2, 0, 1, 1, 0, 2, 3]  # only 0 and 2 voxels changed
    assert applied("background") == [2, 0, 1, 1, 0, 2, 3]  # write onto 0; erase only label 2
    proposed[0, 0, 2] = 0  # erasing label 1 is not allowed unless "all"
    assert ops.policy_change(before, proposed, policy="selected", selected=2)[0][2].tolist() == [0, 4]
    with pytest.raises(OptionError, match="'background', 'selected', 'all'"):
        ops.allowed(before, proposed, policy="everything", selected=2)
    with pytest.raises(OptionError, match="selected label"):
        ops.allowed(before, proposed, policy="background")


# ---------------------------------------------------------------------------- logic
def test_combine_labels_with_the_prediction():
    labels = np.zeros((1, 1, 6), np.uint8)
    labels[0, 0, :3] = 1
    pred = np.zeros_like(labels)
    pred[0, 0, 2:5] = 1
    union = ops.combine_labels(labels, "union", 1, 1, target=1, other=pred)
    assert union.ravel().tolist() == [1, 1, 1, 1, 1, 0]
    inter = ops.combine_labels(labels, "intersection", 1, 1, target=1, other=pred)
    assert inter.ravel().tolist() == [0, 0, 1, 0, 0, 0]
    sub = ops.combine_labels(labels, "subtract", 1, 1, target=3, other=pred)
    assert sub.ravel().tolist() == [3, 3, 1, 0, 0, 0]  # A keeps what is not moved into the target
    assert ops.combine_labels(labels, "subtract", 1, 1, target=1, other=pred).ravel().tolist() == [1, 1, 0, 0, 0, 0]
    xor = ops.combine_labels(labels, "xor", 1, 1, target=2, other=pred)
    assert xor.ravel().tolist() == [2, 2, 1, 2, 2, 0]
    two = np.array([1, 1, 2, 2, 0, 0], np.uint8).reshape(1, 1, 6)
    assert ops.combine_labels(two, "union", 1, 2, target=3).ravel().tolist() == [3, 3, 3, 3, 0, 0]
    with pytest.raises(OptionError, match="logical operation"):
        ops.combine_labels(two, "and", 1, 2, target=3)
    with pytest.raises(OptionError, match="one grid"):
        ops.combine_labels(two, "union", 1, 2, target=3, other=np.zeros((2, 2, 2), np.uint8))


# ---------------------------------------------------------------------------- painting, growing
def test_brush_disc_in_mm_on_anisotropic_pixels():
    idx = ops.brush_disc((5, 40, 40), (2, 20, 20), radius_mm=4.0, spacing=(5.0, 1.0, 2.0), axes=(1, 2))
    assert set(idx[0].tolist()) == {2}
    assert idx[1].min() == 16 and idx[1].max() == 24  # 4 pixels of 1 mm
    assert idx[2].min() == 18 and idx[2].max() == 22  # 2 pixels of 2 mm
    sag = ops.brush_disc((5, 40, 40), (2, 20, 20), radius_mm=5.0, spacing=(5.0, 1.0, 2.0), axes=(0, 1))
    assert set(sag[2].tolist()) == {20} and sorted(set(sag[0].tolist())) == [1, 2, 3]
    assert ops.brush_disc((5, 40, 40), (9, 20, 20), radius_mm=4.0, spacing=(1, 1, 1))[0].size == 0


def test_masked_brush_paints_only_within_the_intensity_range():
    labels = np.zeros((3, 20, 20), np.uint8)
    intensity = np.zeros((3, 20, 20), np.float32)
    intensity[:, :, 10:] = 500.0  # bright right half
    labels[1, 10, 12] = 2
    idx, vals = ops.masked_brush(labels, intensity, (1, 10, 10), label=1, radius_mm=3.0, spacing=(1, 1, 1),
                                 lo=400, hi=600, policy="background")
    assert (idx[2] >= 10).all() and (idx[0] == 1).all() and (vals == 1).all()
    dy, dx = np.mgrid[-3:4, -3:4]
    right_half = int(((dy ** 2 + dx ** 2 <= 9) & (dx >= 0)).sum())
    assert right_half == 18 and len(idx[0]) == right_half - 1  # minus the label-2 pixel
    assert not any((z, y, x) == (1, 10, 12) for z, y, x in zip(*idx, strict=True))
    with pytest.raises(OptionError, match="labels grid"):
        ops.masked_brush(labels, intensity[:2], (1, 10, 10), label=1, radius_mm=3.0, spacing=(1, 1, 1),
                         lo=0, hi=1)


def test_region_grow_from_a_seed_with_tolerance_radius_and_slice():
    rng = np.random.default_rng(3)
    intensity = rng.normal(100.0, 5.0, (12, 30, 30)).astype(np.float32)
    intensity[3:9, 5:15, 5:15] += 300.0  # a bright box ...
    intensity[3:9, 20:25, 20:25] += 300.0  # ... and a bright one not connected to it
    region = ops.region_grow(intensity, (5, 10, 10), tolerance=60.0, spacing=(2.0, 1.0, 1.0))
    assert region.sum() == 6 * 10 * 10 and region[3:9, 5:15, 5:15].all()
    small = ops.region_grow(intensity, (5, 10, 10), tolerance=60.0, spacing=(2.0, 1.0, 1.0), max_radius_mm=3.0)
    assert small.sum() == int(_ball((12, 30, 30), (2.0, 1.0, 1.0), (5, 10, 10), 3.0).sum())
    flat = ops.region_grow(intensity, (5, 10, 10), tolerance=60.0, spacing=(2.0, 1.0, 1.0), slice_axis=0)
    assert flat.sum() == 100 and flat[5].sum() == 100
    assert ops.region_grow(intensity, (5, 10, 10), tolerance=1e-3, spacing=(1, 1, 1)).sum() <= 1
    with pytest.raises(MriSegError, match="outside"):
        ops.region_grow(intensity, (50, 0, 0), tolerance=1, spacing=(1, 1, 1))


# ---------------------------------------------------------------------------- statistics
def test_sphere_volume_in_mm3_on_anisotropic_spacing_within_3_percent():
    spacing = (2.5, 0.8, 1.1)
    sphere = _ball((40, 60, 50), spacing, (20, 30, 25), 15.0).astype(np.uint8)
    (row,) = ops.label_stats(sphere, spacing)
    exact = 4.0 / 3.0 * np.pi * 15.0 ** 3
    assert abs(row.volume_mm3 - exact) / exact < 0.03
    assert row.volume_ml == pytest.approx(row.volume_mm3 / 1000.0)
    assert row.voxels == sphere.sum() and row.dice is None


def test_stats_spleen_volume_and_agreement_with_the_prediction():
    labels = np.zeros((30, 40, 40), np.uint8)
    labels.reshape(-1)[:12084] = 1  # 12084 voxels of 2 mm cubed = the spleen's 96672 mm^3
    rows = ops.label_stats(labels, (2.0, 2.0, 2.0), reference=labels, include=(1, 2, 3))
    assert [r.label for r in rows] == [1, 2, 3]
    assert rows[0].volume_mm3 == pytest.approx(96672.0) and rows[0].volume_ml == pytest.approx(96.672)
    assert rows[0].dice == 1.0 and rows[0].volume_change_pct == 0.0
    assert rows[1].voxels == 0 and rows[1].dice == 1.0 and rows[1].volume_change_pct is None

    pred = np.zeros((4, 4, 4), np.uint8)
    pred[0:2] = 2  # 32 voxels
    corrected = pred.copy()
    corrected[1] = 0  # 16 removed
    corrected[3, 0, 0] = 3
    rows = {r.label: r for r in ops.label_stats(corrected, (1, 1, 1), reference=pred)}
    assert rows[2].dice == pytest.approx(2 * 16 / (16 + 32))
    assert rows[2].volume_change_mm3 == -16 and rows[2].volume_change_pct == pytest.approx(-50.0)
    assert rows[3].dice == 0.0 and rows[3].reference_voxels == 0 and rows[3].volume_change_pct is None
    assert ops.dice(pred == 2, pred == 2) == 1.0 and ops.dice(pred == 9, pred == 9) == 1.0


def test_operations_never_mutate_their_input():
    labels = np.zeros((6, 12, 12), np.uint8)
    labels[1:5, 3:9, 3:9] = 1
    labels[2, 5, 5] = 0
    labels[5, 0, 0] = 1
    ref = labels.copy()
    ops.fill_holes(labels, 1)
    ops.remove_islands(labels, 1, min_volume_mm3=5, spacing=(1, 1, 1))
    ops.keep_largest_component(labels, 1)
    ops.grow(labels, 1, margin_mm=2, spacing=(1, 1, 1))
    ops.shrink(labels, 1, margin_mm=1, spacing=(1, 1, 1))
    ops.combine_labels(labels, "union", 1, 2, target=2)
    ops.interpolate_label(labels, 1, axis=1)
    np.testing.assert_array_equal(labels, ref)


def test_reviewed_fraction():
    assert ops.reviewed_fraction(None) == 0.0
    mask = np.zeros((4, 5, 5), bool)
    mask[1] = True
    assert ops.reviewed_fraction(mask) == 0.25
