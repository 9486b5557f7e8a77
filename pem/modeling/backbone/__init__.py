"""Backbones: ResNet-50 (detectron2 layout) and STDCNet; each returns ``res2..res5`` feature maps."""
from __future__ import annotations

from torch import nn

from pem.config import BackboneConfig
from pem.modeling.backbone.resnet import ResNet50
from pem.modeling.backbone.stdc import STDCNet

__all__ = ["ResNet50", "STDCNet", "build_backbone"]


def build_backbone(config: BackboneConfig) -> nn.Module:
    """The backbone named by ``config``; it exposes ``out_channels: dict[str, int]``."""
    if config.name == "resnet50":
        return ResNet50(config.norm)
    if config.name == "stdc":
        return STDCNet(config.stdc_base, config.stdc_layers, config.norm)
    raise ValueError(f"unknown backbone {config.name!r}; expected resnet50 or stdc")
