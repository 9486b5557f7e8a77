"""Small building blocks shared by the backbones and the pixel decoder."""
from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers (detectron2's FrozenBN).

    Input and output [B, C, H, W]; ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def make_norm(kind: str, channels: int) -> nn.Module:
    """``BN`` and ``SyncBN`` build ``nn.BatchNorm2d`` (SyncBN is switched on for DDP training); ``FrozenBN``."""
    if kind in ("BN", "SyncBN"):
        return nn.BatchNorm2d(channels)
    if kind == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}; expected BN, SyncBN or FrozenBN")


class ConvNormReLU(nn.Sequential):
    """conv (no bias) -> norm -> ReLU; kaiming-normal init with a=1 as the official pixel decoder."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, norm: str = "SyncBN", stride: int = 1
    ) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight, a=1)
        super().__init__()
        self.conv = conv
        self.norm = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
