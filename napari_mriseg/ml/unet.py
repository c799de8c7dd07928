"""A configurable UNet (2D or 3D) in plain torch.

Encoder levels of two 3x3(x3) convolutions (norm + LeakyReLU), strided convolution to go down,
transposed convolution to go up, skip connections by concatenation, a 1x1 head giving logits.
Optional residual blocks and deep-supervision heads (returned in training mode only).

Tensors are ``(batch, channels, Z, Y, X)`` for 3D and ``(batch, channels, Y, X)`` for 2D.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Architecture, ModelConfig


def _layers(dim: int) -> tuple[type, type, type, type]:
    if dim == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d, nn.BatchNorm3d
    return nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d, nn.BatchNorm2d


def _norm(arch: Architecture, features: int) -> nn.Module:
    _, _, inorm, bnorm = _layers(arch.dim)
    if arch.norm == "instance":
        return inorm(features, affine=True)
    if arch.norm == "batch":
        return bnorm(features)
    return nn.Identity()


class ConvBlock(nn.Module):
    """Two convolutions with norm and LeakyReLU; the first may stride by 2."""

    def __init__(self, arch: Architecture, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        conv = _layers(arch.dim)[0]
        bias = arch.norm == "none"
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = _norm(arch, c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=bias)
        self.norm2 = _norm(arch, c_out)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.skip: nn.Module | None = None
        if arch.residual:
            self.skip = (nn.Identity() if c_in == c_out and stride == 1
                         else conv(c_in, c_out, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c_in, *spatial)`` -> ``(B, c_out, *spatial / stride)``."""
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.skip is not None:
            y = y + self.skip(x)
        return self.act(y)


class UNet(nn.Module):
    """UNet for ``in_channels`` sequences and ``out_channels`` classes (background included).

    In eval mode ``forward`` returns logits ``(B, out_channels, *spatial)``. In training mode
    with deep supervision it returns a list of logits, full resolution first, then each coarser
    decoder level.
    """

    def __init__(self, in_channels: int, out_channels: int, arch: Architecture | None = None) -> None:
        super().__init__()
        self.arch = arch or Architecture()
        feats = self.arch.features()
        conv, up, _, _ = _layers(self.arch.dim)
        self.encoder = nn.ModuleList()
        c_prev = in_channels
        for level, f in enumerate(feats):
            self.encoder.append(ConvBlock(self.arch, c_prev, f, stride=1 if level == 0 else 2))
            c_prev = f
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for level in range(len(feats) - 2, -1, -1):
            self.upsample.append(up(feats[level + 1], feats[level], 2, stride=2))
            self.decoder.append(ConvBlock(self.arch, 2 * feats[level], feats[level]))
            if self.arch.deep_supervision or level == 0:
                self.heads.append(conv(feats[level], out_channels, 1))
        if len(feats) == 1:
            self.heads.append(conv(feats[0], out_channels, 1))
        self.heads = nn.ModuleList(list(self.heads)[::-1])  # full resolution first

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits for ``x`` ``(B, in_channels, *spatial)``; spatial sizes multiples of ``2**(depth-1)``."""
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()
        decoded = []
        for up, block in zip(self.upsample, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
            decoded.append(x)
        if len(decoded) == 0:  # depth 1: no decoder
            decoded.append(x)
        decoded = decoded[::-1]  # full resolution first
        if self.training and self.arch.deep_supervision:
            return [head(d) for head, d in zip(self.heads, decoded)]
        return self.heads[0](decoded[0])


def build_network(config: ModelConfig) -> UNet:
    """The (untrained) network that ``config`` describes."""
    return UNet(config.in_channels, config.out_channels, config.architecture)
