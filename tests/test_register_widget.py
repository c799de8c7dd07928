"""The 'Co-register' panel: register in a worker, replace layers, check by eye, cancel, undo, save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_mriseg._napari import _register_widget as mod
from napari_mriseg._napari._register_widget import CHECK_LAYER, RegisterWidget, checkerboard, fade
from napari_mriseg._napari.layers import case_layer_data, layer_to_volume
from napari_mriseg._napari.views import set_plane
from napari_mriseg.core.phantom import make_phantom_case
from napari_mriseg.core.registration_quality import mask_points, target_registration_error, transform_points
from napari_mriseg.core.resample import resample_to_grid

from .conftest import keep_screenshot

pytestmark = pytest.mark.gui
SHOTS = Path("/tmp/shots/register")
MOVING = ("t1c", "t2", "flair")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom_case(7, spacing_mm=3.0, misalign=True)  # t2 6 mm and flair 9 mm slices


def _open(viewer, case, qtbot=None) -> RegisterWidget:
    """Dock the panel, then show ``case`` as the Load case panel does (with ``qtbot``: wait until
    the panel is drawn, for screenshots)."""
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Co-register", area="right")
    for data, kwargs, kind in case_layer_data(case):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget.workspace.set_case(case)
    set_plane(viewer, "axial")
    if qtbot is not None:
        qtbot.waitUntil(widget.isVisible, timeout=10000)
    return widget


def _register(qtbot, widget) -> None:
    assert widget.register() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)


def _shot(viewer, name: str, centre, framing=None) -> tuple[np.ndarray, tuple]:
    """Screenshot of the whole window, axial slice through ``centre`` (world mm); ``framing``
    (camera centre and zoom, as returned) repeats an earlier shot's."""
    import imageio.v3 as iio

    from napari_mriseg._napari.views import camera

    cam = camera(viewer)
    if framing is None:
        viewer.reset_view()
        framing = (tuple(cam.center), cam.zoom)
    cam.center, cam.zoom = framing
    viewer.dims.point = tuple(centre)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    keep_screenshot(path)
    return iio.imread(path), framing


def _head_diff(widget) -> float:
    """Mean |reference - compared| (both 0..1) over the reference's head: small when aligned."""
    cache = widget._check_images()
    head = cache.reference > 0.1
    return float(np.abs(cache.reference - cache.moving)[head].mean())


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask].astype(float), b[mask].astype(float))[0, 1])


def test_register_replaces_layers_on_the_reference_grid_and_undo_restores_them(make_napari_viewer, qtbot, phantom):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1500, 950)
    case = phantom.case
    widget = _open(viewer, case, qtbot)
    viewer.layers["t2"].visible = False
    viewer.layers["flair"].contrast_limits = (40.0, 900.0)
    viewer.layers["t1c"].colormap = "magma"
    names_before = [ly.name for ly in viewer.layers]
    originals = {n: viewer.layers[n] for n in ("t1", *MOVING)}
    saved = {n: (ly.data.copy(), np.array(ly.scale), np.array(ly.translate), ly.affine.affine_matrix.copy(),
                 tuple(ly.contrast_limits), ly.colormap.name, ly.visible) for n, ly in originals.items()}
    assert widget.moving_names() == list(MOVING) and widget.reference.currentText() == "t1"

    # the check, before: a checkerboard of t1 and the (misaligned) t1c on the t1 grid
    ref = case["t1"]
    # a voxel centre of t1: napari snaps the slider to its own steps, within half a voxel of it
    centre = ref.grid.index_to_world(np.round(np.argwhere(ref.array > 0.2 * ref.array.max()).mean(0) + [4, 0, 0]))
    widget.compare.setCurrentText("t1c")
    widget.mode.setCurrentText("fade")
    widget.check_btn.setChecked(True)
    shot, framing = _shot(viewer, "register_before_fade.png", centre)
    assert shot[..., :3].std() > 20
    widget.mode.setCurrentText("checkerboard")
    widget.square.setValue(24)
    check_before = viewer.layers[CHECK_LAYER].data.copy()
    diff_before = _head_diff(widget)
    shot, _ = _shot(viewer, "register_before_checkerboard.png", centre, framing)
    assert shot[..., :3].std() > 20

    seen: list[int] = []
    widget.progress.valueChanged.connect(seen.append)
    _register(qtbot, widget)
    assert widget.status.text().startswith("registered t1c, t2, flair onto t1"), widget.status.text()
    assert max(seen) > 0  # the progress bar moved while the worker ran

    reg = widget.workspace.registration
    ref_grid = case["t1"].grid
    assert reg is not None and widget.workspace.case is reg.case
    assert [ly.name for ly in viewer.layers] == names_before + [CHECK_LAYER]  # same names, same order
    assert viewer.layers["t1"] is originals["t1"]  # the reference is untouched
    brain = phantom.tissues.with_array(np.isin(phantom.tissues.array, (1, 2)).astype(np.uint8))
    points = mask_points(brain, max_points=3000)
    import SimpleITK as sitk

    for n in MOVING:
        layer = viewer.layers[n]
        assert layer is not originals[n]
        vol = layer_to_volume(layer)
        assert vol.grid.mismatch(ref_grid) is None
        assert np.array_equal(vol.array, reg.results[n].volume.array)
        assert (tuple(layer.contrast_limits), layer.colormap.name, layer.visible) == saved[n][4:]
        tre = target_registration_error(reg.results[n].transform, phantom.transform(n), points).mean()
        start = target_registration_error(sitk.Euler3DTransform(), phantom.transform(n), points).mean()
        assert tre < 2.5 and tre < 0.4 * start, (n, tre, start)
    # t1c now correlates better with t1 than it did on the scanner's alignment
    head = case["t1"].array > 0.1 * case["t1"].array.max()
    native_on_ref = resample_to_grid(case["t1c"], ref_grid).array
    assert _corr(case["t1"].array, reg.case["t1c"].array, head) > _corr(case["t1"].array, native_on_ref, head) + 0.1

    # the table lists each transform with figures close to the known motion
    table = widget.table_figures()
    assert list(table) == list(MOVING)
    for n in MOVING:
        rot = [float(table[n][f"rotation {a} (°)"]) for a in "xyz"]
        assert np.allclose(rot, phantom.transforms[n]["rotation_deg"], atol=1.5), (n, rot)
        shift = [float(table[n][f"translation {a} (mm)"]) for a in "xyz"]
        assert np.allclose(shift, reg.results[n].transform.GetTranslation(), atol=0.006)
        assert float(table[n]["max corner shift (mm)"]) == pytest.approx(reg.results[n].quality.max_corner_shift_mm,
                                                                          abs=0.006)
        assert float(table[n]["final metric"]) < float(table[n]["identity metric"])
        assert table[n]["check"] == "ok" and table[n]["B-spline max (mm)"] == "0.00"
    assert widget.undo_btn.isEnabled() and widget.save_btn.isEnabled()

    # the check, after: same controls, now on the registered t1c: the squares line up
    diff_after = _head_diff(widget)
    assert diff_after < 0.75 * diff_before, (diff_after, diff_before)
    assert not np.array_equal(viewer.layers[CHECK_LAYER].data, check_before)
    shot, _ = _shot(viewer, "register_after_checkerboard.png", centre, framing)
    assert shot[..., :3].std() > 20
    widget.mode.setCurrentText("fade")
    widget.fade.setValue(50)
    shot, _ = _shot(viewer, "register_after_fade.png", centre, framing)
    assert shot[..., :3].std() > 20
    widget.mode.setCurrentText("checkerboard")

    widget.undo()
    assert [ly.name for ly in viewer.layers] == names_before + [CHECK_LAYER]
    for n, ly in originals.items():
        assert viewer.layers[n] is ly
        data, scale, translate, affine, clim, cmap, visible = saved[n]
        assert np.array_equal(ly.data, data) and ly.data.dtype == data.dtype  # voxel for voxel
        assert np.array_equal(ly.scale, scale) and np.array_equal(ly.translate, translate)
        assert np.array_equal(ly.affine.affine_matrix, affine)
        assert layer_to_volume(ly).grid.mismatch(case[n].grid) is None
    assert viewer.layers["t2"].visible is False
    assert widget.workspace.case is case and widget.workspace.registration is None
    assert widget.table.columnCount() == 0 and not widget.undo_btn.isEnabled()
    assert np.array_equal(viewer.layers[CHECK_LAYER].data, check_before)


def test_cancel_leaves_the_case_and_layers_untouched(make_napari_viewer, qtbot, phantom):
    viewer = make_napari_viewer()
    widget = _open(viewer, phantom.case)
    before = list(viewer.layers)
    widget.transform.setCurrentText("affine")
    widget.register()
    job = widget._job
    qtbot.waitUntil(lambda: job.latest[0] > 0, timeout=30000)  # the callback has been called
    widget.cancel()
    assert job.progress(0.5, "next iteration") is False  # what the optimiser hears from now on
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert widget.status.text() == "cancelled: the case and its layers are unchanged"
    assert list(viewer.layers) == before
    assert widget.workspace.registration is None and widget.workspace.case is phantom.case
    assert widget.table.columnCount() == 0 and not widget.undo_btn.isEnabled() and widget.register_btn.isEnabled()


def test_a_new_reference_moves_empty_labels_and_refuses_drawn_ones(make_napari_viewer, qtbot, phantom,
                                                                  monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(mod, "show_error", shown.append)
    case = phantom.case.replace(labels=None)
    viewer = make_napari_viewer()
    widget = _open(viewer, case)
    before = {ly.name: ly for ly in viewer.layers}
    widget.reference.setCurrentText("t1c")
    assert widget.moving_names() == ["t1", "t2", "flair"] and widget.compare.currentText() == "t1"
    for i in (1, 2):  # register t1 only; t2 and flair are only put onto the t1c grid
        widget.moving.item(i).setCheckState(mod.Qt.CheckState.Unchecked)
    _register(qtbot, widget)
    reg = widget.workspace.registration
    assert reg.case.reference == "t1c" and list(reg.results) == ["t1"]
    grid = case["t1c"].grid
    assert viewer.layers["t1c"] is before["t1c"]
    for name in ("t1", "t2", "flair", "labels"):
        assert viewer.layers[name] is not before[name]
        assert layer_to_volume(viewer.layers[name]).grid.mismatch(grid) is None, name
    assert widget.workspace.labels_layer() is viewer.layers["labels"]
    widget.undo()
    assert {ly.name: ly for ly in viewer.layers} == before
    viewer.layers["labels"].data[10, 40, 30] = 2  # the clinician draws on the t1 grid
    assert widget.register() is None
    assert "labels were drawn on the t1 grid" in shown[-1] and widget.workspace.registration is None


def test_bad_input_shows_a_clear_message_and_leaves_layers_untouched(make_napari_viewer, qtbot, phantom, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(mod, "show_error", shown.append)
    case = phantom.case
    t2 = case["t2"]
    far = type(t2)(t2.array, t2.spacing, tuple(np.asarray(t2.origin) + 1000.0), t2.direction, name="t2")
    bad = case.with_sequence("flair", case["flair"].with_array(np.zeros_like(case["flair"].array)))
    bad = bad.with_sequence("t2", far)
    viewer = make_napari_viewer()
    widget = _open(viewer, bad)
    before = [(ly, ly.data) for ly in viewer.layers]

    def only(name):
        for i in range(widget.moving.count()):
            item = widget.moving.item(i)
            item.setCheckState(mod.Qt.CheckState.Checked if item.text() == name else mod.Qt.CheckState.Unchecked)

    only("flair")
    _register(qtbot, widget)
    assert "flair is empty" in shown[-1] and widget.status.text().startswith("error: flair is empty")
    only("t2")
    widget.start.setCurrentText("scanner alignment")
    _register(qtbot, widget)
    assert "does not overlap" in shown[-1] and "t2" in widget.status.text()
    only("")
    assert widget.register() is None and "tick at least one" in shown[-1]
    assert [(ly, ly.data) for ly in viewer.layers] == before
    assert widget.workspace.registration is None and widget.register_btn.isEnabled()


def test_checkerboard_and_fade_follow_their_sliders(make_napari_viewer, phantom):
    a, b = np.zeros((4, 4, 4), np.float32), np.ones((4, 4, 4), np.float32)
    board = checkerboard(a, b, (1.0, 2.0, 1.0), 2.0)  # 2 voxels along z and x, 1 along y
    assert board[0, 0, 0] == 0 and board[0, 0, 2] == 1 and board[0, 1, 0] == 1 and board[1, 0, 0] == 0
    assert board[2, 0, 0] == 1 and board.mean() == 0.5
    assert np.allclose(fade(a, b, 0.25), 0.25)

    viewer = make_napari_viewer()
    widget = _open(viewer, phantom.case)
    widget.compare.setCurrentText("flair")
    widget.mode.setCurrentText("fade")
    assert widget.fade.isEnabled() and not widget.square.isEnabled()
    widget.check_btn.setChecked(True)
    layer = viewer.layers[CHECK_LAYER]
    cache = widget._check_images()
    assert layer_to_volume(layer).grid.mismatch(phantom.case["t1"].grid) is None
    widget.fade.setValue(0)
    assert np.array_equal(layer.data, cache.reference)
    widget.fade.setValue(100)
    assert np.array_equal(layer.data, cache.moving)
    widget.fade.setValue(40)
    assert np.allclose(layer.data, 0.6 * cache.reference + 0.4 * cache.moving, atol=1e-6)
    assert layer.contrast_limits == [0.0, 1.0] and widget.fade_label.text() == "fade 40 %"

    widget.mode.setCurrentText("checkerboard")
    widget.square.setValue(6)
    small = layer.data.copy()
    widget.square.setValue(30)
    large = layer.data.copy()
    from_ref = (small == cache.reference) & (small != cache.moving)
    # 30 mm squares on a 3 mm grid: 10 voxels, so along x the source changes 5x less often
    flips_small = np.count_nonzero(np.diff(from_ref[:, :, :], axis=2))
    from_ref_large = (large == cache.reference) & (large != cache.moving)
    flips_large = np.count_nonzero(np.diff(from_ref_large, axis=2))
    assert flips_large < 0.4 * flips_small and widget.square_label.text() == "square 30 mm"
    widget.check_btn.setChecked(False)
    assert CHECK_LAYER not in viewer.layers


def test_save_transforms_writes_tfm_files_and_asks_before_overwriting(make_napari_viewer, qtbot, phantom, tmp_path,
                                                                     monkeypatch):
    import SimpleITK as sitk

    viewer = make_napari_viewer()
    widget = _open(viewer, phantom.case)
    assert widget.save_transforms(tmp_path / "x") is None  # nothing registered yet
    _register(qtbot, widget)
    out = tmp_path / "transforms"
    widget.save_transforms(out)
    qtbot.waitUntil(lambda: not widget.saving, timeout=30000)
    assert widget.status.text() == f"saved transforms and report to {out}"
    reg = widget.workspace.registration
    pts = np.array([[0.0, 0.0, 0.0], [30.0, -20.0, 10.0]])
    for n in MOVING:
        tx = sitk.ReadTransform(str(out / f"{n}_to_t1.tfm"))
        assert np.allclose(transform_points(tx, pts), transform_points(reg.results[n].transform, pts), atol=1e-6)
    report = json.loads((out / "registration.json").read_text())
    assert report["reference"] == "t1" and set(report["sequences"]) == set(MOVING)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind

    stamp = (out / "registration.json").stat().st_mtime_ns
    answers = []

    def answer(choice):
        def ask(*args, **kwargs):
            answers.append(args[2])
            return choice
        return ask

    monkeypatch.setattr(mod.QMessageBox, "question", answer(mod.QMessageBox.StandardButton.No))
    assert widget.save_transforms(out) is None
    assert "not empty" in answers[-1] and widget.status.text().startswith("not saved")
    assert (out / "registration.json").stat().st_mtime_ns == stamp
    monkeypatch.setattr(mod.QMessageBox, "question", answer(mod.QMessageBox.StandardButton.Yes))
    widget.save_transforms(out)
    qtbot.waitUntil(lambda: not widget.saving, timeout=30000)
    assert (out / "registration.json").stat().st_mtime_ns != stamp and len(answers) == 2

    # registering again (affine) replaces the registered layers; undo still brings the originals
    originals = {n: ly for n, ly in widget._originals.items()}
    first = {n: viewer.layers[n] for n in MOVING}
    widget.transform.setCurrentText("affine")
    _register(qtbot, widget)
    assert widget.workspace.registration.transform_type == "affine"
    for n in MOVING:
        assert viewer.layers[n] is not first[n] and viewer.layers[n] is not originals[n][0]
        assert np.array_equal(layer_to_volume(viewer.layers[n]).array,
                              widget.workspace.registration.results[n].volume.array)
    widget.undo()
    assert all(viewer.layers[n] is originals[n][0] for n in MOVING)
    assert widget.workspace.case is phantom.case and not widget.save_btn.isEnabled()
