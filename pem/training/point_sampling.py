"""Point sampling for the mask losses: bilinear sampling at normalized points and PointRend uncertainty points.

Points are ``(x, y)`` pairs in [0, 1]^2 over the whole (padded) image: ``(0, 0)`` is the top-left corner of the top-left
pixel and ``(1, 1)`` the bottom-right corner of the bottom-right pixel, so the same point addresses the same place in a
stride-4 prediction and in the full-resolution target. Sampling is bilinear with ``align_corners=False`` and zero
padding (``grid_sample`` defaults), as in Mask2Former.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


def point_sample(input: torch.Tensor, coords: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinearly sample ``input`` [B, C, H, W] at ``coords`` [B, P, 2] (x, y in [0, 1]) -> [B, C, P], input dtype."""
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(input.dtype)
    return F.grid_sample(input, grid, mode="bilinear", align_corners=align_corners).squeeze(3)


def random_points(rows: int, num_points: int, device: torch.device | str,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform points [rows, num_points, 2] float32 in [0, 1) on ``device``.

    With a ``generator`` the draw happens on the generator's device (then moves to ``device``), so a CPU generator
    works for CUDA tensors; without one the global RNG of ``device`` is used.
    """
    source = generator.device if generator is not None else device
    return torch.rand(rows, num_points, 2, generator=generator, device=source).to(device)


def image_generator(image_seed: int, layer: int, device: torch.device | str) -> torch.Generator:
    """The generator for one image and one prediction layer, seeded from ``SeedSequence([image_seed, layer])``.

    ``image_seed`` and ``layer`` are non-negative ints. The stream depends only on these two numbers (and the device
    type), never on the batch the image sits in.
    """
    seed = int(np.random.SeedSequence([image_seed, layer]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device).manual_seed(seed)


class UncertaintyPoints(NamedTuple):
    """The parts of one ``uncertainty_points`` draw, all float32 in [0, 1].

    ``candidates`` [R, M, 2]: the oversampled uniform points; ``importance`` [R, k, 2]: the k candidates of highest
    uncertainty (smallest |logit|) per mask, in decreasing uncertainty; ``random`` [R, P - k, 2]: fresh uniform points.
    """

    candidates: torch.Tensor
    importance: torch.Tensor
    random: torch.Tensor


def sample_uncertainty_points(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> UncertaintyPoints:
    """PointRend point selection for ``logits`` [R, 1, h, w]; see ``UncertaintyPoints`` for the three parts.

    M = int(num_points * oversample_ratio) candidates are drawn first, then the P - k random points, where
    k = int(importance_sample_ratio * num_points). Uncertainty is -|logit| bilinearly sampled at the candidates.
    """
    if oversample_ratio < 1.0:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    with torch.no_grad():
        rows = logits.shape[0]
        num_candidates = int(num_points * oversample_ratio)
        num_important = int(importance_sample_ratio * num_points)
        candidates = random_points(rows, num_candidates, logits.device, generator)
        uncertainty = -point_sample(logits.detach().float(), candidates).squeeze(1).abs()
        top = uncertainty.topk(num_important, dim=1).indices
        importance = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
        random = random_points(rows, num_points - num_important, logits.device, generator)
    return UncertaintyPoints(candidates, importance, random)


def uncertainty_points(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Points [R, num_points, 2] float32 in [0, 1] for ``logits`` [R, 1, h, w]: the importance points, then random."""
    points = sample_uncertainty_points(logits, num_points, oversample_ratio, importance_sample_ratio, generator)
    return torch.cat([points.importance, points.random], dim=1)
