"""The PEM meta-architecture: normalize and pad, backbone, pixel decoder, transformer decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pem.config import PEMConfig
from pem.modeling.backbone import build_backbone
from pem.modeling.pixel_decoder import PixelDecoder
from pem.modeling.transformer_decoder import TransformerDecoder


class PEM(nn.Module):
    """Prototype-based Efficient MaskFormer.

    ``forward(images)``: images float [B, 3, H, W], RGB in 0..255 (float64 works too). The model normalizes with
    the preset's mean/std and zero-pads the normalized tensor bottom/right to a multiple of 32 (H', W').
    Returns ``pred_logits`` [B, Q, K+1] (last column "no object") and ``pred_masks`` [B, Q, H'/4, W'/4] (raw
    logits of the final prediction); in training mode also ``aux_outputs``, the 6 earlier predictions.
    """

    def __init__(self, config: PEMConfig) -> None:
        super().__init__()
        self.config = config
        model = config.model
        self.backbone = build_backbone(model.backbone)
        self.pixel_decoder = PixelDecoder(
            self.backbone.out_channels, model.conv_dim, model.mask_dim, model.decoder_norm, model.csm_reduction
        )
        self.transformer_decoder = TransformerDecoder(
            model.conv_dim, model.hidden_dim, model.num_heads, model.ffn_dim, model.num_queries, model.dec_layers,
            model.num_classes, model.mask_dim, model.decoder_norm,
        )
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in 0..255 -> normalized [B, 3, H', W'], zero-padded to a multiple of the size divisibility."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W] (RGB), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"expected floating-point images in 0..255, got {images.dtype}")
        x = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        divisor = self.config.size_divisibility
        height, width = images.shape[-2:]
        padded_h, padded_w = (height + divisor - 1) // divisor * divisor, (width + divisor - 1) // divisor * divisor
        return F.pad(x, (0, padded_w - width, 0, padded_h - height))  # written for symbolic sizes (export)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | list[dict[str, torch.Tensor]]]:
        features = self.backbone(self.preprocess(images))
        mask_features, multi_scale = self.pixel_decoder(features)
        predictions = self.transformer_decoder(multi_scale, mask_features)
        outputs: dict[str, torch.Tensor | list[dict[str, torch.Tensor]]] = dict(predictions[-1])
        if self.training:
            outputs["aux_outputs"] = predictions[:-1]
        return outputs
