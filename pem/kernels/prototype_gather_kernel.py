"""Triton kernel of ``pem::PrototypeGather`` (imports triton: load it lazily; also the source for AOT PTX).

One program handles BLOCK_Q queries of one (image, head). It streams the image's N tokens in chunks of
BLOCK_N, computes the FP32 dot products of the d-dim head slices (FP32 IEEE, no TF32, whatever the input
dtype), excludes tokens whose mask logit is < 0 (unless the image's ``skip_mask`` flag is set), keeps a running
(max, first argmax) per query, and finally copies the winning token's head slice to the output.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def prototype_gather_kernel(
    memory_ptr, query_ptr, mask_ptr, skip_mask_ptr, out_ptr,
    num_tokens, num_queries, num_heads, head_dim,
    stride_mb, stride_mn, stride_mc,
    stride_qb, stride_qq, stride_qc,
    stride_kb, stride_kq, stride_kn,
    stride_ob, stride_oq, stride_oc,
    HAS_MASK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Grid (B * heads, cdiv(Q, BLOCK_Q)). memory [B, N, C], queries [B, Q, C], mask logits [B, Q, N] (if HAS_MASK),
    skip_mask [B] int8 (1: the image's mask excludes everything and is ignored), out [B, Q, C]; C = heads * d."""
    image = (tl.program_id(0) // num_heads).to(tl.int64)
    head = tl.program_id(0) % num_heads
    rows = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_queries
    dim_ok = dims < head_dim
    channels = head * head_dim + dims
    memory_base = memory_ptr + image * stride_mb + channels[None, :] * stride_mc
    query_tile = tl.load(query_ptr + image * stride_qb + rows[:, None] * stride_qq + channels[None, :] * stride_qc,
                         mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
    if HAS_MASK:
        apply_mask = tl.load(skip_mask_ptr + image).to(tl.int32) == 0  # int8 (torch path) or float32 (TensorRT)
    best_value = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    best_index = tl.zeros([BLOCK_Q], tl.int32)
    for start in range(0, num_tokens, BLOCK_N):
        tokens = start + tl.arange(0, BLOCK_N)
        token_ok = tokens < num_tokens
        token_tile = tl.load(memory_base + tokens.to(tl.int64)[:, None] * stride_mn,
                             mask=token_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
        similarity = tl.dot(query_tile, tl.trans(token_tile), input_precision="ieee")  # [BLOCK_Q, BLOCK_N]
        similarity = tl.where(token_ok[None, :], similarity, float("-inf"))
        if HAS_MASK:
            logits = tl.load(mask_ptr + image * stride_kb + rows[:, None] * stride_kq + tokens[None, :] * stride_kn,
                             mask=row_ok[:, None] & token_ok[None, :], other=0.0)
            similarity = tl.where((logits < 0) & apply_mask, float("-inf"), similarity)
        chunk_max = tl.max(similarity, axis=1)
        chunk_index = tl.min(tl.where(similarity == chunk_max[:, None], tokens[None, :], num_tokens), axis=1)
        better = chunk_max > best_value
        best_value = tl.where(better, chunk_max, best_value)
        best_index = tl.where(better, chunk_index, best_index)
    winners = tl.load(memory_base + best_index.to(tl.int64)[:, None] * stride_mn,
                      mask=row_ok[:, None] & dim_ok[None, :])
    tl.store(out_ptr + image * stride_ob + rows[:, None] * stride_oq + channels[None, :] * stride_oc, winners,
             mask=row_ok[:, None] & dim_ok[None, :])
