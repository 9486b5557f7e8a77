"""Per-pixel stage of panoptic fusion in torch: the device version of ``pem.runtime.fusion.panoptic_pixel_stage``.

Works on any device, has no Python loop over queries and no host synchronisation (counts are scatter-adds into
int64 tensors, not ``torch.bincount``, which reads its maximum on the host for CUDA tensors).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["PixelStage", "panoptic_pixel_stage_torch"]


class PixelStage(NamedTuple):
    """``winner`` int32 [..., H, W]: the winning kept query, -1 where the pixel is not in that query's mask (or
    nothing is kept); int64 [..., Q] counts, zero for queries not kept: ``winner_area`` pixels won, ``mask_area``
    pixels with sigmoid >= 0.5, ``visible_area`` pixels where both hold."""

    winner: torch.Tensor
    winner_area: torch.Tensor
    mask_area: torch.Tensor
    visible_area: torch.Tensor


# Fill of the queries that are not kept in the winner search: every kept value score * sigmoid is >= 0, so any
# negative number selects the same winners, and a finite one stays finite in FP16 graphs.
NOT_KEPT = -1.0


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """x with float dtypes kept and anything else as float64 (as the numpy module reads its inputs)."""
    return x if x.is_floating_point() else x.double()


def panoptic_pixel_stage_torch(scores: torch.Tensor, keep: torch.Tensor, mask_logits: torch.Tensor) -> PixelStage:
    """Scores [Q] or [B, Q] float in [0, 1], keep bool of the same shape, mask logits [(B,) Q, H, W] float (all on
    one device) -> PixelStage (with the batch axis when the inputs have one). Traceable: the export wrapper's
    panoptic head runs this function in the graph.

    Same semantics as the numpy module: sigmoid is ``1 / (1 + exp(-x))`` in the logits' dtype and a mask pixel is
    one with sigmoid >= 0.5 (not quite logit >= 0: logits in a sliver just below 0 give exactly 0.5; how wide
    the sliver is depends on the exp implementation of the device, so results can differ from numpy only there).
    A pixel's winner is the kept query with the highest ``score * sigmoid`` (dtype promoted as numpy does for
    float arrays), the lowest index on ties. Memory: one float and one bool [B, Q, H, W] temporary.
    """
    if scores.dim() == 1:
        stage = panoptic_pixel_stage_torch(scores[None], keep[None], mask_logits[None])
        return PixelStage(*(value[0] for value in stage))
    logits = _as_float(mask_logits)
    device = logits.device
    keep = keep.to(device=device, dtype=torch.bool)
    counts = torch.zeros(keep.shape, dtype=torch.int64, device=device)
    if logits.shape[1] == 0:
        winner = torch.full((logits.shape[0], *logits.shape[2:]), -1, dtype=torch.int32, device=device)
        return PixelStage(winner, counts, counts.clone(), counts.clone())
    scores = _as_float(scores).to(device)
    masks = torch.reciprocal(torch.exp(-logits) + 1)
    on_mask = masks >= 0.5
    prob = scores[:, :, None, None] * masks
    prob = torch.where(keep[:, :, None, None], prob, NOT_KEPT)
    argmax = prob.argmax(dim=1)
    any_kept = keep.any(dim=1)[:, None, None]
    visible = on_mask.gather(1, argmax[:, None])[:, 0] & any_kept
    flat = argmax.flatten(1)
    return PixelStage(
        winner=torch.where(visible, argmax, -1).to(torch.int32),
        winner_area=counts.scatter_add(1, flat, any_kept.flatten(1).expand(flat.shape).long()),
        mask_area=torch.where(keep, on_mask.sum(dim=(2, 3)), 0),
        visible_area=counts.scatter_add(1, flat, visible.flatten(1).long()),
    )
