"""Co-registration: accuracy against known transforms, cancel, bad input, transforms on disk, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_mriseg.core.errors import OptionError, OutputExistsError
from napari_mriseg.core.phantom import make_phantom_case, write_phantom_case
from napari_mriseg.core.registration import (
    Cancelled,
    RegistrationCancelled,
    RegistrationError,
    apply_transform,
    load_transform,
    register,
    register_case,
    save_transform,
    to_native,
    write_registration,
)
from napari_mriseg.core.registration_quality import (
    mask_points,
    mni_pair,
    target_registration_error,
    transform_points,
)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom_case(3, spacing_mm=2.0)


@pytest.fixture(scope="module")
def registered(phantom):
    return register_case(phantom.case)


def _brain_points(pc, n=3000):
    brain = pc.tissues.with_array(np.isin(pc.tissues.array, (1, 2)).astype(np.uint8))
    return mask_points(brain, max_points=n)


def test_register_case_recovers_the_phantom_misalignments(phantom, registered):
    points = _brain_points(phantom)
    import SimpleITK as sitk

    identity = sitk.Euler3DTransform()
    # 2 mm phantom: FLAIR has 6 mm slices, T2 4 mm; the reference t1 is 2 mm
    limits = {"t1c": 0.5, "t2": 1.5, "flair": 2.0}  # data-limited at 2 mm (see report)
    for name, limit in limits.items():
        truth = phantom.transform(name)
        tre = target_registration_error(registered.results[name].transform, truth, points).mean()
        before = target_registration_error(identity, truth, points).mean()
        assert tre < limit, (name, tre)
        assert tre < 0.3 * before, (name, tre, before)
        assert registered.results[name].quality.plausible
    out = registered.case
    assert out.misregistered() == []
    assert out.reference == "t1" and out.labels is phantom.case.labels
    # the input case is untouched: sequences still on their own grids
    assert set(phantom.case.misregistered()) == {"t1c", "t2", "flair"}


@pytest.mark.parametrize("seed,contrast", [(0, "t2"), (1, "flair"), (2, "t2")])
def test_rigid_tre_on_the_mni_template_is_below_half_a_millimetre(seed, contrast):
    fixed, moving, truth, brain = mni_pair(seed, contrast=contrast)  # 1 mm vs 1x1x3 mm, <=10 deg, <=15 mm
    result = register(fixed, moving)
    tre = target_registration_error(result.transform, truth, mask_points(brain, max_points=5000))
    assert tre.mean() <= 0.5, tre.mean()
    assert result.quality.plausible
    assert result.volume.grid.mismatch(fixed.grid) is None


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_rigid_sweep_on_the_mni_template(seed):
    fixed, moving, truth, brain = mni_pair(100 + seed, contrast=("t2", "flair")[seed % 2])
    tre = target_registration_error(register(fixed, moving).transform, truth, mask_points(brain, max_points=5000))
    assert tre.mean() <= 0.5


def _aligned_t2(pc):
    return apply_transform(pc.case["t2"], pc.transform("t2"), pc.case["t1"].grid)


def _residual(estimated, known, points):
    """|known(estimated(x)) - x|: 0 when the estimate inverts the known deformation of the image."""
    return np.linalg.norm(transform_points(known, transform_points(estimated, points)) - points, axis=1).mean()


def test_affine_recovers_a_known_affine_better_than_rigid(phantom):
    import SimpleITK as sitk

    t1 = phantom.case["t1"]
    known = sitk.AffineTransform(3)
    known.SetCenter(t1.grid.index_to_world(np.asarray(t1.shape) / 2.0)[::-1].tolist())
    known.SetMatrix((np.diag([1.08, 0.93, 1.05]) + [[0, 0.04, 0], [0, 0, 0], [0.03, 0, 0]]).ravel().tolist())
    known.SetTranslation((2.0, -3.0, 1.5))
    moving = apply_transform(_aligned_t2(phantom), known, t1.grid)  # moving(p) = t2(known(p))
    points = _brain_points(phantom)
    rigid = _residual(register(t1, moving).transform, known, points)
    affine = _residual(register(t1, moving, transform="affine").transform, known, points)
    assert affine < 1.0 and affine < 0.5 * rigid, (affine, rigid)


@pytest.mark.parametrize("sd_mm,seed", [(3.0, 5), pytest.param(6.0, 11, marks=pytest.mark.slow)])
def test_bspline_recovers_a_smooth_deformation_better_than_rigid_and_affine(phantom, sd_mm, seed):
    """A known smooth warp (cubic B-spline, 3x3x3 mesh over the t1 grid, control points N(0, sd))
    of the aligned T2, recovered from T1 (2 mm phantom, T2 with 4 mm slices). Mean residual over
    brain voxels, measured (sd 3 mm / 6 mm): identity 1.37 / 3.42, rigid 1.23 / 2.81, affine
    1.18 / 2.44, B-spline 0.77 / 0.96 mm. The floor is the data: rigidly registering the truly
    aligned T2 to T1 already ends 0.6 mm from the truth (thick slices, bias fields)."""
    import SimpleITK as sitk

    from napari_mriseg.core.convert import to_sitk

    t1 = phantom.case["t1"]
    known = sitk.BSplineTransformInitializer(to_sitk(t1), [3, 3, 3], 3)
    known.SetParameters(np.random.default_rng(seed).normal(0.0, sd_mm, known.GetNumberOfParameters()).tolist())
    moving = apply_transform(_aligned_t2(phantom), known, t1.grid)
    points = _brain_points(phantom)
    rigid = _residual(register(t1, moving).transform, known, points)
    affine = _residual(register(t1, moving, transform="affine").transform, known, points)
    result = register(t1, moving, transform="bspline")
    deformable = _residual(result.transform, known, points)
    figures = {"rigid": round(rigid, 3), "affine": round(affine, 3), "bspline": round(deformable, 3)}
    assert deformable < 0.7 * rigid and deformable < 0.8 * affine, figures
    assert result.quality.bspline_max_mm > 0.5 and result.quality.plausible, result.quality.problems


def test_progress_reports_and_cancel_stops_with_nothing_changed():
    fixed, moving, _, _ = mni_pair(4, spacing_mm=2.0, moving_spacing_mm=(4.0, 2.0, 2.0))
    seen = []
    register(fixed, moving, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions) and fractions == sorted(fractions)
    assert any("iteration" in m for _, m in seen)

    calls = []

    def cancel_on_fifth(fraction, message):
        calls.append(fraction)
        return len(calls) < 5

    with pytest.raises(RegistrationCancelled, match="cancelled"):
        register(fixed, moving, progress=cancel_on_fifth)
    assert len(calls) == 5  # stopped at once: the optimiser did not call again

    def raise_cancelled(fraction, message):
        if "iteration 3" in message:
            raise Cancelled()

    with pytest.raises(RegistrationCancelled):
        register(fixed, moving, progress=raise_cancelled)


def test_bad_input_raises_clear_errors(phantom):
    t1, t2 = phantom.case["t1"], phantom.case["t2"]
    with pytest.raises(RegistrationError, match="empty"):
        register(t1, t2.with_array(np.zeros_like(t2.array)))
    far = type(t2)(t2.array, t2.spacing, tuple(np.asarray(t2.origin) + 1000.0), t2.direction, name="t2")
    with pytest.raises(RegistrationError, match="overlap"):
        register(t1, far, initialization="none")
    with pytest.raises(OptionError, match="'rigid', 'affine', 'bspline'"):
        register(t1, t2, transform="elastic")
    with pytest.raises(OptionError):
        apply_transform(phantom.truth, phantom.transform("t2"), t1.grid, interpolation="linear")


def test_transforms_round_trip_through_tfm_files_and_invert(phantom, registered, tmp_path):
    tx = registered.results["t1c"].transform
    path = save_transform(tx, tmp_path / "t1c_to_t1.tfm")
    back = load_transform(path)
    pts = _brain_points(phantom, 50)
    assert np.allclose(transform_points(back, pts), transform_points(tx, pts), atol=1e-6)
    with pytest.raises(OutputExistsError):
        save_transform(tx, path)
    with pytest.raises(RegistrationError):
        load_transform(tmp_path / "missing.tfm")
    # labels drawn on the reference grid land where the sequence sees them
    native = to_native(phantom.truth, tx, phantom.case["t1c"])
    expected = phantom.truth_on_grid("t1c").array > 0
    got = native.array > 0
    assert native.is_label and native.array.dtype == np.uint8
    assert 2 * (got & expected).sum() / (got.sum() + expected.sum()) > 0.85


def test_write_registration_is_all_or_nothing(registered, tmp_path):
    out = write_registration(registered, tmp_path / "out")
    names = {p.name for p in out.iterdir()}
    assert {"t1.nii.gz", "t2.nii.gz", "t2_to_t1.tfm", "labels.nii.gz", "registration.json"} <= names
    assert not [n for n in names if n.startswith(".")]
    report = json.loads((out / "registration.json").read_text())
    assert set(report["sequences"]) == {"t1c", "t2", "flair"}
    target = tmp_path / "partial"
    target.mkdir()
    (target / "flair_to_t1.tfm").write_text("keep me")
    with pytest.raises(OutputExistsError):
        write_registration(registered, target)
    assert [p.name for p in target.iterdir()] == ["flair_to_t1.tfm"]


def test_cli_register_writes_outputs_and_refuses_to_overwrite(phantom, tmp_path, capsys):
    from napari_mriseg.cli import build_parser, main

    case_dir = write_phantom_case(phantom, tmp_path / "case")
    out = tmp_path / "reg"
    assert main(["register", str(case_dir), "--reference", "t1", "--out", str(out)]) == 0
    report = json.loads((out / "registration.json").read_text())
    assert report["reference"] == "t1" and report["transform"] == "rigid"
    assert (out / "flair_to_t1.tfm").is_file()
    before = (out / "registration.json").stat().st_mtime_ns
    assert main(["register", str(case_dir), "--out", str(out)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert (out / "registration.json").stat().st_mtime_ns == before
    sub = build_parser()._subparsers._group_actions[0].choices["register"]
    assert "example:\n  mriseg register " in sub.description
