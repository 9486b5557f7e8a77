"""``pem::PrototypeGather``: PEM-CA's hard prototype selection, the PyTorch reference of the custom op.

Shapes: B batch, N memory tokens (h*w of one level, row-major), Q queries, C channels split into
``num_heads`` heads of d = C / num_heads.

During ``torch.onnx.export`` the function emits one custom node ``pem::PrototypeGather`` (inputs memory, queries,
mask logits; int attribute ``num_heads``) instead of its body; ``pem.export.custom_ops`` attaches the ONNX function
that defines it with standard ops. The eager path is untouched by this.
"""
from __future__ import annotations

import torch

from pem.runtime.contract import (
    PROTOTYPE_GATHER_DOMAIN,
    PROTOTYPE_GATHER_NUM_HEADS,
    PROTOTYPE_GATHER_OP,
    PROTOTYPE_GATHER_VERSION,
)

OP_NAME = f"{PROTOTYPE_GATHER_DOMAIN}::{PROTOTYPE_GATHER_OP}"


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
    if torch.onnx.is_in_onnx_export():
        return _onnx_node(memory, queries, mask_logits, num_heads)
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


def _onnx_node(
    memory: torch.Tensor, queries: torch.Tensor, mask_logits: torch.Tensor | None, num_heads: int
) -> torch.Tensor:
    """The ``pem::PrototypeGather`` node standing for the op in an exported graph; [B, Q, C] like the reference.

    The node always has three inputs: ``mask_logits=None`` is passed as all-zero logits, which exclude nothing.
    """
    if mask_logits is None:
        mask_logits = queries.new_zeros(queries.shape[0], queries.shape[1], memory.shape[1])
    return torch.onnx.ops.symbolic(
        OP_NAME,
        (memory, queries, mask_logits),
        {PROTOTYPE_GATHER_NUM_HEADS: num_heads},
        dtype=queries.dtype,
        shape=queries.shape,
        version=PROTOTYPE_GATHER_VERSION,
    )
