"""``pem::PrototypeGather``: PEM-CA's hard prototype selection, the PyTorch reference of the custom op.

Shapes: B batch, N memory tokens (h*w of one level, row-major), Q queries, C channels split into
``num_heads`` heads of d = C / num_heads.
"""
from __future__ import annotations

import torch

OP_NAME = "pem::PrototypeGather"


def prototype_gather(
    memory: torch.Tensor, queries: torch.Tensor, mask_logits: torch.Tensor | None, num_heads: int
) -> torch.Tensor:
    """Pick, per (image, head, query), the memory token most similar to the query and gather its head slice.

    Args:
        memory: [B, N, C] memory tokens, L2-normalized over all C channels.
        queries: [B, Q, C] queries, L2-normalized over all C channels.
        mask_logits: [B, Q, N] attention-mask logits (detached) or None. A token is excluded for a query where
            its logit is < 0; only when every entry of an image is excluded is masking switched off for that
            image. A query whose tokens are all excluded keeps -inf everywhere and selects token 0.
        num_heads: heads; similarity per head is the dot product of the 32-dim (C/heads) slices, which are
            not re-normalized (the official code normalizes over all channels before the split).

    Returns:
        [B, Q, C] prototypes: the heads' selected slices concatenated (heads may pick different tokens).
    """
    batch, tokens, channels = memory.shape
    num_queries = queries.shape[1]
    head_dim = channels // num_heads
    memory_heads = memory.reshape(batch, tokens, num_heads, head_dim).transpose(1, 2)  # B, h, N, d
    query_heads = queries.reshape(batch, num_queries, num_heads, head_dim).transpose(1, 2)  # B, h, Q, d
    similarity = memory_heads @ query_heads.transpose(-1, -2)  # B, h, N, Q
    if mask_logits is not None:
        excluded = mask_logits < 0
        everything_excluded = excluded.flatten(1).all(dim=1)
        excluded = excluded & ~everything_excluded[:, None, None]
        similarity = similarity.masked_fill(excluded.transpose(1, 2)[:, None], float("-inf"))
    index = similarity.argmax(dim=2)  # B, h, Q
    prototypes = torch.gather(memory_heads, 2, index[..., None].expand(-1, -1, -1, head_dim))
    return prototypes.transpose(1, 2).reshape(batch, num_queries, channels)
