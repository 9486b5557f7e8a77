"""Fused ``pem::PrototypeGather``: Triton kernel wrapper and a dispatcher with the PyTorch reference as fallback.

Same contract as ``pem.ops.prototype_gather.prototype_gather``: memory [B, N, C], queries [B, Q, C], mask logits
[B, Q, N] or None, ``num_heads`` dividing C -> prototypes [B, Q, C] in the input dtype. Similarities are
accumulated in FP32 for float16/bfloat16/float32 inputs; ties pick the first token; a query with every token
excluded picks token 0; an image whose mask excludes every (query, token) pair is not masked at all.
NaN inputs give unspecified indices.
"""
from __future__ import annotations

import torch

from pem.kernels._runtime import SUPPORTED_DTYPES, cdiv, launcher, next_power_of_2, use_triton
from pem.ops.prototype_gather import prototype_gather

__all__ = ["prototype_gather_fast", "prototype_gather_triton"]

BLOCK_Q = 16
BLOCK_N = 64
NUM_WARPS = 4


def _check(memory: torch.Tensor, queries: torch.Tensor, mask_logits: torch.Tensor | None, num_heads: int) -> None:
    """Raise ValueError unless the shapes, dtypes and devices fit the kernel."""
    if memory.dim() != 3 or queries.dim() != 3 or memory.shape[0] != queries.shape[0] \
            or memory.shape[2] != queries.shape[2]:
        raise ValueError(f"prototype_gather: need memory [B, N, C] and queries [B, Q, C], got "
                         f"{tuple(memory.shape)} and {tuple(queries.shape)}")
    batch, tokens, channels = memory.shape
    if tokens == 0 or num_heads < 1 or channels % num_heads:
        raise ValueError(f"prototype_gather: need N >= 1 tokens and C = {channels} divisible by num_heads = "
                         f"{num_heads}, got memory {tuple(memory.shape)}")
    if memory.dtype not in SUPPORTED_DTYPES or queries.dtype != memory.dtype or queries.device != memory.device:
        raise ValueError(f"prototype_gather: memory and queries must share a float16/bfloat16/float32 dtype and a "
                         f"device, got {memory.dtype} on {memory.device} and {queries.dtype} on {queries.device}")
    if mask_logits is not None:
        expected = (batch, queries.shape[1], tokens)
        if tuple(mask_logits.shape) != expected or not mask_logits.is_floating_point() \
                or mask_logits.device != memory.device:
            raise ValueError(f"prototype_gather: mask_logits must be floating [B, Q, N] = {expected} on "
                             f"{memory.device}, got {mask_logits.dtype} {tuple(mask_logits.shape)} on "
                             f"{mask_logits.device}")


def prototype_gather_triton(
    memory: torch.Tensor, queries: torch.Tensor, mask_logits: torch.Tensor | None, num_heads: int
) -> torch.Tensor:
    """The Triton kernel: memory [B, N, C], queries [B, Q, C], mask logits [B, Q, N] or None -> [B, Q, C].

    CUDA tensors run the compiled kernel; CPU tensors run only under Triton's interpreter (``TRITON_INTERPRET=1``
    set before triton is imported; slow, for tests). The per-image "everything excluded" flag is computed with
    torch on the device (no host synchronisation). Offsets inside one image use int32: each image's memory,
    queries and mask must have fewer than 2**31 elements. Requires triton. No autograd.
    """
    from pem.kernels.prototype_gather_kernel import prototype_gather_kernel

    _check(memory, queries, mask_logits, num_heads)
    batch, tokens, channels = memory.shape
    num_queries = queries.shape[1]
    head_dim = channels // num_heads
    out = torch.empty_like(queries, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    if mask_logits is None:
        mask, skip_mask = memory, torch.zeros(batch, dtype=torch.int8, device=memory.device)
    else:
        mask = mask_logits.detach()
        skip_mask = (mask < 0).flatten(1).all(dim=1).to(torch.int8)
    grid = (batch * num_heads, cdiv(num_queries, BLOCK_Q))
    launcher(prototype_gather_kernel, memory.device)[grid](
        memory.detach(), queries.detach(), mask, skip_mask, out,
        tokens, num_queries, num_heads, head_dim,
        *memory.stride(), *queries.stride(), *(mask.stride() if mask_logits is not None else (0, 0, 0)),
        *out.stride(),
        HAS_MASK=mask_logits is not None, BLOCK_Q=BLOCK_Q, BLOCK_N=BLOCK_N, BLOCK_D=max(16, next_power_of_2(head_dim)),
        num_warps=NUM_WARPS,
    )
    return out


def prototype_gather_fast(
    memory: torch.Tensor, queries: torch.Tensor, mask_logits: torch.Tensor | None, num_heads: int
) -> torch.Tensor:
    """``prototype_gather`` through the Triton kernel where ``pem.kernels.use_triton`` allows it, else the reference.

    The kernel runs for CUDA float16/bfloat16/float32 tensors without autograd, outside tracing/export, when
    triton imports and ``PEM_DISABLE_TRITON`` is not ``1``; everything else (CPU, training) runs the reference.
    """
    tensors = (memory, queries) if mask_logits is None else (memory, queries, mask_logits)
    if use_triton(*tensors):
        return prototype_gather_triton(memory, queries, mask_logits, num_heads)
    return prototype_gather(memory, queries, mask_logits, num_heads)

