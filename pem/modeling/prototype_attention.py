"""PEM cross-attention (PEM-CA), as the official code implements it.

Shapes: B batch, Q queries, C channels, memory [B, C, h, w] of one level (N = h*w tokens).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pem.kernels import prototype_gather_fast as prototype_gather
from pem.modeling.layers import make_norm
from pem.ops.precision import LayerNorm32, fp32, full_precision


class PrototypeCrossAttention(nn.Module):
    """Queries attend to one prototype token per head, selected by hard argmax of the cosine similarity.

    1. memory + pos -> norm -> 3x3 depthwise conv -> tokens -> Linear; queries + query_pos -> LayerNorm -> Linear;
    2. both L2-normalized over all C channels; per-head similarity, masking, argmax, gather -> prototypes P;
    3. ``out = normalize_over_queries(proj(P * T)) * alpha + P``; ``final(out)`` is added to the input queries.

    Under autocast the normalisation, similarity and argmax of step 2 run in FP32 (``pem.ops.precision``).
    """

    def __init__(self, dim: int, num_heads: int, norm: str) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.memory_norm = make_norm(norm, dim)
        self.memory_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.memory_linear = nn.Linear(dim, dim)
        self.query_norm = LayerNorm32(dim)
        self.query_linear = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.final = nn.Linear(dim, dim)

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        mask_logits: torch.Tensor | None,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """queries, query_pos [B, Q, C]; memory, pos [B, C, h, w]; mask_logits [B, Q, h*w] or None -> [B, Q, C]."""
        memory = self.memory_conv(self.memory_norm(memory + pos))
        memory = self.memory_linear(memory.flatten(2).transpose(1, 2))  # B, N, C
        query = self.query_linear(self.query_norm(queries + query_pos))
        with full_precision(memory):
            memory = F.normalize(fp32(memory), dim=-1)
            query = F.normalize(fp32(query), dim=-1)
            prototypes = prototype_gather(memory, query, mask_logits, self.num_heads)
        out = F.normalize(self.proj(prototypes * query), dim=1) * self.alpha + prototypes
        return queries + self.final(out)
