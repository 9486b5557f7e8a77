"""Hungarian matching of predicted queries to target masks (Mask2Former's matcher, as PEM trains with it)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from pem.training.point_sampling import point_sample, random_points

Generators = torch.Generator | Sequence[torch.Generator | None] | None


def per_image_generators(generators: Generators, batch_size: int) -> list[torch.Generator | None]:
    """One entry per image: a single generator (or None, the global RNG) is shared; a sequence is used as given."""
    if generators is None or isinstance(generators, torch.Generator):
        return [generators] * batch_size
    if len(generators) != batch_size:
        raise ValueError(f"expected {batch_size} generators, one per image, got {len(generators)}")
    return list(generators)


def batch_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean BCE-with-logits: ``logits`` [Q, P], ``targets`` [N, P] in [0, 1] -> [Q, N] float32."""
    logits, targets = logits.float(), targets.float()
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1.0 - targets).T) / logits.shape[1]


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise dice cost 1 - (2 p.t + 1) / (sum p + sum t + 1), p = sigmoid(logits) [Q, P], t [N, P] -> [Q, N]."""
    probs, targets = logits.float().sigmoid(), targets.float()
    numerator = 2.0 * probs @ targets.T + 1.0
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1.0
    return 1.0 - numerator / denominator


class HungarianMatcher(nn.Module):
    """Per-image optimal assignment of queries to targets under C = w_mask*BCE + w_class*(-p) + w_dice*dice.

    The mask costs use ``num_points`` uniform random points in [0, 1]^2 shared by all predictions and targets of one
    image. All cost math is float32 with autocast disabled.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("at least one matching cost must be non-zero")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
                    masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Cost [Q, N] float32 for one image.

        ``pred_logits`` [Q, K+1]; ``pred_masks`` [Q, h, w] logits; ``labels`` int64 [N] in 0..K-1; ``masks`` [N, H, W]
        bool or 0/1 float. Draws one [num_points, 2] set of points from ``generator`` (global RNG when None).
        """
        with torch.autocast(pred_masks.device.type, enabled=False):
            class_cost = -pred_logits.float().softmax(-1)[:, labels.to(pred_logits.device)]
            coords = random_points(1, self.num_points, pred_masks.device, generator)
            pred_points = point_sample(pred_masks.float()[None], coords)[0]
            target_points = point_sample(masks.to(pred_masks.device, torch.float32)[None], coords)[0]
            mask_cost = batch_sigmoid_ce_cost(pred_points, target_points)
            dice_cost = batch_dice_cost(pred_points, target_points)
        return self.cost_mask * mask_cost + self.cost_class * class_cost + self.cost_dice * dice_cost

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]],
                generators: Generators = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match ``outputs`` (``pred_logits`` [B, Q, K+1], ``pred_masks`` [B, Q, h, w]) to ``targets``.

        ``targets``: B dicts with ``labels`` int64 [N] and ``masks`` [N, H, W]. ``generators``: one generator for all
        images, one per image, or None (global RNG). Returns per image (pred_indices, target_indices), int64 CPU
        tensors of length min(Q, N), sorted by pred index; empty for an image with no targets.
        """
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        image_generators = per_image_generators(generators, pred_logits.shape[0])
        indices = []
        for b, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(pred_logits[b], pred_masks[b], target["labels"], target["masks"],
                                    image_generators[b])
            # a diverged model's NaN/Inf costs still get a matching (any), so its loss comes out non-finite and the
            # training loop stops with a clear message instead of scipy's "invalid numeric entries"
            rows, cols = linear_sum_assignment(np.nan_to_num(cost.cpu().numpy(), nan=1e30, posinf=1e30, neginf=-1e30))
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
