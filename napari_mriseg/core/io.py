"""Read and write single volumes: NIfTI, NRRD, MetaImage (MHA/MHD) files and DICOM folders.

Every reader returns `Volume` objects with their full geometry; every writer writes atomically
(a temporary file in the target folder, then a rename) and never replaces an existing file unless
``overwrite=True``. Headers are checked before any voxel is allocated: a file that declares more
data than it holds, or than this machine can hold, is refused.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import convert
from .errors import (
    ImageReadError,
    InvalidImageError,
    MriSegError,
    OutputExistsError,
    ResourceLimitError,
)
from .volume import Kind, Volume

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Deflate cannot compress better than about 1032:1; a gzip file whose header promises more
#: uncompressed data than that is truncated or lying.
MAX_DEFLATE_RATIO = 1032
#: Tolerance (mm) under which NIfTI's qform and sform are taken to agree.
QFORM_SFORM_ATOL_MM = 1e-3


class ImageWriteError(MriSegError, OSError):
    """A volume could not be written (read-only folder, full disk...); nothing was left behind."""


def volume_suffix(path: str | Path) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), lower case; '' if none."""
    name = Path(path).name.lower()
    for suffix in NIFTI_SUFFIXES[::-1] + ITK_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def is_volume_file(path: str | Path) -> bool:
    """True if ``path`` names a file format this module reads (by its suffix)."""
    return volume_suffix(path) != ""


def available_memory_bytes() -> int:
    """Physical memory of this machine in bytes (a generous upper bound for one volume)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * 2**30


def check_declared_size(path: Path, declared: int, stored: int, *, compressed: bool) -> None:
    """Refuse a file whose header declares ``declared`` bytes of voxels before allocating them.

    Parameters
    ----------
    declared : int
        Bytes of voxel data the header promises.
    stored : int
        Bytes actually available for voxel data in the file(s).
    compressed : bool
        Whether the stored bytes are deflate-compressed.
    """
    limit = available_memory_bytes() // 2
    if declared > limit:
        raise ResourceLimitError(
            f"the header declares {declared / 2**30:.1f} GiB of voxels, more than half of this "
            f"machine's memory ({limit * 2 / 2**30:.1f} GiB); the file is corrupt or too large to open",
            path=path,
        )
    if compressed:
        if declared > MAX_DEFLATE_RATIO * max(stored, 1) + 4096:
            raise ImageReadError(
                f"the header declares {declared} bytes of voxels but the compressed file holds only "
                f"{stored} bytes (more than deflate's {MAX_DEFLATE_RATIO}:1 maximum): "
                "the file is truncated or its header is wrong",
                path=path,
            )
    elif declared > stored:
        raise ImageReadError(
            f"the file is truncated: the header declares {declared} bytes of voxels, "
            f"the file holds {stored}",
            path=path,
        )


def _finish(array: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    """Check an image array's values: refuse all-NaN, zero out (and report) a few NaN."""
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        n_bad = int(bad.sum())
        if n_bad == array.size:
            raise InvalidImageError("every voxel is NaN or infinite", path=path)
        if n_bad:
            array = np.where(bad, 0, array).astype(array.dtype, copy=False)
            warnings.append(f"{n_bad} NaN/infinite voxels set to 0")
            log.warning("%s: %d NaN/infinite voxels set to 0", path, n_bad)
    return array


def _check_dims(shape: tuple[int, ...], path: Path) -> tuple[int, ...]:
    """Squeeze trailing singleton axes beyond the third; refuse 2D and 5D+ images."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise InvalidImageError(
            f"this is a 2D image (shape {shape}); a 3D volume with at least 2 voxels along each "
            "axis is needed", path=path,
        )
    if len(shape) > 4:
        raise InvalidImageError(
            f"this is a {len(shape)}D image (shape {shape}); only 3D volumes and 4D multi-channel "
            "volumes (one 3D volume per sequence) can be read", path=path,
        )
    return shape


# --------------------------------------------------------------------------- NIfTI
def _read_nifti(path: Path, kind: Kind, name: str) -> list[Volume]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a corrupt header
        raise ImageReadError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})", path=path) from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageReadError(f"not a NIfTI image (nibabel read a {type(image).__name__})", path=path)
    header = image.header
    shape = _check_dims(tuple(int(s) for s in image.shape), path)
    dtype = header.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InvalidImageError(f"voxels of type {dtype} (RGB or complex) are not supported", path=path)
    declared = int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    compressed = path.name.lower().endswith(".gz")
    stored = size if compressed else size - int(header.get("vox_offset", 352))
    check_declared_size(path, declared, stored, compressed=compressed)

    warnings: list[str] = []
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if qform is not None and sform is not None and not np.allclose(qform, sform, atol=QFORM_SFORM_ATOL_MM):
        msg = (
            f"qform (code {int(qcode)}) and sform (code {int(scode)}) disagree by up to "
            f"{np.abs(qform - sform).max():.3g} mm; following nibabel's choice, the sform"
        )
        warnings.append(msg)
        log.warning("%s: %s", path, msg)
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # truncated gzip, short file...
        raise ImageReadError(f"the voxel data cannot be read ({type(exc).__name__}: {exc}); "
                             "the file is truncated or corrupt", path=path) from exc
    data = data.reshape(shape)
    grid = convert.grid_from_ras_affine(image.affine, shape[:3])
    meta = {"source": str(path), "warnings": warnings}
    channels = [data] if data.ndim == 3 else [data[..., c] for c in range(data.shape[3])]
    volumes = []
    for c, channel in enumerate(channels):
        arr = np.ascontiguousarray(channel.transpose(2, 1, 0))
        if kind == "image":
            arr = _finish(arr, path, warnings)
        vol_name = name if len(channels) == 1 else f"{name or 'channel'}_{c:04d}"
        volumes.append(Volume.on_grid(arr, grid, kind=kind, name=vol_name, meta={**meta, "channel": c}))
    return volumes


# --------------------------------------------------------------------------- NRRD / MetaImage
_ITK_BYTES = {
    "8-bit unsigned integer": 1, "8-bit signed integer": 1,
    "16-bit unsigned integer": 2, "16-bit signed integer": 2,
    "32-bit unsigned integer": 4, "32-bit signed integer": 4,
    "64-bit unsigned integer": 8, "64-bit signed integer": 8,
    "32-bit float": 4, "64-bit float": 8,
}


def _itk_stored_bytes(path: Path) -> tuple[int, bool]:
    """Bytes available for voxel data and whether they are compressed, from the text header."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    size = path.stat().st_size
    text = head.decode("latin-1")
    suffix = volume_suffix(path)
    if suffix in (".nrrd", ".nhdr"):
        enc = re.search(r"^encoding:\s*(\S+)", text, re.M)
        compressed = bool(enc and enc.group(1).lower() in ("gzip", "gz", "bzip2", "bz2"))
        data_file = re.search(r"^data ?file:\s*(.+)$", text, re.M)
        if data_file:
            target = path.parent / data_file.group(1).strip()
            return (target.stat().st_size if target.exists() else 0), compressed
        end = head.find(b"\n\n")
        return size - (end + 2 if end >= 0 else 0), compressed
    compressed = bool(re.search(r"^CompressedData\s*=\s*True", text, re.M | re.I))
    data_file = re.search(r"^ElementDataFile\s*=\s*(.+)$", text, re.M)
    name = data_file.group(1).strip() if data_file else "LOCAL"
    if name.upper() == "LOCAL":
        start = head.find(b"\n", data_file.start()) + 1 if data_file else 0
        return size - start, compressed
    target = path.parent / name
    return (target.stat().st_size if target.exists() else 0), compressed


def _read_itk(path: Path, kind: Kind, name: str) -> list[Volume]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageReadError(f"not a readable {volume_suffix(path)} file ({first})", path=path) from exc
    size = tuple(int(s) for s in reader.GetSize())[::-1]  # (.., z, y, x) order
    shape_xyz = _check_dims(tuple(reader.GetSize()), path)
    n_comp = reader.GetNumberOfComponents()
    if n_comp != 1:
        raise InvalidImageError(f"{n_comp} values per voxel (RGB or vector image) are not supported", path=path)
    itemsize = _ITK_BYTES.get(sitk.GetPixelIDValueAsString(reader.GetPixelID()).replace("vector of ", ""), 8)
    declared = int(np.prod(size)) * itemsize
    stored, compressed = _itk_stored_bytes(path)
    check_declared_size(path, declared, stored, compressed=compressed)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"the voxel data cannot be read ({str(exc).strip().splitlines()[-1]}); "
                             "the file is truncated or corrupt", path=path) from exc
    warnings: list[str] = []
    meta = {"source": str(path), "warnings": warnings}
    if len(shape_xyz) == 3:
        if image.GetDimension() == 4:
            image = image[:, :, :, 0]
        vol = convert.from_sitk(image, kind=kind, name=name, meta=meta)
        arr = _finish(vol.array, path, warnings) if kind == "image" else vol.array
        return [vol.with_array(arr)]
    volumes = []
    for c in range(shape_xyz[3]):
        sub = image[:, :, :, c]
        vol = convert.from_sitk(sub, kind=kind, name=f"{name or 'channel'}_{c:04d}", meta={**meta, "channel": c})
        arr = _finish(vol.array, path, warnings) if kind == "image" else vol.array
        volumes.append(vol.with_array(arr))
    return volumes


# --------------------------------------------------------------------------- public API
def read_volumes(path: str | Path, *, kind: Kind = "image", name: str | None = None,
                 series: str | int | None = None) -> list[Volume]:
    """Read every 3D volume in a file or DICOM folder.

    A 4D NIfTI/NRRD/MHA (MSD-style multi-channel) gives one volume per channel, named
    ``{name}_{c:04d}``; a DICOM folder gives one volume per repeat of a multi-volume series.

    Parameters
    ----------
    path : path
        A ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file, or a DICOM folder.
    kind : {"image", "label"}
        Label maps are stored as integers (uint8 where they fit).
    name : str, optional
        Name given to the volume(s); by default the file name without its suffix.
    series : str or int, optional
        For a DICOM folder with several series: SeriesInstanceUID, SeriesNumber or description.

    Raises
    ------
    ImageReadError, InvalidImageError, ResourceLimitError, DicomSeriesError
        With a message naming the file and the problem.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError("no such file or folder", path=p)
    if p.is_dir():
        from .dicom import read_dicom_volumes

        volumes = read_dicom_volumes(p, series=series)
        if kind == "label":
            volumes = [v.with_array(v.array, kind="label") for v in volumes]
        if name is not None:
            volumes = [v.with_array(v.array, name=name if len(volumes) == 1 else f"{name}_{i:04d}")
                       for i, v in enumerate(volumes)]
        return volumes
    suffix = volume_suffix(p)
    default_name = p.name[: len(p.name) - len(suffix)] if suffix else p.stem
    reader: Callable[[Path, Kind, str], list[Volume]]
    if suffix in NIFTI_SUFFIXES:
        reader = _read_nifti
    elif suffix in ITK_SUFFIXES:
        reader = _read_itk
    else:
        raise ImageReadError(
            "unknown file type; readable are " + ", ".join(NIFTI_SUFFIXES + ITK_SUFFIXES) + " files and DICOM folders",
            path=p,
        )
    return reader(p, kind, default_name if name is None else name)


def read_volume(path: str | Path, *, kind: Kind = "image", name: str | None = None,
                series: str | int | None = None) -> Volume:
    """Read one 3D volume (see `read_volumes`); a multi-channel file is refused with a hint."""
    volumes = read_volumes(path, kind=kind, name=name, series=series)
    if len(volumes) != 1:
        raise InvalidImageError(
            f"holds {len(volumes)} volumes (a 4D or multi-volume image); read it with "
            "`read_volumes` or `load_case`, which split it into sequences", path=path,
        )
    return volumes[0]


def atomic_write(path: Path, write: Callable[[Path], None], *, overwrite: bool) -> Path:
    """Write ``path`` through ``write(tmp)`` so that it appears complete or not at all.

    ``write`` fills a temporary file in the same folder (same suffix); it is then renamed onto
    ``path``. Raises `OutputExistsError` if ``path`` exists and not ``overwrite``, and
    `ImageWriteError` (with nothing left behind) if the folder is missing, read-only or full.
    """
    if path.exists() and not overwrite:
        raise OutputExistsError("exists already; choose another name or allow overwriting", path=path)
    folder = path.parent
    if not folder.is_dir():
        raise ImageWriteError("the folder does not exist", path=path)
    suffix = volume_suffix(path) or path.suffix
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=folder)
    except OSError as exc:
        raise ImageWriteError(f"cannot write in this folder ({exc.strerror or exc})", path=path) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, MriSegError):
            raise
        if isinstance(exc, (OSError, RuntimeError)):
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
            raise ImageWriteError(f"could not be written ({reason}); nothing was changed", path=path) from exc
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_volume(volume: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``volume`` with its geometry to a ``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha`` file.

    The file appears complete or not at all (temporary file + rename). NIfTI files get identical
    qform and sform; label maps keep their integer type.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    ImageWriteError
        The folder is missing, read-only or full; no partial file is left.
    """
    p = Path(path)
    suffix = volume_suffix(p)
    if suffix not in WRITE_SUFFIXES:
        raise ImageWriteError("unsupported output type; use " + ", ".join(WRITE_SUFFIXES), path=p)

    def write(tmp: Path) -> None:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            nib.save(convert.to_nifti(volume), str(tmp))  # the temp name keeps the suffix
        else:
            import SimpleITK as sitk

            sitk.WriteImage(convert.to_sitk(volume), str(tmp), useCompression=True)

    return atomic_write(p, write, overwrite=overwrite)

