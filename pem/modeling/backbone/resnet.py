"""ResNet-50 as detectron2 builds it for PEM: stride in the 3x3 conv, no dilation, FREEZE_AT 0.

Outputs ``res2..res5`` at strides 4/8/16/32 with 256/512/1024/2048 channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pem.modeling.layers import make_norm


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with a projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, mid_channels, 1)
        self.norm1 = make_norm(norm, mid_channels)
        self.conv2 = _conv(mid_channels, mid_channels, 3, stride)
        self.norm2 = make_norm(norm, mid_channels)
        self.conv3 = _conv(mid_channels, out_channels, 1)
        self.norm3 = make_norm(norm, out_channels)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", _conv(in_channels, out_channels, 1, stride))
            self.shortcut.add_module("norm", make_norm(norm, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNet50(nn.Module):
    """Input [B, 3, H, W] normalized; output dict ``res2..res5``."""

    stage_blocks = (3, 4, 6, 3)
    out_channels = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}

    def __init__(self, norm: str = "SyncBN") -> None:
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.add_module("conv", _conv(3, 64, 7, 2))
        self.stem.add_module("norm", make_norm(norm, 64))
        self.stem.add_module("relu", nn.ReLU(inplace=True))
        self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
        in_channels, mid_channels = 64, 64
        self.stages = nn.ModuleList()
        for index, num_blocks in enumerate(self.stage_blocks):
            out_channels = mid_channels * 4
            blocks = [
                Bottleneck(in_channels if i == 0 else out_channels, mid_channels, out_channels,
                           2 if (i == 0 and index > 0) else 1, norm)
                for i in range(num_blocks)
            ]
            self.stages.append(nn.Sequential(*blocks))
            in_channels, mid_channels = out_channels, mid_channels * 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        outputs = {}
        for index, stage in enumerate(self.stages):
            x = stage(x)
            outputs[f"res{index + 2}"] = x
        return outputs
