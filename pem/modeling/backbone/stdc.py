"""STDCNet (STDC-Seg) as the official PEM uses it: "cat" bottlenecks, 4 branches, plain BN.

Outputs ``res2..res5`` at strides 4/8/16/32 with base, 4*base, 8*base, 16*base channels
(64/256/512/1024 for STDC1 and STDC2).
"""
from __future__ import annotations

import torch
from torch import nn

from pem.modeling.layers import make_norm


class ConvX(nn.Sequential):
    """conv (no bias) -> norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 norm: str = "BN") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.norm = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)


class CatBottleneck(nn.Module):
    """Four branches 1x1 -> 3x3 -> 3x3 -> 3x3 with widths o/2, o/4, o/8, o/8, concatenated to o channels.

    With stride 2 the first branch's output goes through a depthwise 3x3 stride-2 conv + norm before the
    second branch, and its concatenated copy is 3x3 average-pooled with stride 2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        half = out_channels // 2
        widths = [half, out_channels // 4, out_channels // 8, out_channels // 8]
        self.branches = nn.ModuleList([ConvX(in_channels, half, 1, norm=norm)])
        for previous, width in zip(widths[:-1], widths[1:]):
            self.branches.append(ConvX(previous, width, 3, norm=norm))
        self.downsample: nn.Module | None = None
        self.skip_pool: nn.Module | None = None
        if stride == 2:
            self.downsample = nn.Sequential()
            self.downsample.add_module("conv", nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False))
            self.downsample.add_module("norm", make_norm(norm, half))
            self.skip_pool = nn.AvgPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.branches[0](x)
        out = first if self.downsample is None else self.downsample(first)
        outputs = []
        for branch in self.branches[1:]:
            out = branch(out)
            outputs.append(out)
        if self.skip_pool is not None:
            first = self.skip_pool(first)
        return torch.cat([first, *outputs], dim=1)


class STDCNet(nn.Module):
    """Input [B, 3, H, W] normalized; output dict ``res2..res5``."""

    def __init__(self, base: int = 64, layers: tuple[int, ...] = (2, 2, 2), norm: str = "BN") -> None:
        super().__init__()
        self.stem = nn.ModuleList([ConvX(3, base // 2, 3, 2, norm), ConvX(base // 2, base, 3, 2, norm)])
        self.stages = nn.ModuleList()
        in_channels = base
        for index, num_blocks in enumerate(layers):
            out_channels = base * 2 ** (index + 2)
            blocks = [CatBottleneck(in_channels if i == 0 else out_channels, out_channels, 2 if i == 0 else 1, norm)
                      for i in range(num_blocks)]
            self.stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        self.out_channels = {"res2": base, "res3": base * 4, "res4": base * 8, "res5": base * 16}
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem[1](self.stem[0](x))
        outputs = {"res2": x}
        for index, stage in enumerate(self.stages):
            x = stage(x)
            outputs[f"res{index + 3}"] = x
        return outputs
