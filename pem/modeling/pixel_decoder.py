"""PEM's pixel decoder: channel gates (CSM), deformable top-down FPN and mask features.

Shapes (B batch, D = conv_dim, M = mask_dim; H, W the padded input size):
``res2..res5`` [B, C_i, H/s, W/s] for s = 4, 8, 16, 32 ->
``mask_features`` [B, M, H/4, W/4] (non-negative: it ends with a ReLU) and
``multi_scale_features`` = [o32, o16, o8], each [B, D, H/s, W/s].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pem.kernels import deform_conv2d_fast as deform_conv2d
from pem.modeling.layers import ConvNormReLU, make_norm


class ChannelGate(nn.Module):
    """CSM: ``x + x * w`` with ``w = sigmoid(sigmoid(MLP(GAP(x))))`` (the official code applies sigmoid twice)."""

    def __init__(self, channels: int, reduction: int, norm: str) -> None:
        super().__init__()
        hidden = channels // reduction
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.norm = make_norm(norm, hidden)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(torch.sigmoid(self.expand(F.relu(self.norm(self.reduce(pooled))))))
        return x + x * gate


class ModulatedDeformConv(nn.Module):
    """DCNv2 3x3 conv, stride 1, padding 1, no bias; offsets and modulation come from the caller."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=1)  # detectron2's c2_msra_fill

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, padding=(1, 1), mask=mask)


class DeformLayer(nn.Module):
    """Offset conv -> modulated deformable conv -> norm -> ReLU (level output) -> 2x transposed conv -> norm -> ReLU.

    The offset conv gives 27 channels: the first 18 are the offsets in the standard DCNv2 layout
    (interleaved dy, dx per kernel tap), the last 9 go through a sigmoid and modulate the taps.
    Returns (level output [B, D, h, w], upsampled [B, D, 2h, 2w]).
    """

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(channels, 27, 3, padding=1)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.deform_conv = ModulatedDeformConv(channels, channels)
        self.deform_norm = make_norm(norm, channels)
        self.upsample = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
        self._init_bilinear(self.upsample.weight)
        self.upsample_norm = make_norm(norm, channels)

    @staticmethod
    @torch.no_grad()
    def _init_bilinear(weight: torch.Tensor) -> None:
        """The official init writes a bilinear kernel into slice [c, 0] only; the rest keeps its random init."""
        size = weight.shape[-1]
        factor = (size + 1) // 2
        center = factor - 1 if size % 2 == 1 else factor - 0.5
        grid = torch.arange(size, dtype=weight.dtype)
        kernel_1d = 1 - (grid - center).abs() / factor
        weight[:, 0] = kernel_1d[:, None] * kernel_1d[None, :]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset_mask = self.offset_conv(x)
        offset, mask = offset_mask[:, :18], torch.sigmoid(offset_mask[:, 18:])
        out = F.relu(self.deform_norm(self.deform_conv(x, offset, mask)))
        upsampled = F.relu(self.upsample_norm(self.upsample(out)))
        return out, upsampled


class PixelDecoder(nn.Module):
    """Top-down decoder over res5 -> res2 with a global-context term from the raw res5."""

    def __init__(self, in_channels: dict[str, int], conv_dim: int, mask_dim: int, norm: str, reduction: int) -> None:
        super().__init__()
        self.in_features = ("res2", "res3", "res4", "res5")
        self.input_projections = nn.ModuleList(
            [ConvNormReLU(in_channels[name], conv_dim, 1, norm) for name in self.in_features]
        )
        self.global_context = ConvNormReLU(in_channels["res5"], conv_dim, 1, norm)
        # gates and deformable layers are ordered top-down: index 0 works at stride 32
        self.channel_gates = nn.ModuleList([ChannelGate(conv_dim, reduction, norm) for _ in range(4)])
        self.deform_layers = nn.ModuleList([DeformLayer(conv_dim, norm) for _ in range(3)])
        self.mask_projection = ConvNormReLU(conv_dim, mask_dim, 1, norm)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        projected = [proj(features[name]) for proj, name in zip(self.input_projections, self.in_features)]
        context = self.global_context(features["res5"].mean(dim=(2, 3), keepdim=True))
        x = self.channel_gates[0](projected[3]) + context
        multi_scale = []
        for level, deform_layer in enumerate(self.deform_layers):
            out, upsampled = deform_layer(x)
            multi_scale.append(out)
            x = self.channel_gates[level + 1](projected[2 - level]) + upsampled
        return self.mask_projection(x), multi_scale
