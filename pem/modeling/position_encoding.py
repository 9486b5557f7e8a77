"""Sine position encoding of a feature map (DETR/Mask2Former style, normalized coordinates, no padding mask)."""
from __future__ import annotations

import math

import torch


def sine_position_encoding(
    height: int, width: int, num_feats: int, dtype: torch.dtype, device: torch.device, temperature: float = 1e4
) -> torch.Tensor:
    """[1, 2*num_feats, height, width]: sin/cos of y then x at ``num_feats`` frequencies each.

    Coordinates are 1..n divided by (n + 1e-6) and scaled by 2*pi; channel pairs interleave sin and cos.
    """
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=dtype, device=device)
    x = torch.arange(1, width + 1, dtype=dtype, device=device)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    exponent = 2 * torch.div(torch.arange(num_feats, device=device), 2, rounding_mode="floor") / num_feats
    dim_t = (temperature ** exponent.to(torch.float64)).to(dtype)
    pos_y = _interleave(y[:, None] / dim_t)  # height, F
    pos_x = _interleave(x[:, None] / dim_t)  # width, F
    pos = torch.cat(
        [pos_y[:, None, :].expand(height, width, num_feats), pos_x[None, :, :].expand(height, width, num_feats)],
        dim=-1,
    )
    return pos.permute(2, 0, 1)[None]


def _interleave(angles: torch.Tensor) -> torch.Tensor:
    """[n, F] angles -> [n, F] with sin at even and cos at odd feature indices."""
    return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)
