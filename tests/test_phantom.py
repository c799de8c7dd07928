"""Synthetic phantom cases: determinism, labels, contrasts, grids, known misalignments, files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from napari_mriseg.core import convert
from napari_mriseg.core.case import load_case
from napari_mriseg.core.errors import OptionError, OutputExistsError
from napari_mriseg.core.io import read_volume
from napari_mriseg.core.phantom import (
    ACQUISITIONS,
    CASE_FILES,
    SEQUENCES,
    make_phantom,
    make_phantom_case,
)

SEED = 3
SPACING = 2.0
BALL6 = ndimage.generate_binary_structure(3, 1)


@pytest.fixture(scope="module")
def pc():
    return make_phantom_case(SEED, spacing_mm=SPACING)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    (out,) = make_phantom(tmp_path_factory.mktemp("phantoms"), cases=1, seed=SEED, spacing_mm=SPACING)
    return out


def _on_t1(pc, name: str, transform=None) -> np.ndarray:
    """Sequence ``name`` resampled onto the t1 grid (through its known transform by default)."""
    t1 = convert.to_sitk(pc.case["t1"])
    tr = pc.transform(name) if transform is None else transform
    out = sitk.Resample(convert.to_sitk(pc.case[name]), t1, tr, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _head(a: np.ndarray) -> np.ndarray:
    mask = ndimage.gaussian_filter(a.astype(np.float32), 1.0) > 0.15 * np.percentile(a, 99)
    return ndimage.binary_fill_holes(mask)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_case(pc):
    again = make_phantom_case(SEED, spacing_mm=SPACING)
    for name in SEQUENCES:
        assert again.case[name].grid.mismatch(pc.case[name].grid) is None
        np.testing.assert_array_equal(again.case[name].array, pc.case[name].array)
    np.testing.assert_array_equal(again.truth.array, pc.truth.array)
    assert again.transforms == pc.transforms


def test_different_seeds_give_different_anatomy(pc):
    other = make_phantom_case(SEED + 1, spacing_mm=SPACING)
    assert other.info["head_scale_lps"] != pc.info["head_scale_lps"]
    # the same world region holds a different head: compare t1 images on one grid
    t1 = convert.to_sitk(pc.case["t1"])
    moved = sitk.GetArrayFromImage(sitk.Resample(convert.to_sitk(other.case["t1"]), t1))
    assert np.corrcoef(moved.ravel(), pc.case["t1"].array.ravel())[0, 1] < 0.95
    centres = [np.asarray(p.truth.grid.index_to_world(np.argwhere(p.truth.array > 0).mean(0)))
               for p in (pc, other)]
    assert np.linalg.norm(centres[0] - centres[1]) > 5.0


# --------------------------------------------------------------------------- labels
def test_labels_are_brats_values_and_nested(pc):
    lab = pc.truth.array
    assert pc.truth.is_label and lab.dtype == np.uint8 and pc.truth.grid.mismatch(pc.case["t1"].grid) is None
    counts = np.bincount(lab.ravel(), minlength=4)
    assert len(counts) == 4 and np.all(counts[1:] * SPACING**3 > 200.0)  # each > 0.2 mL
    core, rim, oedema = lab == 1, lab == 3, lab == 2
    # the necrotic core touches only the rim; the rim touches only the core and oedema
    assert not np.any(ndimage.binary_dilation(core, BALL6) & ~(core | rim))
    assert not np.any(ndimage.binary_dilation(core | rim, BALL6) & ~(core | rim | oedema))
    # the tumour lies in the brain: its voxels are white or grey matter or CSF under the lesion
    assert np.isin(pc.tissues.array[lab > 0], (1, 2, 3)).mean() > 0.99


def test_no_tumour_and_no_misalignment_options():
    plain = make_phantom_case(SEED, spacing_mm=3.0, tumour=False, misalign=False)
    assert not plain.truth.array.any()
    for spec in plain.transforms.values():
        assert spec["rotation_deg"] == [0.0, 0.0, 0.0] and spec["translation_mm"] == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- contrasts
def test_sequence_contrasts(pc):
    lab, tis = pc.truth.array, pc.tissues.array
    healthy = lab == 0
    wm, gm, csf = (ndimage.binary_erosion(tis == k, BALL6) & healthy for k in (1, 2, 3))
    assert csf.sum() > 20
    t1, t1c = pc.case["t1"].array.astype(float), _on_t1(pc, "t1c")
    t2, flair = _on_t1(pc, "t2"), _on_t1(pc, "flair")
    oedema, rim, core = lab == 2, lab == 3, lab == 1
    assert t1[wm].mean() > t1[gm].mean() > t1[csf].mean()
    assert t1[core].mean() < 0.6 * t1[wm].mean()
    assert t1c[rim].mean() > 1.4 * t1[rim].mean()
    assert t2[csf].mean() > t2[gm].mean() > t2[wm].mean() and t2[oedema].mean() > 1.5 * t2[wm].mean()
    assert flair[oedema].mean() > 1.5 * flair[wm].mean() > 1.5 * flair[csf].mean()


def test_intensities_look_like_scanner_values(pc):
    for name in SEQUENCES:
        a = pc.case[name].array
        assert a.dtype == np.int16 and a.min() >= 0
        assert 500 < np.percentile(a, 99) < 5000
        corner = a[:3, :3, :3]  # air: Rician noise floor, near 0 but not exactly 0
        assert 0 < corner.mean() < 0.1 * np.percentile(a, 99)


# --------------------------------------------------------------------------- grids
def test_each_sequence_has_its_own_grid(pc):
    grids = {name: pc.case[name].grid for name in SEQUENCES}
    for name, (mult, signs) in ACQUISITIONS.items():
        np.testing.assert_allclose(grids[name].spacing, np.asarray(mult) * SPACING)
        np.testing.assert_array_equal(grids[name].direction, np.diag(np.asarray(signs, float)))
    assert grids["flair"].spacing == (3 * SPACING, SPACING, SPACING)
    origins = np.array([g.origin for g in grids.values()])
    gaps = np.linalg.norm(origins[:, None] - origins[None], axis=-1)
    assert gaps[np.triu_indices(4, 1)].min() > 1.0
    assert pc.case.reference == "t1"
    assert sorted(pc.case.misregistered()) == ["flair", "t1c", "t2"]


def test_misalignments_are_small_and_documented(pc):
    assert pc.transforms["t1"]["translation_mm"] == [0.0, 0.0, 0.0]
    for name in ("t1c", "t2", "flair"):
        spec = pc.transforms[name]
        assert np.linalg.norm(spec["rotation_deg"]) <= 5.0 + 1e-9
        assert 3.0 - 1e-9 <= np.linalg.norm(spec["translation_mm"]) <= 8.0 + 1e-9
        np.testing.assert_allclose(np.asarray(spec["matrix"]).reshape(-1), pc.transform(name).GetMatrix(),
                                   atol=1e-9)


def test_truth_on_native_grid_marks_the_tumour(pc):
    t1c = pc.case["t1c"].array
    rim = pc.truth_on_grid("t1c")
    assert rim.grid.mismatch(pc.case["t1c"].grid) is None
    # the truth placed by world position alone, ignoring the misalignment, misses the rim
    wrong = sitk.GetArrayFromImage(sitk.Resample(convert.to_sitk(pc.truth), convert.to_sitk(pc.case["t1c"]),
                                                 sitk.Transform(), sitk.sitkNearestNeighbor))
    assert t1c[rim.array == 3].mean() > 1.2 * t1c[wrong == 3].mean()


# --------------------------------------------------------------------------- the saved transforms
@pytest.mark.parametrize(("name", "label"), [("t1c", 3), ("t2", 2), ("flair", 2)])
def test_saved_transform_aligns_sequence_with_t1_and_truth(folder, name, label):
    t1 = sitk.ReadImage(str(folder / "t1.nii.gz"), sitk.sitkFloat32)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
    seq = sitk.ReadImage(str(folder / f"{name}.nii.gz"), sitk.sitkFloat32)
    saved = sitk.ReadTransform(str(folder / f"{name}_to_t1.tfm"))
    head_t1 = _head(sitk.GetArrayFromImage(t1))
    scores = {}
    for tag, tr in (("saved", saved), ("identity", sitk.Transform()), ("inverse", saved.GetInverse())):
        moved = sitk.GetArrayFromImage(sitk.Resample(seq, t1, tr, sitk.sitkLinear, 0.0))
        scores[tag] = (_dice(_head(moved), head_t1), moved[truth == label].mean())
    assert scores["saved"][0] > 0.97
    assert scores["saved"][0] > scores["identity"][0] + 0.01 > scores["inverse"][0] + 0.02
    assert scores["saved"][1] > scores["identity"][1] and scores["saved"][1] > scores["inverse"][1]


# --------------------------------------------------------------------------- files
def test_files_read_back_with_their_geometry(folder, pc):
    assert sorted(p.name for p in folder.iterdir()) == sorted(CASE_FILES)
    expected_codes = {"t1": ("L", "P", "S"), "t1c": ("L", "P", "I"), "t2": ("R", "A", "S"),
                      "flair": ("L", "P", "S")}
    t1_affine = nib.load(str(folder / "t1.nii.gz")).affine
    for name in SEQUENCES:
        img = nib.load(str(folder / f"{name}.nii.gz"))
        assert nib.aff2axcodes(img.affine) == expected_codes[name]
        np.testing.assert_allclose(img.header.get_zooms(), pc.case[name].spacing[::-1])
        np.testing.assert_allclose(img.affine, convert.grid_to_ras_affine(pc.case[name].grid), atol=1e-4)
        back = read_volume(folder / f"{name}.nii.gz")
        np.testing.assert_array_equal(back.array, pc.case[name].array)
    labels = nib.load(str(folder / "labels.nii.gz"))
    assert np.array_equal(labels.affine, t1_affine) and labels.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(labels.dataobj).transpose(2, 1, 0), pc.truth.array)
    record = json.loads((folder / "transforms.json").read_text())
    assert "t1 (reference) world is seen at T(p)" in record["convention"]
    assert record["sequences"]["flair"]["translation_mm"] == pc.transforms["flair"]["translation_mm"]
    assert sitk.ReadTransform(str(folder / "t2_to_t1.tfm")).GetName() == "Euler3DTransform"
    assert "McConnell Brain Imaging Centre" in (folder / "LICENSE-MNI152.txt").read_text()
    case = load_case(folder)
    assert set(case.names) == set(SEQUENCES) and case.labels is not None


def test_existing_case_is_not_overwritten(folder):
    before = (folder / "t1.nii.gz").stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        make_phantom(folder.parent, cases=1, seed=SEED, spacing_mm=SPACING)
    assert (folder / "t1.nii.gz").stat().st_mtime_ns == before


@pytest.mark.parametrize("kwargs", [{"spacing_mm": 0.1}, {"cases": 0}, {"seed": -1}])
def test_bad_options_are_refused(tmp_path, kwargs):
    with pytest.raises(OptionError):
        make_phantom(tmp_path, **kwargs)
