"""``mriseg`` command line: commands listed, examples in help, clear one-line errors."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_mriseg.cli import build_parser, main
from napari_mriseg.core.io import read_volume, write_volume
from napari_mriseg.core.volume import Volume


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_mriseg", *args], capture_output=True, text=True)


def test_help_lists_commands_and_each_has_an_example():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("info", "convert", "phantom", "demo"):
        assert name in sub.choices
        assert "example:" in sub.choices[name].description and "mriseg " + name in sub.choices[name].description


def test_info_text_and_json(tmp_path, capsys):
    folder = tmp_path / "case1"
    folder.mkdir()
    write_volume(Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), (3, 1, 0.5)), folder / "t1.nii.gz")
    write_volume(Volume(np.ones((3, 4, 5), np.uint8), (3, 1, 0.5), kind="label"), folder / "seg.nii.gz")
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "t1: image 5x4x3 voxels, 0.5 x 1 x 3 mm, LPS, float32 [0, 59]" in out
    assert "label 1: 60 voxels, 0.09 mL" in out
    assert main(["info", "--json", str(folder / "t1.nii.gz")]) == 0
    assert '"orientation": "LPS"' in capsys.readouterr().out


def test_convert_nifti_to_nrrd_keeps_geometry(tmp_path):
    affine = np.array([[0, 0, 2.5, 10], [-0.9, 0, 0, 20], [0, 1.1, 0, -5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((4, 5, 6)).astype(np.float32), affine),
             str(tmp_path / "in.nii.gz"))
    assert main(["convert", str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nrrd")]) == 0
    a, b = read_volume(tmp_path / "in.nii.gz"), read_volume(tmp_path / "out.nrrd")
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    np.testing.assert_array_equal(b.array, a.array)


def test_errors_are_one_line_without_traceback_and_leave_nothing(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b garbage")
    result = run("convert", str(tmp_path / "bad.nii.gz"), str(tmp_path / "out.nii.gz"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mriseg convert: error: ") and "bad.nii.gz" in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()
    debug = run("--debug", "convert", str(tmp_path / "bad.nii.gz"), str(tmp_path / "out.nii.gz"))
    assert "Traceback" in debug.stderr


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    write_volume(Volume(np.ones((2, 3, 4), np.float32)), tmp_path / "a.nii.gz")
    write_volume(Volume(np.zeros((2, 3, 4), np.float32)), tmp_path / "b.nii.gz")
    assert main(["convert", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]) == 1
    assert "exists already" in capsys.readouterr().err
    assert read_volume(tmp_path / "b.nii.gz").array.max() == 0


def test_no_command_prints_help():
    result = run()
    assert result.returncode == 2 and "COMMAND" in result.stderr


@pytest.mark.parametrize("cmd", ["info", "convert", "phantom", "demo"])
def test_subcommand_help_runs(cmd):
    result = run(cmd, "--help")
    assert result.returncode == 0 and "example:" in result.stdout


def test_convert_dicom_lands_every_voxel_where_dcm2niix_does(shared_testdata, tmp_path, capsys):
    """`mriseg convert` on a real prone DICOM series, compared with dcm2niix in world space."""
    case = shared_testdata / "dicom_t1_positions" / "HFP"
    assert main(["info", str(case / "dicom")]) == 0
    assert "DICOM series" in capsys.readouterr().out
    out = tmp_path / "t1.nii.gz"
    assert main(["convert", str(case / "dicom"), str(out)]) == 0
    ours, ref = nib.load(str(out)), nib.load(str(case / "reference.nii"))
    ijk = np.indices(ours.shape).reshape(3, -1).T
    mapped = nib.affines.apply_affine(np.linalg.inv(ref.affine) @ ours.affine, ijk)
    nearest = np.rint(mapped).astype(int)
    assert np.abs(mapped - nearest).max() < 1e-3
    theirs = np.asarray(ref.dataobj)[tuple(nearest.T)]
    assert int((np.asarray(ours.dataobj).reshape(-1) != theirs.reshape(-1)).sum()) == 0
