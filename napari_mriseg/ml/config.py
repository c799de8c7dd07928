"""`ModelConfig`: everything a model file says about its network besides the weights.

A model is data: ``config.json`` holds the architecture, the input sequences in channel order,
the per-channel normalisation, the target spacing and patch size, the label names and values
and a training summary. It round-trips to JSON exactly (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..core.errors import check_choice
from .errors import ModelFileError, ModelVersionError

#: Version of the model-file format this code writes; it reads this one and older ones.
FORMAT_VERSION = 1

#: BraTS-like default labels (background 0 is implicit).
BRATS_LABELS: dict[str, int] = {"necrotic": 1, "oedema": 2, "enhancing": 3}

NORMALISATIONS = ("zscore_head", "zscore", "none")
NORMS = ("instance", "batch", "none")


@dataclass(frozen=True)
class Architecture:
    """A UNet's shape.

    Parameters
    ----------
    dim : {2, 3}
        2 = slice by slice along `ModelConfig.axis_2d`; 3 = 3D patches.
    depth : int
        Number of resolution levels (``depth - 1`` down-samplings by 2).
    base_features : int
        Feature maps at full resolution; doubled at each level, capped at ``max_features``.
    max_features : int
    norm : {"instance", "batch", "none"}
    residual : bool
        Residual (projected identity) connections in each block.
    deep_supervision : bool
        Extra 1x1 heads on the decoder levels, used by training only.
    """

    dim: int = 3
    depth: int = 4
    base_features: int = 16
    max_features: int = 320
    norm: str = "instance"
    residual: bool = False
    deep_supervision: bool = False

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ModelFileError(f"architecture dim must be 2 or 3; got {self.dim!r}")
        if not 1 <= int(self.depth) <= 8 or int(self.base_features) < 1:
            raise ModelFileError(f"depth must be 1..8 and base_features >= 1; got {self.depth}, "
                                 f"{self.base_features}")
        check_choice("norm", self.norm, NORMS)

    def features(self) -> list[int]:
        """Feature maps per level, full resolution first."""
        return [min(self.base_features * 2**i, self.max_features) for i in range(self.depth)]


@dataclass(frozen=True)
class ModelConfig:
    """What a model needs besides its weights.

    Parameters
    ----------
    sequences : tuple of str
        Input sequence names in channel order (e.g. ``("t1", "t1c", "t2", "flair")``).
    labels : dict of str to int
        Label name -> value written in the output label map (background 0 is implicit).
        The network's class ``c`` (1-based) predicts ``labels`` value number ``c`` in sorted order.
    architecture : Architecture
    normalisation : tuple of str
        One scheme per channel: ``"zscore_head"`` (z-score inside the head mask, 0 outside),
        ``"zscore"`` (whole volume) or ``"none"``.
    target_spacing : (3,) tuple of float
        Voxel size in mm, array axis order ``(Z, Y, X)``, that the network works at.
    patch_size : tuple of int
        3 sizes ``(Z, Y, X)`` for a 3D model; 2 sizes (the in-plane axes, in array order) for a
        2D model. Each must be divisible by ``2 ** (depth - 1)``.
    axis_2d : int or None
        For 2D models, the array axis (0, 1 or 2) that slices are taken along.
    training : dict
        Summary of training (epochs, Dice per label, split, seed...). Free-form JSON data.
    format_version : int
    software_version : str
    """

    sequences: tuple[str, ...]
    labels: dict[str, int] = field(default_factory=lambda: dict(BRATS_LABELS))
    architecture: Architecture = field(default_factory=Architecture)
    normalisation: tuple[str, ...] = ()
    target_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, ...] = (128, 128, 128)
    axis_2d: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    software_version: str = ""

    def __post_init__(self) -> None:
        seqs = tuple(str(s) for s in self.sequences)
        if not seqs or len(set(seqs)) != len(seqs):
            raise ModelFileError(f"sequences must be distinct names, at least one; got {list(seqs)}")
        object.__setattr__(self, "sequences", seqs)
        norm = tuple(self.normalisation) or ("zscore_head",) * len(seqs)
        if len(norm) != len(seqs):
            raise ModelFileError(f"{len(norm)} normalisation schemes for {len(seqs)} channels")
        for n in norm:
            check_choice("normalisation", n, NORMALISATIONS)
        object.__setattr__(self, "normalisation", norm)
        labels = {str(k): int(v) for k, v in dict(self.labels).items()}
        values = list(labels.values())
        if not labels or len(set(values)) != len(values) or min(values) < 1 or max(values) > 255:
            raise ModelFileError(f"labels must map names to distinct values 1..255; got {labels}")
        object.__setattr__(self, "labels", dict(sorted(labels.items(), key=lambda kv: kv[1])))
        if isinstance(self.architecture, dict):
            object.__setattr__(self, "architecture", Architecture(**self.architecture))
        arch = self.architecture
        sp = tuple(float(s) for s in self.target_spacing)
        if len(sp) != 3 or min(sp) <= 0 or not all(math.isfinite(s) for s in sp):
            raise ModelFileError(f"target_spacing must be 3 positive numbers (mm); got {sp}")
        object.__setattr__(self, "target_spacing", sp)
        patch = tuple(int(p) for p in self.patch_size)
        if len(patch) != arch.dim:
            raise ModelFileError(f"a {arch.dim}D model needs {arch.dim} patch sizes; got {list(patch)}")
        step = 2 ** (arch.depth - 1)
        if any(p < step or p % step for p in patch):
            raise ModelFileError(f"patch sizes {list(patch)} must be multiples of {step} (2**(depth-1))")
        object.__setattr__(self, "patch_size", patch)
        if arch.dim == 2:
            if self.axis_2d not in (0, 1, 2):
                raise ModelFileError(f"a 2D model needs axis_2d in 0, 1, 2; got {self.axis_2d!r}")
        elif self.axis_2d is not None:
            raise ModelFileError("axis_2d is only for 2D models")

    @property
    def in_channels(self) -> int:
        """Number of input channels (one per sequence)."""
        return len(self.sequences)

    @property
    def out_channels(self) -> int:
        """Background plus one class per label."""
        return len(self.labels) + 1

    @property
    def patch_size_3d(self) -> tuple[int, int, int]:
        """The patch in array order ``(Z, Y, X)``; size 1 along ``axis_2d`` for 2D models."""
        if self.architecture.dim == 3:
            return self.patch_size  # type: ignore[return-value]
        p = list(self.patch_size)
        p.insert(self.axis_2d, 1)  # type: ignore[arg-type]
        return tuple(p)  # type: ignore[return-value]

    def with_training(self, **summary: Any) -> ModelConfig:
        """A copy whose ``training`` summary is updated with ``summary``."""
        return replace(self, training={**self.training, **summary})

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written as ``config.json`` (`from_dict` reads it back exactly)."""
        d = asdict(self)
        d["sequences"] = list(self.sequences)
        d["normalisation"] = list(self.normalisation)
        d["target_spacing"] = list(self.target_spacing)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Parse a ``config.json`` dict; refuse newer formats and unknown or missing fields."""
        if not isinstance(data, dict):
            raise ModelFileError("config.json must hold a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise ModelFileError("config.json has no integer format_version")
        if version > FORMAT_VERSION:
            raise ModelVersionError(
                f"the model file has format version {version}, newer than this napari-mriseg reads "
                f"(up to {FORMAT_VERSION}); upgrade napari-mriseg to use it"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelFileError(f"config.json has unknown fields {unknown}")
        arch = data.get("architecture", {})
        if not isinstance(arch, dict) or set(arch) - set(Architecture.__dataclass_fields__):
            raise ModelFileError(f"config.json architecture is not valid: {arch!r}")
        try:
            return cls(**{**data, "architecture": Architecture(**arch)})
        except TypeError as exc:
            raise ModelFileError(f"config.json is incomplete: {exc}") from exc
