"""Shared fixtures: small seeded volumes that are anisotropic, oblique and off-origin."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"

#: The 48 signed axis permutations of 3D: (axes order, flips), as nibabel orientation arrays.
ORIENTATIONS = [
    np.array([[axis, -1.0 if flip else 1.0] for axis, flip in zip(perm, flips)])
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((False, True), repeat=3)
]


def keep_screenshot(path: Path) -> None:
    """Copy a screenshot to $MRISEG_SCREENSHOT_DIR when set, so a person can look at it."""
    target = os.environ.get("MRISEG_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


@pytest.fixture(autouse=True)
def _private_recovery_dir(tmp_path_factory, monkeypatch):
    """Autosave recovery files of a test go to a temporary folder, never to the user's."""
    monkeypatch.setenv("MRISEG_RECOVERY_DIR", str(tmp_path_factory.mktemp("recovery")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)


@pytest.fixture
def shared_testdata() -> Path:
    if not SHARED_TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_TESTDATA} (only present beside the project checkout)")
    return SHARED_TESTDATA


def ras_phantom(shape=(14, 12, 9), spacing=(0.9, 1.3, 2.7), offset=(-20.0, 35.0, -11.0)):
    """A RAS-stored test volume with a bright marker in the patient's LEFT half.

    In RAS storage the file's first axis i points to the patient's right, so the left half is at
    low i. Returns ``(data (i, j, k) float32, affine, marker mask)``.
    """
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    data = (10 + i + 3 * j + 7 * k).astype(np.float32)  # a ramp: every voxel distinct
    marker = (i <= 2) & (j >= 3) & (j <= 6) & (k >= 2) & (k <= 5)
    data[marker] += 500
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = offset
    return data, affine, marker


def oriented_nifti(path: Path, ornt: np.ndarray, **kwargs) -> tuple[Path, np.ndarray]:
    """Write the RAS phantom stored in orientation ``ornt`` (nibabel's own reorientation).

    Returns the file and the marker mask in that file's storage order.
    """
    data, affine, marker = ras_phantom(**kwargs)
    new_data = nib.orientations.apply_orientation(data, ornt)
    new_marker = nib.orientations.apply_orientation(marker, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    img = nib.Nifti1Image(new_data, new_affine)
    img.set_qform(new_affine, code=1)
    img.set_sform(new_affine, code=1)
    nib.save(img, str(path))
    return path, new_marker.astype(bool)


def oblique_sitk_image(rng: np.random.Generator, shape_xyz=(7, 6, 5), dtype=np.float32):
    """A SimpleITK image that is oblique (rotated about all axes), anisotropic and off-origin."""
    import SimpleITK as sitk
    from scipy.spatial.transform import Rotation

    arr = rng.random(shape_xyz[::-1]).astype(dtype)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 1.3, 3.1))
    image.SetOrigin((-10.5, 20.25, 5.5))
    image.SetDirection(Rotation.from_euler("xyz", [12, -21, 33], degrees=True).as_matrix().ravel())
    return image


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write in, root included (``chattr +i`` as root, ``chmod 555`` else)."""
    import os
    import shutil
    import stat
    import subprocess

    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root on a file system without chattr +i: cannot make a read-only folder")
        try:
            yield folder
        finally:
            subprocess.run([chattr, "-i", str(folder)], check=False)
    else:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield folder
        finally:
            folder.chmod(stat.S_IRWXU)
