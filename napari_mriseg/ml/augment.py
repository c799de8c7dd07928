"""Training augmentation on batches of patches (torch, CPU or GPU).

Spatial transforms (flips, 90-degree rotations, small rotations, scaling, elastic deformation)
are applied identically to image and labels (labels resampled nearest); intensity transforms
(gamma, noise, bias field) touch the image only. Tensors: image ``(B, C, Z, Y, X)`` float,
labels ``(B, Z, Y, X)`` long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (rotation in degrees, scale as a factor)."""

    p_flip: float = 0.5
    p_rot90: float = 0.3
    p_affine: float = 0.3
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    p_elastic: float = 0.2
    elastic_magnitude: float = 0.03   # fraction of the patch size
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.15
    noise_std: float = 0.1
    p_bias: float = 0.3
    bias_strength: float = 0.3


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(3, 3) rotation from three angles in radians (about the three axes)."""
    a, b, c = angles.tolist()
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return (rz @ ry @ rx).float()


def augment(image: torch.Tensor, labels: torch.Tensor, gen: torch.Generator,
            cfg: AugmentConfig = AugmentConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly augment a batch; returns new tensors (the inputs are not modified).

    ``gen`` is a CPU ``torch.Generator``: the same seed gives the same augmentation.
    """
    def rand() -> float:
        return float(torch.rand((), generator=gen))

    image, labels = image.clone(), labels.clone()
    B = image.shape[0]
    spatial = image.shape[2:]
    dims = len(spatial)
    for b in range(B):
        x, y = image[b], labels[b]
        for ax in range(dims):
            if rand() < cfg.p_flip:
                x, y = x.flip(ax + 1), y.flip(ax)
        if dims == 3 and spatial[1] == spatial[2] and rand() < cfg.p_rot90:
            k = 1 + int(torch.randint(3, (), generator=gen))
            x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (1, 2))
        elif dims == 2 and spatial[0] == spatial[1] and rand() < cfg.p_rot90:
            k = 1 + int(torch.randint(3, (), generator=gen))
            x, y = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (0, 1))
        image[b], labels[b] = x, y
    # affine + elastic in one resampling
    theta = torch.eye(dims + 1)[:dims].repeat(B, 1, 1)
    warp = torch.zeros(B, dtype=torch.bool)
    for b in range(B):
        if rand() < cfg.p_affine:
            ang = (torch.rand(3, generator=gen) * 2 - 1) * math.radians(cfg.max_rotation_deg)
            lo, hi = cfg.scale_range
            s = lo + (hi - lo) * rand()
            rot = _rotation(ang) if dims == 3 else _rotation(torch.tensor([0.0, 0.0, float(ang[0])]))[:2, :2]
            theta[b, :, :dims] = rot / s
            warp[b] = True
    grid = F.affine_grid(theta, [B, 1, *spatial], align_corners=False)
    for b in range(B):
        if rand() < cfg.p_elastic:
            coarse = torch.randn((1, dims) + (4,) * dims, generator=gen) * 2 * cfg.elastic_magnitude
            mode = "trilinear" if dims == 3 else "bilinear"
            field = F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=False)[0]
            grid[b] = grid[b] + field.movedim(0, -1)
            warp[b] = True
    if warp.any():
        idx = torch.nonzero(warp).flatten()
        g = grid[idx].to(image.device)
        image[idx] = F.grid_sample(image[idx], g, mode="bilinear", padding_mode="zeros", align_corners=False)
        lab = labels[idx].unsqueeze(1).float()
        labels[idx] = F.grid_sample(lab, g, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long()
    # intensity, image only
    for b in range(B):
        for c in range(image.shape[1]):
            x = image[b, c]
            if rand() < cfg.p_gamma:
                lo, hi = x.min(), x.max()
                g = cfg.gamma_range[0] + (cfg.gamma_range[1] - cfg.gamma_range[0]) * rand()
                rng = (hi - lo).clamp_min(1e-6)
                x = ((x - lo) / rng) ** g * rng + lo
            if rand() < cfg.p_bias:
                coarse = 1 + cfg.bias_strength * (torch.rand((1, 1) + (3,) * dims, generator=gen) * 2 - 1)
                mode = "trilinear" if dims == 3 else "bilinear"
                x = x * F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=True)[0, 0].to(x.device)
            if rand() < cfg.p_noise:
                x = x + cfg.noise_std * rand() * torch.randn(x.shape, generator=gen).to(x.device)
            image[b, c] = x
    return image, labels
