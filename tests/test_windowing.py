"""Window/level core: presets, conversions, DICOM tags, inside-head percentiles and histograms."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_mriseg.core import windowing as wl
from napari_mriseg.core.errors import InvalidImageError, OptionError
from napari_mriseg.core.registration import head_mask
from napari_mriseg.core.volume import Volume


@pytest.fixture(scope="module")
def phantom_t1() -> np.ndarray:
    from napari_mriseg.core.phantom import make_phantom_case

    return make_phantom_case(3, spacing_mm=4.0, misalign=False).case["t1"].array


def _ball(shape=(30, 40, 36), value=(200.0, 400.0), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 'head': a ball of values in ``value`` inside low noise (air), and its mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = np.array(shape) / 2
    inside = ((z - centre[0]) / 12) ** 2 + ((y - centre[1]) / 16) ** 2 + ((x - centre[2]) / 14) ** 2 <= 1
    a = rng.uniform(0, 8, shape).astype(np.float32)
    a[inside] = rng.uniform(*value, int(inside.sum()))
    return a, inside


def test_ct_presets_are_the_clinical_values():
    assert wl.CT_PRESETS == {
        "brain": (80.0, 40.0), "subdural": (200.0, 75.0), "stroke": (40.0, 40.0), "bone": (2800.0, 600.0),
        "lung": (1500.0, -600.0), "abdomen": (400.0, 50.0), "liver": (150.0, 30.0),
    }
    assert wl.preset_window("ct lung") == (1500.0, -600.0)
    assert wl.window_to_limits(*wl.preset_window("ct brain")) == (0.0, 80.0)
    assert wl.window_to_limits(*wl.preset_window("ct bone")) == (-800.0, 2000.0)
    assert set(wl.preset_names()) == {"mri 1-99%", "mri 0.5-99.5%", *(f"ct {n}" for n in wl.CT_PRESETS)}


def test_unknown_preset_lists_the_valid_ones_and_mri_needs_voxels():
    with pytest.raises(OptionError, match="'ct brain'.*got 'ct heart'"):
        wl.preset_window("ct heart")
    with pytest.raises(InvalidImageError, match="head_sample"):
        wl.preset_window("mri 1-99%")


def test_window_and_limits_convert_both_ways():
    assert wl.window_to_limits(400, 50) == (-150.0, 250.0)
    assert wl.limits_to_window(-150, 250) == (400.0, 50.0)
    for width, level in [(1.0, 0.0), (1500.0, -600.0), (0.25, 3.5)]:
        assert wl.limits_to_window(*wl.window_to_limits(width, level)) == pytest.approx((width, level))
    with pytest.raises(InvalidImageError, match="positive"):
        wl.window_to_limits(0, 40)
    with pytest.raises(InvalidImageError, match="low < high"):
        wl.limits_to_window(5, 5)


@pytest.mark.parametrize(("meta", "expected"), [
    ({"window_center": 40.0, "window_width": 80.0}, (80.0, 40.0)),
    ({"window_center": "40\\-600", "window_width": "80\\1500"}, (80.0, 40.0)),  # multi-valued tag
    ({"window_center": [300, 50], "window_width": [1500, 400]}, (1500.0, 300.0)),
    ({"window_center": 40.0}, None),
    ({"window_center": 40.0, "window_width": 0.0}, None),
    ({"window_center": "", "window_width": "80"}, None),
    ({}, None),
])
def test_dicom_window_tags(meta, expected):
    assert wl.dicom_window(meta) == expected


def test_dicom_tags_give_the_initial_window():
    a, _ = _ball()
    assert wl.initial_window(a, {"window_center": 300.0, "window_width": 200.0}) == (200.0, 300.0)
    # without tags: the 0.5-99.5 % window of the voxels inside the head
    width, level = wl.initial_window(a, {})
    lo, hi = np.percentile(a[head_mask(Volume(a)).array > 0], [0.5, 99.5])
    assert (width, level) == pytest.approx((hi - lo, (hi + lo) / 2))


def test_head_sample_is_the_head_mask_on_a_small_volume(phantom_t1):
    a = phantom_t1
    assert a.size <= wl.DEFAULT_MAX_VOXELS  # no sub-grid: the sample is exactly the head's voxels
    expected = np.sort(a[head_mask(Volume(a)).array > 0].astype(np.float32))
    sample = wl.head_sample(a)
    np.testing.assert_array_equal(np.sort(sample), expected)
    assert 0.1 * a.size < sample.size < 0.8 * a.size  # the air around the head is left out


def test_percentile_presets_match_numpy_inside_the_head(phantom_t1):
    a = phantom_t1
    head = a[head_mask(Volume(a)).array > 0]
    sample = wl.head_sample(a)
    for name, (p_lo, p_hi) in wl.MRI_PERCENTILE_PRESETS.items():
        lo, hi = np.percentile(head, [p_lo, p_hi])
        assert wl.preset_window(f"mri {name}", sample) == pytest.approx((hi - lo, (lo + hi) / 2))
    # the head's percentiles, not the whole volume's (air would pull the low end to ~0)
    assert np.percentile(head, 1) > np.percentile(a, 1) + 10


def test_head_sample_of_a_synthetic_ball_drops_the_air():
    a, inside = _ball()
    sample = wl.head_sample(a)
    assert sample.size == int(inside.sum())
    assert sample.min() >= 200.0


def test_ct_head_is_everything_above_air():
    a, inside = _ball(value=(-100.0, 1500.0))
    a[~inside] = -1024.0
    assert wl.looks_like_ct(a)
    sample = wl.head_sample(a)
    assert sample.size == int(inside.sum()) and sample.min() >= -100.0


def test_blank_image_falls_back_to_every_voxel():
    a = np.zeros((8, 9, 10), np.float32)
    assert wl.head_sample(a).size == a.size
    assert wl.percentile_window(wl.head_sample(a), 1, 99) == (1.0, 0.0)
    nan = np.full((4, 4, 4), np.nan, np.float32)
    assert wl.head_sample(nan).size == 0
    with pytest.raises(InvalidImageError, match="no finite voxel"):
        wl.percentile_window(wl.head_sample(nan), 1, 99)


def test_large_volume_is_read_on_a_sub_grid_fast():
    rng = np.random.default_rng(1)
    a = np.zeros((180, 240, 240), np.int16)  # a 1 mm head is ~9-10 million voxels
    a[20:160, 30:210, 30:210] = rng.integers(200, 1100, (140, 180, 180), dtype=np.int16)
    assert wl.sample_step(a.shape) == 3
    t0 = time.perf_counter()
    sample = wl.head_sample(a)
    elapsed = time.perf_counter() - t0
    assert sample.size == int(np.count_nonzero(a[::3, ::3, ::3]))
    assert elapsed < 1.0, f"head_sample took {elapsed:.2f} s on {a.size / 1e6:.1f} M voxels"
    lo, hi = np.percentile(a[20:160, 30:210, 30:210], [1, 99])
    width, level = wl.percentile_window(sample, 1, 99)
    assert level - width / 2 == pytest.approx(lo, abs=15) and level + width / 2 == pytest.approx(hi, abs=15)


def test_histogram_counts_and_edges():
    values = np.array([0.0, 0.5, 1.0, 1.0, 2.5, 3.9, 4.0, np.nan, 9.0])
    hist = wl.histogram(values, bins=4, value_range=(0.0, 4.0))
    np.testing.assert_array_equal(hist.edges, [0.0, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(hist.counts, [2, 2, 1, 2])  # 9.0 is outside, NaN ignored
    np.testing.assert_array_equal(hist.centres, [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(hist.heights(), [1.0, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(hist.heights(log=True), np.log1p([2, 2, 1, 2]) / np.log1p(2))
    default = wl.histogram(values, bins=9)
    assert default.edges[0] == 0.0 and default.edges[-1] == 9.0 and default.counts.sum() == 8
    assert wl.histogram(np.full(5, 7.0), bins=2).counts.sum() == 5  # uniform: a span of 1 around it
    with pytest.raises(InvalidImageError):
        wl.histogram(values, bins=0)


def test_histogram_of_the_head_counts_every_head_voxel(phantom_t1):
    sample = wl.head_sample(phantom_t1)
    hist = wl.histogram(sample, bins=64)
    assert hist.counts.sum() == sample.size
    assert hist.edges[0] == sample.min() and hist.edges[-1] == sample.max()


def test_drag_moves_window_and_level_by_the_window_width_per_256_pixels():
    assert wl.drag_window(80.0, 40.0, 256, 0, data_range=4000) == pytest.approx((160.0, 40.0))
    assert wl.drag_window(80.0, 40.0, -128, 64, data_range=4000) == pytest.approx((40.0, 60.0))
    assert wl.drag_window(80.0, 40.0, 0, -256, data_range=4000) == pytest.approx((80.0, -40.0))
    # never narrower than 1e-4 of the data range, and never stuck at that floor
    width, _ = wl.drag_window(80.0, 40.0, -10_000, 0, data_range=4000)
    assert width == pytest.approx(0.4)
    assert wl.drag_window(width, 40.0, 256, 0, data_range=4000)[0] == pytest.approx(0.8)
