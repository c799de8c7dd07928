"""Synthetic multi-sequence brain MRI cases with a tumour, known labels and known misalignments.

The anatomy is the MNI ICBM152 2009a nonlinear symmetric template that nilearn ships (T1 with grey-
and white-matter probability maps, 1 mm): no download. Each case

* deforms it smoothly (a random B-spline field of about 4 mm, head size +-8 % per axis and a head
  rotation of a few degrees), so that two seeds give two different heads;
* wraps the brain in extra-cerebral CSF, skull and scalp shells;
* grows a blobby tumour in white matter: a necrotic core (label 1) inside an enhancing rim
  (label 3) inside oedema (label 2) that reaches further along white matter (BraTS values);
* gives each tissue a sequence-specific intensity (`CONTRASTS`): T1 (WM > GM > CSF, tumour dark),
  T1c (T1 with a bright rim), T2 (CSF and oedema bright, WM < GM), FLAIR (CSF dark, oedema very
  bright), scaled like scanner values (hundreds to about 1500);
* acquires every sequence on its own grid (`ACQUISITIONS`: thick-slice T2 and FLAIR, a T1c stored
  superior-to-inferior, a T2 stored in NIfTI's RAS order), with a known small rigid misalignment,
  a smooth multiplicative bias field and Rician noise, stored as int16.

Everything made from the template carries its licence notice, `MNI152_NOTICE`; `write_phantom_case`
writes it as ``LICENSE-MNI152.txt`` into every case folder.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from . import convert
from .case import Case
from .errors import OptionError, OutputExistsError
from .volume import Grid, Volume

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

log = logging.getLogger(__name__)

SEQUENCES = ("t1", "t1c", "t2", "flair")
REFERENCE = "t1"
#: BraTS label values of the truth map.
LABEL_NAMES = MappingProxyType({0: "background", 1: "necrotic core", 2: "oedema", 3: "enhancing tumour"})

#: Per sequence: voxel size as multiples of the reference spacing, and the sign of each array
#: axis' world direction, both in array order ``(S, P, L)``. All grids are axial and oblique-free.
ACQUISITIONS = MappingProxyType({
    "t1": ((1.0, 1.0, 1.0), (1, 1, 1)),      # the reference: iso, LPS storage
    "t1c": ((1.0, 1.0, 1.0), (-1, 1, 1)),    # slices stored superior -> inferior
    "t2": ((2.0, 1.0, 1.0), (1, -1, -1)),    # 2x thicker slices, stored as a RAS NIfTI would be
    "flair": ((3.0, 1.0, 1.0), (1, 1, 1)),   # 3x thicker slices (1x1x3 mm at 1 mm)
})

#: Scanner-like intensity of each tissue in each sequence (before the per-case +-5 % jitter,
#: gain, bias field and noise).
CONTRASTS = MappingProxyType({
    "t1": {"wm": 850, "gm": 600, "csf": 250, "skull": 120, "scalp": 950,
           "necrotic": 300, "oedema": 520, "enhancing": 560},
    "t1c": {"wm": 850, "gm": 610, "csf": 250, "skull": 120, "scalp": 950,
            "necrotic": 320, "oedema": 540, "enhancing": 1350},
    "t2": {"wm": 450, "gm": 650, "csf": 1500, "skull": 80, "scalp": 650,
           "necrotic": 1400, "oedema": 1150, "enhancing": 850},
    "flair": {"wm": 500, "gm": 650, "csf": 120, "skull": 70, "scalp": 600,
              "necrotic": 450, "oedema": 1250, "enhancing": 850},
})
_TISSUES = ("wm", "gm", "csf", "skull", "scalp")
#: Values of `PhantomCase.tissues`.
TISSUE_CLASSES = MappingProxyType({0: "air", 1: "white matter", 2: "grey matter", 3: "csf", 4: "skull",
                                   5: "scalp"})
_TUMOUR = ((1, "necrotic"), (2, "oedema"), (3, "enhancing"))

TRANSFORM_CONVENTION = (
    "Each sequence's entry is a rigid transform T(p) = R @ (p - c) + c + t on LPS millimetres, "
    "coordinates listed (x, y, z) = (L, P, S) as ITK lists them: 'center_mm' is c, "
    "'translation_mm' is t, 'matrix' is R (row-major), 'rotation_deg' are the angles about the x, "
    "y and z axes through c with R = Rz @ Rx @ Ry (ITK Euler3DTransform). A point p of the t1 "
    "(reference) world is seen at T(p) in the sequence's world: the anatomy at p in t1 appears at "
    "T(p) in the sequence. T is therefore the transform that resamples the sequence onto the t1 "
    "grid in ITK's convention (fixed = t1, moving = sequence): SimpleITK.Resample(sequence, t1, T) "
    "aligns the sequence with t1 and the labels. '{name}_to_t1.tfm' stores T as an ITK "
    "Euler3DTransform (3D Slicer, ANTs and elastix read it); t1 itself has the identity and no file."
)

MNI152_NOTICE = """\
This data is derived from the MNI ICBM152 2009a nonlinear symmetric template
(mni_icbm152_nlin_sym_09a, as packaged with nilearn), distributed under this notice:

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.

References:
  V.S. Fonov, A.C. Evans, K. Botteron, C.R. Almli, R.C. McKinstry, D.L. Collins and BDCG.
  Unbiased average age-appropriate atlases for pediatric studies. NeuroImage 54(1):313-327, 2011.
  doi:10.1016/j.neuroimage.2010.07.033
  V.S. Fonov, A.C. Evans, R.C. McKinstry, C.R. Almli and D.L. Collins. Unbiased nonlinear average
  age-appropriate brain templates from birth to adulthood. NeuroImage 47 Suppl 1:S102, 2009.
  doi:10.1016/S1053-8119(09)70884-5
  D.L. Collins, A.P. Zijdenbos, W.F.C. Baare and A.C. Evans. ANIMAL+INSECT: improved cortical
  structure segmentation. IPMI 1999, LNCS 1613:210-223. doi:10.1007/3-540-48714-1_16
"""

_PAD_MM = 24                     # air around the template's brain, room for skull and scalp
_CSF_MM, _SKULL_MM, _SCALP_MM = 3.0, 9.0, 14.0   # outer edges of the shells, mm from the brain
_CLOSE_MM = 8.0                  # closing radius: fissures and sulci count as inside (CSF)


# --------------------------------------------------------------------------- template
@dataclass(frozen=True, eq=False)
class _Template:
    image: sitk.Image      # vector image, components `_TISSUES`, uint8 (fraction x 255), LPS geometry
    grid: Grid
    head_lo: np.ndarray    # (S, P, L) mm bounding box of the head, scalp included
    head_hi: np.ndarray
    # at 2 mm only (used to place tumours), None at 1 mm:
    wm: np.ndarray | None = None       # (Z, Y, X) white-matter fraction
    depth: np.ndarray | None = None    # (Z, Y, X) mm inside the closed brain (0 outside)
    d_head: np.ndarray | None = None   # (Z, Y, X) mm outside the closed brain (0 inside)


def _mni_file(key: str) -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:  # pragma: no cover - nilearn is a dependency
        raise ModuleNotFoundError("the phantom needs nilearn (its packaged MNI152 template)")
    name = f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"
    return Path(spec.origin).parent / "datasets" / "data" / name


@functools.lru_cache(maxsize=1)
def mni_template_1mm() -> tuple[Grid, dict[str, np.ndarray]]:
    """The 1 mm template: its grid and (Z, Y, X) uint8 maps t1, gm, wm (0..255)."""
    import nibabel as nib

    maps, grid = {}, None
    for key in ("t1", "gm", "wm"):
        img = nib.load(str(_mni_file(key)))
        grid = convert.grid_from_ras_affine(img.affine, img.shape)
        maps[key] = np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.uint8).transpose(2, 1, 0))
    assert grid is not None
    return grid, maps


def _padded(grid: Grid, arrays: list[np.ndarray]) -> tuple[Grid, list[np.ndarray]]:
    """``arrays`` padded with `_PAD_MM` of air on every side, and their grid."""
    n = int(round(_PAD_MM / grid.spacing[0]))
    out = [np.pad(a, n) for a in arrays]
    return Grid(out[0].shape, grid.spacing, grid.index_to_world(np.full(3, -float(n))), grid.direction), out


def _block_mean(a: np.ndarray) -> np.ndarray:
    a = np.pad(a.astype(np.float32), [(0, n % 2) for n in a.shape])
    z, y, x = (n // 2 for n in a.shape)
    return a.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5), dtype=np.float32)


def _ramp(d: np.ndarray, edge_mm: float, width_mm: float = 1.5) -> np.ndarray:
    """0 well inside ``edge_mm``, 1 well outside, linear over ``width_mm`` (float32)."""
    r = d.astype(np.float32)
    r -= np.float32(edge_mm - 0.5 * width_mm)
    r *= np.float32(1.0 / width_mm)
    return np.clip(r, 0.0, 1.0, out=r)


def _tissues(gm: np.ndarray, wm: np.ndarray, d_head: np.ndarray) -> np.ndarray:
    """(Z, Y, X, 5) uint8 tissue fractions x 255 in `_TISSUES` order; ``d_head`` in mm."""
    out = np.empty(d_head.shape + (len(_TISSUES),), np.uint8)

    def put(i: int, fraction: np.ndarray) -> None:
        fraction *= np.float32(255.0)
        fraction += np.float32(0.5)
        out[..., i] = fraction  # truncation after +0.5: rounding of these non-negative values

    r_csf, r_skull, r_scalp = (_ramp(d_head, e) for e in (_CSF_MM, _SKULL_MM, _SCALP_MM))
    inside = np.float32(1.0) - r_csf
    put(3, r_csf - r_skull)
    put(4, r_skull - r_scalp)
    put(2, np.clip(np.float32(1.0) - gm - wm, 0.0, 1.0) * inside)
    put(0, wm * inside)
    put(1, gm * inside)
    return out



@functools.lru_cache(maxsize=2)
def _template(resolution_mm: int) -> _Template:
    """The template's tissue maps at 2 mm (where the distance maps are computed) or 1 mm."""
    import SimpleITK as sitk
    from scipy import ndimage

    grid1, m1 = mni_template_1mm()
    if resolution_mm == 2:
        small = [_block_mean(m1["gm"]) / 255.0, _block_mean(m1["wm"]) / 255.0, _block_mean(m1["t1"] > 0)]
        grid2 = Grid(small[0].shape, np.asarray(grid1.spacing) * 2, grid1.index_to_world(np.full(3, 0.5)),
                     grid1.direction)
        grid, (gm, wm, brain) = _padded(grid2, small)
        brain = brain > 0.5
        d_out = ndimage.distance_transform_edt(~brain) * 2.0
        closed = ndimage.distance_transform_edt(d_out <= _CLOSE_MM) * 2.0 > _CLOSE_MM
        d_head = (ndimage.distance_transform_edt(~closed) * 2.0).astype(np.float32)
        depth = (ndimage.distance_transform_edt(closed) * 2.0).astype(np.float32)
    else:  # 1 mm maps; the smooth distance maps are upsampled from 2 mm
        coarse = _template(2)
        grid, (gm, wm) = _padded(grid1, [m1["gm"] / np.float32(255), m1["wm"] / np.float32(255)])
        ref = convert.sitk_reference_image(grid)

        def up(a: np.ndarray, outside: float) -> np.ndarray:
            src = convert.set_sitk_grid(sitk.GetImageFromArray(a), coarse.grid)
            out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, outside, sitk.sitkFloat32)
            return sitk.GetArrayFromImage(out)

        d_head = up(coarse.d_head, 100.0)
    tissues = _tissues(gm, wm, d_head)
    head = d_head < _SCALP_MM
    bounds = []
    for axis in range(3):
        hit = np.flatnonzero(head.any(axis=tuple(a for a in range(3) if a != axis)))
        bounds.append((hit[0], hit[-1]))
    corners = grid.index_to_world(np.asarray(bounds, float).T)
    image = convert.set_sitk_grid(sitk.GetImageFromArray(tissues, isVector=True), grid)
    if resolution_mm == 2:
        return _Template(image, grid, corners.min(0), corners.max(0), wm, depth, d_head)
    return _Template(image, grid, corners.min(0), corners.max(0))


# --------------------------------------------------------------------------- random helpers
def _smooth_field(rng: np.random.Generator, coords: tuple[np.ndarray, ...], wavelength_mm: tuple[float, float],
                  n: int = 8) -> np.ndarray:
    """A smooth random field, mean 0, variance about 1, clipped to [-2, 2] (a sum of random cosines).

    ``coords`` are broadcastable world coordinates in mm along ``(S, P, L)``.
    """
    out: Any = np.float32(0.0)
    for _ in range(n):
        v = rng.normal(size=3)
        k = 2.0 * np.pi / rng.uniform(*wavelength_mm) * v / np.linalg.norm(v)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        out = out + np.cos(np.float32(k[0]) * coords[0] + np.float32(k[1]) * coords[1]
                           + np.float32(k[2]) * coords[2] + np.float32(phase))
    return np.clip(out * np.float32(np.sqrt(2.0 / n)), -2.0, 2.0).astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random (3, 3) rotation matrix."""
    from scipy.spatial.transform import Rotation

    q = rng.normal(size=4)
    return Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()


def _axis_coords(grid: Grid, box: tuple[slice, ...] | None = None) -> tuple[np.ndarray, ...]:
    """World coordinates (mm, ``(S, P, L)``) of an axis-aligned grid's voxels, as 3 broadcastable arrays."""
    d = np.asarray(grid.direction)
    if not np.allclose(d, np.diag(np.diag(d))):
        raise ValueError("_axis_coords needs a grid whose direction is diagonal")
    box = box or tuple(slice(0, n) for n in grid.shape)
    out = []
    for a, sl in enumerate(box):
        c = grid.origin[a] + d[a, a] * grid.spacing[a] * np.arange(sl.start, sl.stop, dtype=np.float64)
        shape = [1, 1, 1]
        shape[a] = c.size
        out.append(c.astype(np.float32).reshape(shape))
    return tuple(out)


# --------------------------------------------------------------------------- anatomy
@dataclass(frozen=True, eq=False)
class _Anatomy:
    grid: Grid                   # the t1 (reference) grid
    maps: np.ndarray             # (Z, Y, X, 5) float32 tissue fractions, `_TISSUES` order
    to_template: sitk.Transform  # t1 world -> template world (SimpleITK, x y z)
    centre: np.ndarray           # (S, P, L) mm, head centre in the t1 world
    scale: np.ndarray            # (S, P, L) head size relative to the template


def _make_anatomy(rng: np.random.Generator, spacing_mm: float) -> _Anatomy:
    """Deform the template into a new head and sample its tissue fractions on the t1 grid."""
    import SimpleITK as sitk

    tpl = _template(1 if spacing_mm < 1.5 else 2)
    scale = np.clip(rng.uniform(0.92, 1.08) * rng.uniform(0.97, 1.03, 3), 0.92, 1.08)
    angles = np.deg2rad(rng.uniform(-4.0, 4.0, 3))  # head pose about x, y, z
    centre = rng.uniform(-12.0, 12.0, 3)
    extent = (tpl.head_hi - tpl.head_lo) * scale + 24.0
    shape = np.ceil(extent / spacing_mm).astype(int) + 1
    origin = centre - (shape - 1) * spacing_mm / 2.0 + rng.uniform(-3.0, 3.0, 3)
    grid = Grid(tuple(shape), (spacing_mm,) * 3, origin, np.eye(3))

    # case -> template: q = c_tpl + diag(1/scale) @ R^T @ (p - centre), after a B-spline warp of p
    pose = sitk.Euler3DTransform((0.0, 0.0, 0.0), *angles.tolist())
    rot = np.asarray(pose.GetMatrix()).reshape(3, 3)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre[::-1].tolist())
    affine.SetMatrix((np.diag(1.0 / scale[::-1]) @ rot.T).ravel().tolist())
    affine.SetTranslation(((tpl.head_lo + tpl.head_hi)[::-1] / 2.0 - centre[::-1]).tolist())
    ref = convert.sitk_reference_image(grid)
    mesh = [max(2, int(round(e / 50.0))) for e in extent[::-1]]
    warp = sitk.BSplineTransformInitializer(ref, mesh, 3)
    warp.SetParameters(rng.normal(0.0, 4.0, warp.GetNumberOfParameters()).tolist())
    composite = sitk.CompositeTransform([affine, warp])  # applies the warp first
    # Sample the composite once on a 4 mm grid: resampling through a dense field is far faster.
    field_grid = Grid(tuple(np.ceil(extent / 4.0).astype(int) + 5), (4.0,) * 3, origin - 8.0, np.eye(3))
    geo = convert.grid_to_sitk_geometry(field_grid)
    dfield = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64,
                                               list(field_grid.shape[::-1]), geo["origin"],
                                               geo["spacing"], geo["direction"])
    to_template = sitk.DisplacementFieldTransform(dfield)
    warped = sitk.Resample(tpl.image, ref, to_template, sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32)
    maps = sitk.GetArrayFromImage(warped)
    maps *= np.float32(1.0 / 255.0)
    return _Anatomy(grid, maps, to_template, centre, scale)


# --------------------------------------------------------------------------- tumour
@dataclass(frozen=True, eq=False)
class _Tumour:
    labels: np.ndarray                   # (Z, Y, X) uint8 on the t1 grid
    box: tuple[slice, slice, slice]      # where the tumour lies
    fractions: dict[str, np.ndarray]     # per tumour tissue, soft fraction x texture within box
    info: dict[str, Any]


def _place_tumour(rng: np.random.Generator, anatomy: _Anatomy) -> tuple[np.ndarray, float]:
    """A centre (S, P, L mm) in cerebral white matter and an outer rim radius (mm) that fits."""
    coarse = _template(2)
    assert coarse.wm is not None and coarse.depth is not None
    shape = np.asarray(anatomy.grid.shape)
    for _ in range(5000):
        p = anatomy.grid.index_to_world(rng.uniform(0.2, 0.8, 3) * (shape - 1))
        radius = rng.uniform(9.0, 18.0)
        q = np.asarray(anatomy.to_template.TransformPoint(p[::-1].tolist()))[::-1]
        k = np.rint(coarse.grid.world_to_index(q)).astype(int)
        if np.any(k < 0) or np.any(k >= coarse.wm.shape) or q[0] < -5.0:  # MNI z > -5: cerebrum
            continue
        if coarse.wm[tuple(k)] < 0.8:
            continue
        radius = min(radius, (coarse.depth[tuple(k)] * float(anatomy.scale.min()) - 2.0) / 1.15)
        if radius >= 7.0:
            return p, float(radius)
    raise RuntimeError("no place for a tumour found in white matter")  # pragma: no cover


def _grow_tumour(rng: np.random.Generator, anatomy: _Anatomy) -> _Tumour:
    """Necrotic core (1) inside an enhancing rim (3) inside oedema (2), each nesting guaranteed."""
    from scipy import ndimage

    grid, s = anatomy.grid, anatomy.grid.spacing[0]
    centre, radius = _place_tumour(rng, anatomy)
    reach = rng.uniform(8.0, 20.0)  # oedema beyond the rim, mm (further in white matter)
    half = 1.75 * radius + 1.4 * 1.25 * reach + 3.0 * s  # bounds of the blob, oedema and margins
    c_idx = grid.world_to_index(centre)
    lo = np.maximum(np.floor(c_idx - half / s), 0).astype(int)
    hi = np.minimum(np.ceil(c_idx + half / s) + 1, grid.shape).astype(int)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    dz, dy, dx = (c - np.float32(centre[a]) for a, c in enumerate(_axis_coords(grid, box)))

    rot = _random_rotation(rng)
    axes = rng.uniform(0.8, 1.25, 3)
    axes = radius * axes / np.cbrt(np.prod(axes))
    f = np.float32(0.0)
    for i in range(3):
        u = np.float32(rot[0, i]) * dz + np.float32(rot[1, i]) * dy + np.float32(rot[2, i]) * dx
        f = f + (u / np.float32(axes[i])) ** 2
    f = np.sqrt(f) * (1.0 + 0.1 * _smooth_field(rng, (dz, dy, dx), (0.8 * radius, 2.5 * radius)))
    core_fraction = rng.uniform(0.5, 0.75)
    ball = ndimage.generate_binary_structure(3, 3)
    core = f < core_fraction
    solid = (f < 1.0) | ndimage.binary_dilation(core, ball)
    wm = anatomy.maps[box + (0,)]
    parenchyma = (anatomy.maps[box + (0,)] + anatomy.maps[box + (1,)]) > 0.4
    oedema_reach = (reach / radius) * (0.2 + 0.8 * wm) * (1.0 + 0.2 * _smooth_field(rng, (dz, dy, dx), (15.0, 40.0)))
    oedema = ((f < 1.0 + oedema_reach) & parenchyma) | ndimage.binary_dilation(solid, ball)
    pieces, _ = ndimage.label(oedema, ball)
    oedema &= pieces == pieces[solid][0]  # one lesion: drop oedema islands cut off by CSF
    labels_box = np.where(oedema, 2, 0).astype(np.uint8)
    labels_box[solid] = 3
    labels_box[core] = 1

    fractions = {}
    for value, tissue in _TUMOUR:
        soft = ndimage.gaussian_filter((labels_box == value).astype(np.float32), 0.6)
        texture = 1.0 + 0.08 * _smooth_field(rng, (dz, dy, dx), (4.0, 12.0))
        fractions[tissue] = soft * texture
    labels = np.zeros(grid.shape, np.uint8)
    labels[box] = labels_box
    info = {"centre_mm_lps": [round(float(v), 3) for v in centre[::-1]], "rim_radius_mm": round(float(radius), 2),
            "oedema_reach_mm": round(float(reach), 2), "core_fraction": round(float(core_fraction), 3)}
    return _Tumour(labels, box, fractions, info)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- acquisition
def rigid_transform(spec: Mapping[str, Any]) -> sitk.Euler3DTransform:
    """The SimpleITK transform T of one entry of `PhantomCase.transforms` (see `TRANSFORM_CONVENTION`).

    T maps a t1 (reference) world point to where the same anatomy lies in the sequence's world
    (LPS mm, SimpleITK's x y z order); ``SimpleITK.Resample(sequence, t1, T)`` aligns the sequence.
    """
    import SimpleITK as sitk

    return sitk.Euler3DTransform([float(v) for v in spec["center_mm"]],
                                 *np.deg2rad(np.asarray(spec["rotation_deg"], float)).tolist(),
                                 [float(v) for v in spec["translation_mm"]])


def _misalignment(rng: np.random.Generator, name: str, centre: np.ndarray, misalign: bool) -> dict[str, Any]:
    """A random rigid transform: rotation <= 5 deg (norm of the angles), translation 3..8 mm."""
    angles, shift = np.zeros(3), np.zeros(3)
    pivot = centre + rng.uniform(-10.0, 10.0, 3)
    if misalign and name != REFERENCE:
        angles = rng.uniform(-4.0, 4.0, 3)
        angles *= min(1.0, 5.0 / np.linalg.norm(angles))
        shift = rng.uniform(-6.0, 6.0, 3)
        norm = np.linalg.norm(shift)
        shift *= np.clip(norm, 3.0, 8.0) / norm
    spec: dict[str, Any] = {
        "maps": f"t1 world -> {name} world",
        "rotation_deg": [round(float(a), 6) for a in angles],
        "translation_mm": [round(float(t), 6) for t in shift],
        "center_mm": [round(float(c), 6) for c in pivot[::-1]],
        "tfm_file": None if name == REFERENCE else f"{name}_to_{REFERENCE}.tfm",
    }
    spec["matrix"] = np.asarray(rigid_transform(spec).GetMatrix()).reshape(3, 3).round(12).tolist()
    return spec


def _native_grid(rng: np.random.Generator, name: str, ref: Grid, spec: Mapping[str, Any]) -> Grid:
    """The sequence's own grid: its spacing and storage order, covering the moved head."""
    mult, signs = ACQUISITIONS[name]
    spacing = np.asarray(mult) * ref.spacing[0]
    shift = np.asarray(spec["translation_mm"])[::-1]
    first = np.asarray(ref.origin)
    last = first + (np.asarray(ref.shape) - 1) * np.asarray(ref.spacing)
    lo = first + shift - rng.uniform(0.0, 6.0, 3)
    hi = last + shift + rng.uniform(0.0, 6.0, 3)
    shape = np.floor((hi - lo) / spacing).astype(int) + 1
    origin = np.where(np.asarray(signs) > 0, lo, lo + (shape - 1) * spacing)
    return Grid(tuple(shape), spacing, origin, np.diag(np.asarray(signs, float)))


def _bias_field(rng: np.random.Generator, grid: Grid, centre: np.ndarray, strength: float) -> np.ndarray:
    """A smooth multiplicative field exp(quadratic polynomial of the world position), about +-20 %."""
    u = [(c - np.float32(centre[a])) / np.float32(100.0) for a, c in enumerate(_axis_coords(grid))]
    lin, quad, cross = rng.normal(0.0, 0.15, 3), rng.normal(0.0, 0.1, 3), rng.normal(0.0, 0.1, 3)
    log_b = sum(np.float32(lin[a]) * u[a] + np.float32(quad[a]) * u[a] ** 2 for a in range(3))
    log_b = log_b + np.float32(cross[0]) * u[0] * u[1] + np.float32(cross[1]) * u[0] * u[2] \
        + np.float32(cross[2]) * u[1] * u[2]
    return np.exp(np.clip(np.float32(strength) * log_b, -0.6, 0.6)).astype(np.float32)


def _acquire(rng: np.random.Generator, name: str, clean: np.ndarray, anatomy: _Anatomy,
             spec: Mapping[str, Any], wm_value: float, noise: float, bias: float) -> Volume:
    """Image the clean t1-grid intensities as sequence ``name`` sees them: its grid, pose, slice
    thickness, bias field and Rician noise; int16 scanner-like values."""
    import SimpleITK as sitk
    from scipy import ndimage

    ref = anatomy.grid
    if name == REFERENCE:
        grid, image = ref, clean
    else:
        grid = _native_grid(rng, name, ref, spec)
        extra = np.sqrt(max(grid.spacing[0] ** 2 - ref.spacing[0] ** 2, 0.0))
        if extra > 0:  # slice profile: FWHM of the slice thickness along S (axis 0 of the t1 grid)
            clean = ndimage.gaussian_filter1d(clean, extra / 2.355 / ref.spacing[0], axis=0, truncate=3.0)
        src = convert.set_sitk_grid(sitk.GetImageFromArray(clean), ref)
        out = sitk.Resample(src, convert.sitk_reference_image(grid), rigid_transform(spec).GetInverse(),
                            sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        image = sitk.GetArrayFromImage(out)
    if bias > 0:
        image = image * _bias_field(rng, grid, anatomy.centre, bias)
    if noise > 0:
        sigma = np.float32(rng.uniform(0.02, 0.035) * wm_value * noise)
        real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
        image = np.sqrt(real * real + imag * imag)
    voxels = np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
    return Volume.on_grid(voxels, grid, name=name, meta={"phantom": True, "sequence": name})


# --------------------------------------------------------------------------- public API
@dataclass(frozen=True, eq=False)
class PhantomCase:
    """A synthetic case with its ground truth.

    Attributes
    ----------
    case : Case
        Sequences ``t1``, ``t1c``, ``t2``, ``flair`` (int16 `Volume`), each on its own native grid
        (`ACQUISITIONS`) and misaligned by ``transforms[name]``; reference ``t1``; ``case.labels``
        is `truth`.
    truth : Volume
        uint8 label map on the t1 grid: 0 background, 1 necrotic core, 2 oedema, 3 enhancing.
    transforms : mapping of str to dict
        The known rigid misalignment of each sequence, as described by `TRANSFORM_CONVENTION`
        (``t1`` has the identity); `rigid_transform` turns one into a SimpleITK transform.
    tissues : Volume
        uint8 map of the dominant normal tissue on the t1 grid (`TISSUE_CLASSES`: 0 air, 1 white
        matter, 2 grey matter, 3 CSF, 4 skull, 5 scalp), also under the tumour. In memory only.
    info : mapping
        Seed, spacing (mm), head scale and tumour position/size, for reports and tests.
    """

    case: Case
    truth: Volume
    transforms: Mapping[str, Mapping[str, Any]]
    tissues: Volume
    info: Mapping[str, Any] = field(default_factory=dict)

    def transform(self, name: str) -> sitk.Euler3DTransform:
        """SimpleITK transform that resamples sequence ``name`` onto the t1 grid."""
        return rigid_transform(self.transforms[name])

    def truth_on_grid(self, name: str) -> Volume:
        """The truth on sequence ``name``'s native grid, where that sequence sees it (nearest)."""
        import SimpleITK as sitk

        grid = self.case[name].grid
        if name == REFERENCE:
            return self.truth
        out = sitk.Resample(convert.to_sitk(self.truth), convert.sitk_reference_image(grid),
                            self.transform(name).GetInverse(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8)
        return Volume.on_grid(sitk.GetArrayFromImage(out), grid, kind="label", name="labels")


def _check_spacing(spacing_mm: float) -> float:
    if not 0.5 <= float(spacing_mm) <= 4.0:
        raise OptionError(f"spacing_mm must be between 0.5 and 4 mm; got {spacing_mm!r}")
    return float(spacing_mm)


def make_phantom_case(seed: int, *, spacing_mm: float = 1.0, tumour: bool = True, misalign: bool = True,
                      noise: float = 1.0, bias: float = 1.0) -> PhantomCase:
    """Make one synthetic brain case in memory (deterministic for a given seed).

    Parameters
    ----------
    seed : int
        Non-negative; the same seed gives identical arrays, grids and transforms.
    spacing_mm : float
        Isotropic voxel size (mm) of the t1 reference grid; the other sequences' voxel sizes are
        multiples of it (`ACQUISITIONS`: T2 2x, FLAIR 3x along S). On 2 cores a 2 mm case takes
        under 1 s and a 1 mm case about 7 s, after a one-time template preparation per process
        (about 1.5 s, plus 4 s more for the first case under 1.5 mm).
    tumour : bool
        Grow a tumour (otherwise the truth is all background).
    misalign : bool
        Misalign t1c, t2 and flair by a random rigid transform (<= 5 deg, 3..8 mm); otherwise
        their transforms are the identity (their grids still differ).
    noise, bias : float
        Scale of the Rician noise (1: sigma 2-3.5 % of white matter) and of the bias field
        (1: about +-20 %); 0 turns either off.

    Returns
    -------
    PhantomCase
    """
    if int(seed) < 0:
        raise OptionError(f"seed must be a non-negative integer; got {seed!r}")
    spacing_mm = _check_spacing(spacing_mm)
    t0 = time.perf_counter()
    keys = ("anatomy", "tumour", "contrast", *SEQUENCES)
    rngs = dict(zip(keys, (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(len(keys)))))
    anatomy = _make_anatomy(rngs["anatomy"], spacing_mm)
    grown = _grow_tumour(rngs["tumour"], anatomy) if tumour else None
    labels = grown.labels if grown is not None else np.zeros(anatomy.grid.shape, np.uint8)
    truth = Volume.on_grid(labels, anatomy.grid, kind="label", name="labels")

    transforms: dict[str, dict[str, Any]] = {}
    sequences: dict[str, Volume] = {}
    for name in SEQUENCES:
        gain = rngs["contrast"].uniform(0.85, 1.15)
        values = {t: v * gain * rngs["contrast"].uniform(0.95, 1.05) for t, v in CONTRASTS[name].items()}
        clean = anatomy.maps @ np.asarray([values[t] for t in _TISSUES], np.float32)
        if grown is not None:
            box = clean[grown.box]
            total = sum(grown.fractions.values())
            box *= 1.0 - np.clip(total, 0.0, 1.0)
            for tissue, frac in grown.fractions.items():
                box += np.float32(values[tissue]) * frac
        transforms[name] = _misalignment(rngs[name], name, anatomy.centre, misalign)
        sequences[name] = _acquire(rngs[name], name, clean, anatomy, transforms[name], values["wm"], noise, bias)

    info = {"seed": int(seed), "spacing_mm": spacing_mm, "head_scale_lps": [round(float(v), 4) for v in anatomy.scale[::-1]],
            "head_centre_mm_lps": [round(float(v), 3) for v in anatomy.centre[::-1]],
            "tumour": grown.info if grown is not None else None}
    meta = {"source": "napari_mriseg.core.phantom", "phantom_seed": int(seed), "licence": "MNI152 2009a notice"}
    case = Case(sequences, REFERENCE, truth, f"phantom_{int(seed):03d}", meta)
    classes = np.argmax(anatomy.maps, axis=-1).astype(np.uint8) + 1
    classes[anatomy.maps.sum(axis=-1) < 0.5] = 0
    tissues = Volume.on_grid(classes, anatomy.grid, kind="label", name="tissues")
    log.info("phantom case %d at %.3g mm made in %.1f s", seed, spacing_mm, time.perf_counter() - t0)
    return PhantomCase(case, truth, MappingProxyType(transforms), tissues, MappingProxyType(info))


# --------------------------------------------------------------------------- files
#: The files `write_phantom_case` writes into a case folder.
CASE_FILES = (*(f"{n}.nii.gz" for n in SEQUENCES), "labels.nii.gz", "transforms.json",
              *(f"{n}_to_{REFERENCE}.tfm" for n in SEQUENCES if n != REFERENCE), "LICENSE-MNI152.txt")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; these are ordinary outputs
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_phantom_case(phantom: PhantomCase, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write a phantom case into ``folder`` (created if needed); returns the folder.

    Files (`CASE_FILES`): ``t1.nii.gz``, ``t1c.nii.gz``, ``t2.nii.gz``, ``flair.nii.gz`` (each on
    its own grid), ``labels.nii.gz`` (the truth on the t1 grid), ``transforms.json`` (the known
    misalignments, `TRANSFORM_CONVENTION` and the case's facts), ``{name}_to_t1.tfm`` (ITK
    transforms that resample each sequence onto t1) and ``LICENSE-MNI152.txt``. Every file is
    written whole or not at all.

    Raises
    ------
    OutputExistsError
        One of these files exists and ``overwrite`` is False (nothing is written then).
    """
    import SimpleITK as sitk

    from .io import write_volume

    out = Path(folder)
    if not overwrite:
        for name in CASE_FILES:
            if (out / name).exists():
                raise OutputExistsError("exists already; choose another folder or allow overwriting",
                                        path=out / name)
    out.mkdir(parents=True, exist_ok=True)
    for name, volume in phantom.case.sequences.items():
        write_volume(volume, out / f"{name}.nii.gz", overwrite=overwrite)
    write_volume(phantom.truth, out / "labels.nii.gz", overwrite=overwrite)
    for spec in phantom.transforms.values():
        if spec["tfm_file"]:
            transform = rigid_transform(spec)
            _atomic(out / spec["tfm_file"], lambda tmp, t=transform: sitk.WriteTransform(t, str(tmp)))
    record = {
        "convention": TRANSFORM_CONVENTION,
        "reference": REFERENCE,
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "sequences": {name: dict(spec) for name, spec in phantom.transforms.items()},
        "phantom": dict(phantom.info),
        "made_by": "napari_mriseg.core.phantom.make_phantom_case",
        "licence": "derived from the MNI ICBM152 2009a template: see LICENSE-MNI152.txt",
    }
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]",
                  json.dumps(record, indent=2))  # one line per list of numbers
    _atomic(out / "transforms.json", lambda tmp: tmp.write_text(text + "\n"))
    _atomic(out / "LICENSE-MNI152.txt", lambda tmp: tmp.write_text(MNI152_NOTICE))
    return out


def make_phantom(out_dir: str | Path, *, cases: int = 1, seed: int = 0, spacing_mm: float = 1.0,
                 tumour: bool = True, misalign: bool = True, overwrite: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write ``cases`` synthetic cases to ``out_dir/phantom_{seed+i:03d}/`` (see `write_phantom_case`).

    Parameters
    ----------
    out_dir : path
        Created if needed.
    cases : int
        Number of cases; case ``i`` uses seed ``seed + i``.
    seed : int
        Seed of the first case (non-negative).
    spacing_mm : float
        Isotropic t1 voxel size in mm (see `make_phantom_case`).
    tumour, misalign : bool
        As in `make_phantom_case`.
    overwrite : bool
        Replace the files of an existing case folder.
    progress : callable, optional
        Called as ``progress(done, total)`` after each case.

    Returns
    -------
    list of Path
        The case folders, in seed order.
    """
    if int(cases) < 1:
        raise OptionError(f"cases must be at least 1; got {cases!r}")
    if int(seed) < 0:
        raise OptionError(f"seed must be a non-negative integer; got {seed!r}")
    spacing_mm = _check_spacing(spacing_mm)
    seeds = [int(seed) + i for i in range(int(cases))]
    folders = [Path(out_dir) / f"phantom_{s:03d}" for s in seeds]
    for folder in folders if not overwrite else ():  # refuse before writing anything
        if any((folder / n).exists() for n in CASE_FILES):
            raise OutputExistsError("holds a phantom case already; choose another folder or allow "
                                    "overwriting", path=folder)
    for i, (s, folder) in enumerate(zip(seeds, folders)):
        pc = make_phantom_case(s, spacing_mm=spacing_mm, tumour=tumour, misalign=misalign)
        write_phantom_case(pc, folder, overwrite=overwrite)
        log.info("wrote %s", folder)
        if progress is not None:
            progress(i + 1, len(seeds))
    return folders
