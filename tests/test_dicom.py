"""napari_mriseg.core.dicom: real scanner data against dcm2niix, synthetic series, compressed files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from napari_mriseg.core import dicom
from napari_mriseg.core.dicom import list_dicom_series, read_dicom_series, read_dicom_volumes
from napari_mriseg.core.errors import (
    AmbiguousSeriesError,
    DicomSeriesError,
    ImageReadError,
    ResourceLimitError,
)

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
ROWS, COLS = 6, 8  # rows != columns, so that a transposed slice cannot pass
PIXEL_SPACING = (0.7, 0.9)  # (between rows, between columns) mm: a swap cannot pass


# --------------------------------------------------------------------------- 1. dcm2niix reference
@pytest.mark.parametrize("position", ["HFS", "HFP"])
def test_every_voxel_lands_where_dcm2niix_puts_it(position):
    nib = pytest.importorskip("nibabel")
    case = TESTDATA / "dicom_t1_positions" / position
    if not (case / "reference.nii").exists():
        pytest.skip(f"real scanner test data absent: {case} (see ../shared/testdata/README.md)")
    vol = read_dicom_series(case / "dicom")
    ref = nib.load(case / "reference.nii")
    ref_data = np.asarray(ref.dataobj)

    index = np.indices(vol.shape).reshape(3, -1).T  # every voxel (k, j, i) we return
    lps = vol.grid.index_to_world(index)[:, ::-1]  # (S, P, L) -> (L, P, S)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    ijk = (np.c_[ras, np.ones(len(ras))] @ np.linalg.inv(ref.affine).T)[:, :3]
    nearest = np.rint(ijk)
    # Measured (dcm2niix v1.0.20220720, 35 x 256 x 256 = 2,293,760 voxels each): max deviation
    # from an integer index 3.2e-5 voxel, 0 mismatches, every reference voxel covered once, for
    # both HFS and HFP.
    assert np.abs(ijk - nearest).max() < 1e-3
    nearest = nearest.astype(np.int64)
    assert np.all((nearest >= 0) & (nearest < ref_data.shape))
    ours = vol.array.reshape(-1).astype(np.int64)
    theirs = ref_data[tuple(nearest.T)].astype(np.int64)
    assert int(np.count_nonzero(ours != theirs)) == 0
    hits = np.zeros(ref_data.shape, np.int64)
    np.add.at(hits, tuple(nearest.T), 1)
    assert np.all(hits == 1)
    assert vol.meta["series_description"] == "t1_fl2d_sag"


# --------------------------------------------------------------------------- synthetic series
def _rotation() -> np.ndarray:
    ax, ay, az = np.deg2rad([23.0, -31.0, 12.0])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


ROT = _rotation()  # columns: row direction, column direction, slice normal (oblique)
ORIGIN = np.array([-12.5, 31.0, 47.25])  # LPS x y z of the first slice
BASE = float(ORIGIN @ ROT[:, 2])  # the first slice's position along the normal (mm), as errors name it


def _write_slice(path: Path, pixels: np.ndarray, position, *, series_uid: str, number: int,
                 description: str, instance: int, rot: np.ndarray = ROT, **extra) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = "Secret^Patient"
    ds.PatientID = "SECRET-ID-123"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.r_[rot[:, 0], rot[:, 1]]]
    ds.PixelSpacing = [str(v) for v in PIXEL_SPACING]
    ds.SliceThickness = "2.0"
    ds.WindowCenter = "300"
    ds.WindowWidth = "600"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _pixels(k: int, repeat: int = 0) -> np.ndarray:
    return (1000 * repeat + 100 * k + np.arange(ROWS * COLS)).reshape(ROWS, COLS).astype(np.uint16)


def _write_series(folder: Path, proj=(0.0, 2.5, 5.0, 7.5, 10.0, 12.5), *, repeats: int = 1,
                  number: int = 7, description: str = "t1 axial", uid: str | None = None,
                  seed: int = 0, subfolders: bool = False, **extra) -> tuple[np.ndarray, str]:
    """Slices at ``ORIGIN + p * normal`` for p in ``proj`` (mm), written under shuffled file names
    with shuffled InstanceNumbers. Returns the expected (repeats, Z, Y, X) voxels and the UID."""
    rng = np.random.default_rng(seed)
    uid = uid or generate_uid()
    slices = [(k, r) for r in range(repeats) for k in range(len(proj))]
    names = rng.permutation(len(slices))
    instances = rng.permutation(len(slices)) + 1
    assert not np.array_equal(names, np.arange(len(slices)))
    for (k, r), name, instance in zip(slices, names, instances):
        sub = f"part{name % 2}" if subfolders else ""
        per_repeat = {key: v[r] if isinstance(v, tuple) else v for key, v in extra.items()}
        _write_slice(folder / sub / f"IM{name:04d}.dcm", _pixels(k, r), ORIGIN + proj[k] * ROT[:, 2],
                     series_uid=uid, number=number, description=description, instance=int(instance),
                     **per_repeat)
    expected = np.stack([np.stack([_pixels(k, r) for k in range(len(proj))]) for r in range(repeats)])
    return expected, uid


def _expected_geometry(step: float = 2.5):
    return (step, *PIXEL_SPACING), tuple(ORIGIN[::-1]), ROT[::-1, ::-1]


def test_oblique_series_sorted_by_position_not_by_name_or_instance(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from napari_mriseg.core.convert import from_sitk

    expected, uid = _write_series(tmp_path / "s", subfolders=True)
    (tmp_path / "s" / "README.txt").write_text("not a DICOM file")
    vol = read_dicom_series(tmp_path / "s")
    assert vol.array.dtype == np.uint16
    np.testing.assert_array_equal(vol.array, expected[0])
    spacing, origin, direction = _expected_geometry()
    np.testing.assert_allclose(vol.spacing, spacing, atol=1e-6)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-5)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-6)
    assert vol.meta["series_uid"] == uid and vol.meta["warnings"] == []
    # the same files through SimpleITK/GDCM's series reader: same voxels at the same places
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "s"), "", False, True)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    theirs = from_sitk(reader.Execute())
    assert theirs.grid.mismatch(vol.grid) is None
    np.testing.assert_array_equal(theirs.array, vol.array)


def test_meta_has_window_and_no_patient_identity(tmp_path):
    _write_series(tmp_path)
    vol = read_dicom_series(tmp_path)
    assert vol.meta["window_center"] == 300.0 and isinstance(vol.meta["window_center"], float)
    assert vol.meta["window_width"] == 600.0
    assert vol.meta["series_number"] == 7 and vol.meta["modality"] == "MR"
    assert vol.meta["source"] == str(tmp_path)
    assert "Secret" not in repr(dict(vol.meta)) and "SECRET" not in repr(dict(vol.meta))


def test_missing_slice_is_refused_naming_positions(tmp_path):
    _write_series(tmp_path, proj=(0.0, 2.5, 5.0, 10.0, 12.5, 15.0))
    with pytest.raises(DicomSeriesError, match=rf"missing slice.*{BASE + 5:.3f} and {BASE + 10:.3f} mm"):
        read_dicom_series(tmp_path)


def test_uneven_spacing_is_refused_naming_positions(tmp_path):
    _write_series(tmp_path, proj=(0.0, 2.5, 5.0, 8.0, 10.5, 13.0))
    with pytest.raises(DicomSeriesError, match=rf"uneven slice spacing.*3 mm separate the slices at {BASE + 5:.3f}"):
        read_dicom_series(tmp_path)


def test_positions_rounded_to_a_hundredth_of_a_mm_are_accepted(tmp_path):
    _write_series(tmp_path, proj=(0.0, 2.505, 4.995, 7.5, 10.005, 12.5))
    assert read_dicom_series(tmp_path).spacing[0] == pytest.approx(2.5, abs=2e-3)


def test_two_series_need_a_choice_and_each_choice_works(tmp_path):
    t1, uid1 = _write_series(tmp_path, number=7, description="t1 axial", seed=1, subfolders=True)
    flair, uid2 = _write_series(tmp_path / "other", number=8, description="FLAIR", seed=2)
    infos = list_dicom_series(tmp_path)
    assert [(i.uid, i.number, i.description, i.n_files, i.n_volumes) for i in infos] == [
        (uid1, 7, "t1 axial", 6, 1), (uid2, 8, "FLAIR", 6, 1)]
    with pytest.raises(AmbiguousSeriesError) as err:
        read_dicom_series(tmp_path)
    assert {s["uid"] for s in err.value.series} == {uid1, uid2}
    assert "t1 axial" in str(err.value) and "FLAIR" in str(err.value) and "6 files" in str(err.value)
    for choice, expected in [(uid1, t1), (8, flair), ("FLAIR", flair), ("t1 axial", t1), ("7", t1)]:
        np.testing.assert_array_equal(read_dicom_series(tmp_path, series=choice).array, expected[0])
    with pytest.raises(DicomSeriesError, match="no DICOM series matches 'dwi'") as err:
        read_dicom_series(tmp_path, series="dwi")
    assert not isinstance(err.value, AmbiguousSeriesError)


def test_rescale_slope_and_intercept_give_float32(tmp_path):
    expected, _ = _write_series(tmp_path, RescaleSlope="0.5", RescaleIntercept="-100")
    vol = read_dicom_series(tmp_path)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, expected[0] * 0.5 - 100)


def test_multi_volume_series_is_refused_then_split(tmp_path):
    expected, _ = _write_series(tmp_path, repeats=2, AcquisitionNumber=(1, 2))
    assert list_dicom_series(tmp_path)[0].n_volumes == 2
    with pytest.raises(DicomSeriesError, match=r"multi-volume series with 2 volumes.*read_dicom_volumes"):
        read_dicom_series(tmp_path)
    vols = read_dicom_volumes(tmp_path)
    assert len(vols) == 2
    for r, vol in enumerate(vols):
        np.testing.assert_array_equal(vol.array, expected[r])
        assert vol.grid.mismatch(vols[0].grid) is None
        assert vol.meta["volume_index"] == r and vol.meta["n_volumes"] == 2
        assert vol.meta["volume_key"] == f"AcquisitionNumber: {r + 1}"
    (tmp_path / "one").mkdir()
    one, _ = _write_series(tmp_path / "one")
    [vol] = read_dicom_volumes(tmp_path / "one")
    np.testing.assert_array_equal(vol.array, one[0])


def test_duplicated_position_without_repeat_key_is_not_stacked(tmp_path):
    _, uid = _write_series(tmp_path)
    _write_slice(tmp_path / "extra.dcm", _pixels(9), ORIGIN + 5.0 * ROT[:, 2], series_uid=uid, number=7,
                 description="t1 axial", instance=99)
    with pytest.raises(DicomSeriesError, match=rf"repeat unevenly.*{BASE + 5:.3f} mm holds 2"):
        read_dicom_series(tmp_path)


def test_a_copied_file_is_ignored_with_a_warning(tmp_path):
    expected, _ = _write_series(tmp_path)
    shutil.copy(sorted(tmp_path.glob("*.dcm"))[0], tmp_path / "copy of first.dcm")
    vol = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.array, expected[0])
    assert any("duplicated file" in w for w in vol.meta["warnings"])


def test_mixed_orientations_are_refused(tmp_path):
    _, uid = _write_series(tmp_path)
    other = ROT[:, [1, 2, 0]]
    _write_slice(tmp_path / "loc.dcm", _pixels(0), ORIGIN, series_uid=uid, number=7,
                 description="t1 axial", instance=50, rot=other)
    with pytest.raises(DicomSeriesError, match="mixes slice orientations"):
        read_dicom_series(tmp_path)


def test_siemens_mosaic_is_refused_not_misread(tmp_path):
    _write_series(tmp_path, ImageType=["ORIGINAL", "PRIMARY", "M", "MOSAIC"])
    with pytest.raises(DicomSeriesError, match="mosaic"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("content", ["empty", "text"])
def test_folder_without_dicom_is_an_image_read_error(tmp_path, content):
    if content == "text":
        for i in range(3):
            (tmp_path / f"notes{i}.dcm").write_text("hello " * 40)
    with pytest.raises(ImageReadError, match="no DICOM files found") as err:
        read_dicom_series(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(ImageReadError):
        list_dicom_series(tmp_path)


@pytest.mark.parametrize("keep", ["pixels cut", "header cut"])
def test_truncated_file_among_good_ones_is_named(tmp_path, keep):
    _write_series(tmp_path)
    victim = sorted(tmp_path.glob("*.dcm"))[2]
    data = victim.read_bytes()
    victim.write_bytes(data[:-40] if keep == "pixels cut" else data[:400])
    with pytest.raises(ImageReadError, match="truncated") as err:
        read_dicom_series(tmp_path)
    assert victim.name in str(err.value)


def test_enhanced_multiframe_reads_like_the_classic_series(tmp_path):
    expected, uid = _write_series(tmp_path / "classic", RescaleSlope="2", RescaleIntercept="-5")
    classic = read_dicom_series(tmp_path / "classic")
    order = np.random.default_rng(3).permutation(expected.shape[1])  # frames stored out of order
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("enh", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = "MR", uid, 7, "t1 axial"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLS, len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    shared = Dataset()
    measures, orient = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [str(v) for v in PIXEL_SPACING], "2.0"
    orient.ImageOrientationPatient = [f"{v:.8f}" for v in np.r_[ROT[:, 0], ROT[:, 1]]]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orient]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in order:
        item, pos, rescale = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [f"{v:.6f}" for v in ORIGIN + 2.5 * k * ROT[:, 2]]
        rescale.RescaleSlope, rescale.RescaleIntercept = "2", "-5"
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [pos], [rescale]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = expected[0][order].astype("<u2").tobytes()
    (tmp_path / "enhanced").mkdir()
    ds.save_as(tmp_path / "enhanced" / "multiframe.dcm", enforce_file_format=True)
    vol = read_dicom_series(tmp_path / "enhanced")
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, classic.array)
    np.testing.assert_allclose(vol.array, expected[0] * 2.0 - 5)
    assert vol.grid.mismatch(classic.grid) is None


def test_memory_guard_refuses_before_decoding(tmp_path, monkeypatch):
    _write_series(tmp_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the series was refused")

    monkeypatch.setattr(dicom, "_physical_memory_bytes", lambda: 2 * 6 * ROWS * COLS * 2 - 2)
    monkeypatch.setattr(dicom, "_decode_pydicom", no_decoding)
    monkeypatch.setattr(dicom, "_decode_sitk", no_decoding)
    with pytest.raises(ResourceLimitError, match="more than half of this machine"):
        read_dicom_series(tmp_path)


# --------------------------------------------------------------------------- 3. compressed files
COMPRESSED = ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
              "MR_small_bigendian.dcm", "MR_small_implicit.dcm"]


def _single(tmp_path: Path, name: str, **edits) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    src = pydicom.data.get_testdata_file(name)
    if edits:
        ds = pydicom.dcmread(src)
        for key, value in edits.items():
            setattr(ds, key, value)
        ds.save_as(folder / name)
    else:
        shutil.copy(src, folder / name)
    return folder


@pytest.fixture
def uncompressed(tmp_path):
    return read_dicom_series(_single(tmp_path, "MR_small.dcm"))


@pytest.mark.parametrize("name", COMPRESSED)
def test_transfer_syntaxes_decode_to_the_uncompressed_voxels(tmp_path, uncompressed, name):
    vol = read_dicom_series(_single(tmp_path, name))
    assert vol.shape == (1, 64, 64) and vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, uncompressed.array)
    assert vol.grid.mismatch(uncompressed.grid) is None
    assert not any("SimpleITK" in w for w in vol.meta["warnings"])  # pydicom (+pylibjpeg) decoded it
    assert uncompressed.spacing[0] == pytest.approx(0.8)  # single slice: SliceThickness
    assert any("single slice" in w for w in uncompressed.meta["warnings"])


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_simpleitk_decodes_when_pydicom_cannot(tmp_path, uncompressed, monkeypatch, name):
    def broken(f):
        raise RuntimeError("no pixel data handler")

    monkeypatch.setattr(dicom, "_decode_pydicom", broken)
    vol = read_dicom_series(_single(tmp_path, name))
    np.testing.assert_array_equal(vol.array, uncompressed.array)
    assert any("decoded by SimpleITK" in w for w in vol.meta["warnings"])


def test_simpleitk_fallback_rescales_once(tmp_path, monkeypatch):
    folder = _single(tmp_path, "MR_small.dcm", RescaleSlope="2.5", RescaleIntercept="-7")
    direct = read_dicom_series(folder)
    monkeypatch.setattr(dicom, "_decode_pydicom", lambda f: 1 / 0)
    fallback = read_dicom_series(folder)
    assert direct.array.dtype == fallback.array.dtype == np.float32
    np.testing.assert_allclose(fallback.array, direct.array)
    raw = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_allclose(direct.array[0], raw * 2.5 - 7)
