"""The plugin through napari: reader, writer, radiological display, manifest, Load case widget."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest

from napari_mriseg._napari.layers import layer_to_volume
from napari_mriseg._napari.views import set_plane
from napari_mriseg.core.io import read_volume, write_volume
from napari_mriseg.core.volume import Volume

from .conftest import ORIENTATIONS, keep_screenshot

pytestmark = pytest.mark.gui
PLUGIN = "napari-mriseg"


def las_marker_nifti(path: Path, ornt: np.ndarray) -> Path:
    """A RAS-built volume (body 500) with a marker (1000) in the patient's Left-Anterior-Superior
    corner, stored in the orientation ``ornt`` (nibabel's own reorientation)."""
    shape = (20, 24, 16)
    data = np.full(shape, 500, np.float32)
    data[2:7, 15:21, 10:15] = 1000  # RAS storage: low i = left, high j = anterior, high k = superior
    affine = np.diag([1.0, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-10, -9, -16)
    out = nib.orientations.apply_orientation(data, ornt)
    nib.save(nib.Nifti1Image(out, affine @ nib.orientations.inv_ornt_aff(ornt, shape)), str(path))
    return path


def _bright_centroid(shot: np.ndarray) -> tuple[float, float, float, float]:
    """(marker row, marker col, body centre row, body centre col) of a canvas screenshot."""
    grey = shot[..., :3].mean(-1)
    body = np.argwhere(grey > 20)
    marker = np.argwhere(grey > 220)
    assert len(marker) > 20 and len(body) > len(marker)
    return (*marker.mean(0), *((body.min(0) + body.max(0)) / 2))


@pytest.mark.parametrize("k", [0, 7, 13, 21, 26, 35, 42, 47])
def test_radiological_display_whatever_the_storage_order(make_napari_viewer, tmp_path, k):
    path = las_marker_nifti(tmp_path / "vol.nii.gz", ORIENTATIONS[k])
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(700, 700)
    layers = viewer.open(str(path), plugin=PLUGIN)
    layers[0].contrast_limits = (0, 1000)  # body grey, marker white
    vol = layer_to_volume(layers[0])
    centre = vol.grid.index_to_world(np.argwhere(vol.array > 900).mean(0))
    viewer.dims.point = tuple(centre)
    # (plane, marker should be on screen: left/right, up/down)
    expected = {"axial": ("right", "up"), "coronal": ("right", "up"), "sagittal": ("left", "up")}
    for plane, (horizontal, vertical) in expected.items():
        set_plane(viewer, plane)
        shot = viewer.screenshot(canvas_only=True, flash=False)
        mr, mc, br, bc = _bright_centroid(shot)
        assert (mc > bc) == (horizontal == "right"), f"{plane}: marker not on the screen's {horizontal}"
        assert (mr < br) == (vertical == "up"), f"{plane}: marker not {vertical}"


def test_oblique_volume_is_resampled_and_says_so(make_napari_viewer, tmp_path):
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("z", 20, degrees=True).as_matrix() @ np.diag([1, 1, 2])
    nib.save(nib.Nifti1Image(np.ones((10, 10, 6), np.float32), affine), str(tmp_path / "obl.nii.gz"))
    viewer = make_napari_viewer()
    layer = viewer.open(str(tmp_path / "obl.nii.gz"), plugin=PLUGIN)[0]
    assert layer.metadata["mriseg"]["display"] == "resampled"
    np.testing.assert_allclose(layer.affine.affine_matrix, np.eye(4))


def _case_folder(tmp_path: Path) -> Path:
    """A two-sequence case: t1 stored RAS at 1 mm, flair stored LPS at 1x1x3 mm, same FOV."""
    folder = tmp_path / "case007"
    folder.mkdir()
    rng = np.random.default_rng(3)
    t1 = rng.random((12, 16, 20)).astype(np.float32)
    a = np.diag([1.0, 1.0, 1.0, 1.0])
    a[:3, 3] = (-5, -7, -3)
    nib.save(nib.Nifti1Image(t1, a), str(folder / "t1.nii.gz"))
    flair = Volume(rng.random((4, 16, 12)).astype(np.float32), (3, 1, 1), (-3 + 1, 7 - 15, 5 - 11))
    write_volume(flair, folder / "flair.nii.gz")
    return folder


def test_case_folder_opens_as_layers_in_mm(make_napari_viewer, tmp_path):
    folder = _case_folder(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    assert [lay.name for lay in viewer.layers] == ["flair", "t1", "labels"]
    t1, flair, labels = viewer.layers["t1"], viewer.layers["flair"], viewer.layers["labels"]
    assert labels.data.dtype == np.uint8 and labels.data.shape == t1.data.shape
    # every layer's world extent in mm: the flair's box lies inside the t1's
    t1_box, flair_box = t1.extent.world, flair.extent.world
    assert np.all(flair_box[0] >= t1_box[0] - 1.5) and np.all(flair_box[1] <= t1_box[1] + 1.5)
    np.testing.assert_allclose(labels.extent.world, t1_box)
    assert flair.scale[0] == 3.0


def test_labels_saved_through_the_writer_keep_the_image_affine(make_napari_viewer, tmp_path):
    folder = _case_folder(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    labels = viewer.layers["labels"]
    t1_file = read_volume(folder / "t1.nii.gz")
    # paint a block at known world positions (through the layer's own world->data mapping)
    target = np.zeros(t1_file.shape, bool)
    target[2:5, 3:9, 4:7] = True  # in the t1 FILE's array order
    world = t1_file.grid.index_to_world(np.argwhere(target))
    idx = np.round([labels.world_to_data(w) for w in world]).astype(int)
    labels.data[tuple(idx.T)] = 2
    out = labels.save(str(tmp_path / "labels.nii.gz"), plugin=PLUGIN)
    back, image = nib.load(out[0]), nib.load(str(folder / "t1.nii.gz"))
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-5)
    assert back.shape == image.shape and back.get_data_dtype() == np.uint8
    expected = target.transpose(2, 1, 0) * 2
    assert int((np.asarray(back.dataobj) != expected).sum()) == 0


def test_reader_declines_what_is_not_ours(tmp_path):
    from napari_mriseg._napari._reader import get_reader

    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    assert get_reader(str(tmp_path / "photo.png")) is None
    assert get_reader(str(tmp_path / "docs")) is None
    assert get_reader(str(tmp_path / "x.nii.gz")) is not None


def test_bad_file_raises_and_viewer_stays_usable(make_napari_viewer, tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b broken")
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="bad.nii.gz"):
        viewer.open(str(tmp_path / "bad.nii.gz"), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    viewer.open(str(_case_folder(tmp_path)), plugin=PLUGIN)
    assert len(viewer.layers) == 3


def test_manifest_contributions_are_listed():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    widgets = [w.display_name for w in manifest.contributions.widgets]
    assert "Load case" in widgets
    assert [s.display_name for s in manifest.contributions.sample_data] == ["Synthetic brain tumour case (4 sequences)"]
    assert any("labels" in w.layer_types for w in manifest.contributions.writers)


def test_load_case_widget(make_napari_viewer, qtbot, tmp_path):
    folder = _case_folder(tmp_path)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Load case")
    widget.scan(str(folder))
    assert widget.table.rowCount() == 2
    assert [widget.table.item(r, 1).text() for r in range(2)] == ["flair", "t1"]
    widget.table.item(0, 1).setText("t2flair")  # the clinician renames a sequence
    assert widget.reference.currentText() == "t1"
    widget.reference.setCurrentText("t2flair")
    widget.load()
    qtbot.waitUntil(lambda: widget.case is not None, timeout=30000)
    assert widget.case.reference == "t2flair"
    assert [lay.name for lay in viewer.layers] == ["t1", "t2flair", "labels"]
    assert "not on the reference grid yet: t1" in widget.status.text()
    shot = tmp_path / "load_case_widget.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    keep_screenshot(shot)
    assert widget.load_btn.isEnabled()


def test_load_case_widget_shows_errors_and_stays_usable(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari_mriseg._napari._load_widget as mod

    shown: list[str] = []
    monkeypatch.setattr(mod, "show_error", shown.append)
    bad = tmp_path / "badcase"
    bad.mkdir()
    (bad / "t1.nii.gz").write_bytes(b"\x1f\x8b broken")
    viewer = make_napari_viewer()
    widget = mod.LoadCaseWidget(viewer)
    widget.scan(str(bad))
    widget.load()
    qtbot.waitUntil(lambda: bool(shown) and widget.load_btn.isEnabled(), timeout=30000)
    assert "t1.nii.gz" in shown[0] and "error" in widget.status.text()
    assert len(viewer.layers) == 0 and widget.load_btn.isEnabled()
    widget.scan(str(tmp_path / "does-not-exist"))
    assert "no such file" in shown[-1]


def test_napari_layer_affine_matches_sitk_on_an_oblique_image(make_napari_viewer, rng):
    """A real napari layer given `layer_kwargs` maps every index where SimpleITK says it lies."""
    from napari_mriseg.core import convert

    from .conftest import oblique_sitk_image

    image = oblique_sitk_image(rng)
    vol = convert.from_sitk(image)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol.array, **convert.layer_kwargs(vol))
    for idx_xyz in [(0, 0, 0), (6, 5, 4), (2, 3, 1)]:
        world = np.asarray(layer.data_to_world(idx_xyz[::-1]))
        np.testing.assert_allclose(world[::-1], image.TransformIndexToPhysicalPoint(idx_xyz), atol=1e-6)
    back = layer_to_volume(layer)
    assert back.grid.mismatch(vol.grid) is None and np.array_equal(back.array, vol.array)


@pytest.mark.parametrize("k", [0, 19, 47])
def test_volume_layer_volume_round_trip_is_exact(make_napari_viewer, tmp_path, k):
    from .conftest import oriented_nifti

    path, _ = oriented_nifti(tmp_path / "v.nii.gz", ORIENTATIONS[k])
    vol = read_volume(path)
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin=PLUGIN)[0]
    back = layer_to_volume(layer)
    assert back.grid.mismatch(vol.grid) is None
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    assert np.array_equal(back.array, vol.array)


def test_sample_data_opens_four_sequences_and_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_brain_tumour")
    names = {lay.name for lay in viewer.layers}
    assert names == {"t1", "t1c", "t2", "flair", "labels"}
    labels = viewer.layers["labels"]
    assert set(np.unique(labels.data)) == {0, 1, 2, 3}
    # the tumour lies inside the head on every sequence: check the FLAIR is bright there
    flair = viewer.layers["flair"]
    centre = labels.data_to_world(np.argwhere(labels.data == 2).mean(0))
    value = flair.data[tuple(np.round(flair.world_to_data(centre)).astype(int))]
    assert value > np.percentile(flair.data, 90)


def test_headless_demo_writes_screenshots_and_labels(tmp_path):
    from napari_mriseg._napari._sample_data import SAMPLE_CASE
    from napari_mriseg._napari.demo import run_headless

    written = run_headless(tmp_path / "demo")
    names = sorted(p.name for p in written)
    assert names == ["case.json", "labels.nii.gz", "screenshot_axial.png", "screenshot_coronal.png",
                     "screenshot_sagittal.png", "screenshot_window.png"]
    for p in written:
        if p.suffix == ".png":
            keep_screenshot(p)
    ref, out = nib.load(str(SAMPLE_CASE / "labels.nii.gz")), nib.load(str(tmp_path / "demo" / "labels.nii.gz"))
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    assert int((np.asarray(out.dataobj) != np.asarray(ref.dataobj)).sum()) == 0
    shot = iio.imread(tmp_path / "demo" / "screenshot_axial.png")
    assert shot[..., :3].std() > 20  # an image was drawn, not a blank canvas


def test_dicom_folder_opens_as_a_case(make_napari_viewer, shared_testdata):
    folder = shared_testdata / "dicom_t1_positions" / "HFS" / "dicom"
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    assert [lay.__class__.__name__ for lay in viewer.layers] == ["Image", "Labels"]
    image = viewer.layers[0]
    assert image.metadata["mriseg"]["display"] == "reoriented"  # a sagittal series, shown axially
    ref = nib.load(str(shared_testdata / "dicom_t1_positions" / "HFS" / "reference.nii"))
    # the layer's world extent is the reference's bounding box in LPS (S, P, L) mm
    corners = nib.affines.apply_affine(ref.affine, np.array(np.meshgrid(*[[0, n - 1] for n in ref.shape],
                                                                         indexing="ij")).reshape(3, -1).T)
    lps_spl = (corners * [-1, -1, 1])[:, ::-1]
    np.testing.assert_allclose(image.extent.world[0], lps_spl.min(0), atol=1e-3)
    np.testing.assert_allclose(image.extent.world[1], lps_spl.max(0), atol=1e-3)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([1.0, -1.0, 1.0])[[1, 0, 2]]])
def test_labels_layer_data_never_shares_the_callers_voxels(direction):
    from napari_mriseg._napari.layers import labels_layer_data

    labels = Volume(np.zeros((3, 4, 5), np.uint8), direction=direction, kind="label")
    data, _, kind = labels_layer_data(labels)
    assert kind == "labels" and data.flags.writeable
    data[...] = 7  # painting the layer
    assert labels.array.max() == 0


def test_panels_of_one_viewer_share_one_workspace(make_napari_viewer, qtbot, tmp_path):
    from napari_mriseg._napari._load_widget import LoadCaseWidget
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.phantom import make_phantom_case, write_phantom_case

    viewer = make_napari_viewer()
    first = LoadCaseWidget(viewer)
    viewer.window.add_dock_widget(first, name="Load case")
    assert Workspace.of(viewer) is first.workspace
    second = LoadCaseWidget(viewer)
    assert second.workspace is first.workspace
    other = make_napari_viewer()
    assert Workspace.of(other) is not first.workspace  # one workspace per viewer, not global

    case_dir = write_phantom_case(make_phantom_case(3, spacing_mm=3.0, misalign=False), tmp_path / "case")
    seen = []
    first.workspace.case_changed.connect(seen.append)
    first.scan(str(case_dir))
    first.load()
    qtbot.waitUntil(lambda: bool(seen), timeout=20000)
    assert seen[0].case_id == first.workspace.case_id != ""
    assert first.workspace.labels_layer() is viewer.layers["labels"]
    first.workspace.ensure_masks()
    assert first.workspace.touched.shape == viewer.layers["labels"].data.shape


def test_workspace_edits_are_one_undo_step_and_marked_touched(make_napari_viewer):
    from napari_mriseg._napari.workspace import Workspace
    from napari_mriseg.core.phantom import make_phantom_case

    viewer = make_napari_viewer()
    ws = Workspace(viewer)
    ws.set_case(make_phantom_case(4, spacing_mm=4.0, misalign=False).case)
    layer = ws.labels_layer(create=True)
    ws.watch_labels()
    before = layer.data.copy()
    idx = np.nonzero(np.ones((2, 3, 4), bool))
    assert ws.edit_labels(idx, 2) == 24
    assert ws.edit_labels(idx, 2) == 0  # nothing changes twice
    assert ws.touched.sum() == 24 and ws.dirty
    layer.paint((5, 5, 5), 3)  # the brush is tracked too
    assert ws.touched.sum() > 24
    layer.undo()
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
