"""Recovery files (core, no Qt): exact round trip, atomic writes, refusing another case's file."""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_mriseg.core import recovery as rc
from napari_mriseg.core.io import ImageWriteError
from napari_mriseg.core.volume import Grid

SHAPE = (7, 9, 11)


def _grid(shape=SHAPE) -> Grid:
    """Oblique, anisotropic, off-origin."""
    return Grid(shape, (3.1, 0.7, 1.3), (-10.5, 20.25, 5.5),
                Rotation.from_euler("xyz", [12, -21, 33], degrees=True).as_matrix())


def _sources(tmp_path):
    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    files = []
    for name, n in (("t1.nii.gz", 100), ("flair.nii.gz", 57)):
        p = folder / name
        p.write_bytes(b"x" * n)
        files.append(p)
    return files


def _work(rng, dtype=np.uint8):
    hi = 4 if dtype == np.uint8 else 1200
    labels = rng.integers(0, hi, SHAPE).astype(dtype)
    return labels, rng.random(SHAPE) < 0.3, rng.random(SHAPE) < 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip_is_exact(tmp_path, rng, dtype):
    labels, touched, reviewed = _work(rng, dtype)
    sources = _sources(tmp_path)
    rec = rc.make_recovery(labels, _grid(), touched=touched, reviewed=reviewed, case_id="case_007",
                           sources=sources, extra={"layer": "labels", "names": {"1": "core"}})
    folder = tmp_path / "recovery"
    path = rc.write_recovery(rec, folder=folder)
    assert path == rc.recovery_path("case_007", sources, folder=folder) == rc.find_recovery("case_007", sources, folder=folder)
    assert [p.name for p in folder.iterdir()] == [path.name]  # ONE file, no temp left behind
    back = rc.read_recovery(path)
    assert back.labels.dtype == dtype and np.array_equal(back.labels, labels)
    assert back.touched.dtype == bool and np.array_equal(back.touched, touched)
    assert np.array_equal(back.reviewed, reviewed)
    assert back.grid.shape == SHAPE and back.grid.spacing == rec.grid.spacing and back.grid.origin == rec.grid.origin
    assert np.array_equal(back.grid.direction, rec.grid.direction)  # exact, not just close
    assert back.case_id == "case_007" and back.saved_at == rec.saved_at
    assert back.sources == rec.sources and [s.size for s in back.sources] == [57, 100]  # sorted by path
    assert dict(back.extra) == {"layer": "labels", "names": {"1": "core"}}
    assert back.mismatch(case_id="case_007", sources=sources, grid=_grid()) is None
    # the arrays were copied when captured: later painting does not change the snapshot
    labels[0, 0, 0] = 3 if labels[0, 0, 0] != 3 else 2
    assert rec.labels[0, 0, 0] != labels[0, 0, 0]


def test_a_failing_write_leaves_the_previous_recovery_intact(tmp_path, rng, monkeypatch):
    labels, touched, reviewed = _work(rng)
    sources = _sources(tmp_path)
    folder = tmp_path / "recovery"
    first = rc.make_recovery(labels, _grid(), touched=touched, reviewed=reviewed, case_id="c", sources=sources)
    path = rc.write_recovery(first, folder=folder)
    before = path.read_bytes()

    def disk_full(fh, arrays):  # half an archive reaches the disk, then the disk is full
        fh.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rc, "_savez", disk_full)
    second = rc.make_recovery(labels + 1, _grid(), touched=~touched, reviewed=reviewed, case_id="c", sources=sources)
    with pytest.raises(ImageWriteError, match="No space left on device"):
        rc.write_recovery(second, folder=folder)
    assert path.read_bytes() == before
    assert [p.name for p in folder.iterdir()] == [path.name]  # the temp file is gone
    back = rc.read_recovery(path)
    assert np.array_equal(back.labels, labels) and np.array_equal(back.touched, touched)


def test_a_read_only_folder_gives_a_clear_error(tmp_path, rng, read_only_dir):
    labels, touched, reviewed = _work(rng)
    rec = rc.make_recovery(labels, _grid(), case_id="c")
    with pytest.raises(ImageWriteError, match="cannot write in this folder") as info:
        rc.write_recovery(rec, folder=read_only_dir)
    assert str(read_only_dir) in str(info.value)
    assert list(read_only_dir.iterdir()) == []


def test_a_recovery_of_another_case_or_changed_files_is_refused(tmp_path, rng):
    labels, touched, reviewed = _work(rng)
    sources = _sources(tmp_path)
    rec = rc.make_recovery(labels, _grid(), touched=touched, reviewed=reviewed, case_id="c1", sources=sources)
    path = rc.write_recovery(rec, folder=tmp_path / "rec")
    rec = rc.read_recovery(path)

    with pytest.raises(rc.RecoveryMismatchError, match="saved for case 'c1', not 'c2'") as info:
        rec.check_matches(case_id="c2", sources=sources, path=path)
    assert info.value.field == "case_id" and info.value.path == path

    other = tmp_path / "elsewhere.nii.gz"
    other.write_bytes(b"y")
    assert rec.mismatch(case_id="c1", sources=[sources[0], other])[0] == "sources"

    shifted = Grid(SHAPE, _grid().spacing, np.add(_grid().origin, (0, 0, 2.0)), _grid().direction)
    field, message = rec.mismatch(case_id="c1", sources=sources, grid=shifted)
    assert field == "grid" and "origin" in message
    assert rec.mismatch(case_id="c1", sources=sources, grid=_grid((7, 9, 12)))[0] == "grid"

    # the same path, rewritten since (a reprocessed scan): refused, unless only paths are compared
    time.sleep(0.01)
    sources[1].write_bytes(b"z" * 58)
    field, message = rec.mismatch(case_id="c1", sources=sources)
    assert field == "sources" and "flair.nii.gz changed" in message and "57 -> 58" in message
    assert rec.mismatch(case_id="c1", sources=sources, check_files=False) is None
    sources[1].write_bytes(b"z" * 57)  # the recorded size again, but written later
    assert os.stat(sources[1]).st_mtime_ns != rec.sources[0].mtime_ns
    assert rec.mismatch(case_id="c1", sources=sources)[0] == "sources"


def test_damaged_or_foreign_files_raise_recovery_error_naming_the_file(tmp_path, rng):
    labels, touched, reviewed = _work(rng)
    path = rc.write_recovery(rc.make_recovery(labels, _grid(), case_id="c"), folder=tmp_path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(rc.RecoveryError, match="damaged") as info:
        rc.read_recovery(truncated)
    assert info.value.path == truncated
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, labels=labels)
    with pytest.raises(rc.RecoveryError, match="not a recovery file"):
        rc.read_recovery(foreign)
    with pytest.raises(rc.RecoveryError, match="shape"):
        rc.make_recovery(labels, _grid((7, 9, 12)), case_id="c")
    with pytest.raises(rc.RecoveryError, match="integer"):
        rc.make_recovery(labels.astype(float), _grid(), case_id="c")


def test_location_key_and_discard(tmp_path, monkeypatch):
    sources = _sources(tmp_path)
    # keyed by the source paths, in any order; an in-memory case by its id
    assert rc.case_key("a", sources) == rc.case_key("b", sources[::-1])
    assert rc.case_key("a", []) != rc.case_key("b", [])
    monkeypatch.setenv(rc.ENV_DIR, str(tmp_path / "env"))
    assert rc.recovery_dir() == tmp_path / "env"
    monkeypatch.delenv(rc.ENV_DIR)
    default = rc.recovery_dir()
    assert default.name == "recovery" and "napari-mriseg" in str(default)
    case_folder = sources[0].parent
    assert case_folder not in rc.recovery_path("a", sources).parents  # never inside the case folder

    rec = rc.make_recovery(np.zeros(SHAPE, np.uint8), _grid(), case_id="a", sources=sources)
    rc.write_recovery(rec, folder=tmp_path / "r")
    assert rc.find_recovery("a", sources, folder=tmp_path / "r") is not None
    assert rc.discard_recovery("a", sources, folder=tmp_path / "r") is True
    assert rc.find_recovery("a", sources, folder=tmp_path / "r") is None
    assert rc.discard_recovery("a", sources, folder=tmp_path / "r") is False
