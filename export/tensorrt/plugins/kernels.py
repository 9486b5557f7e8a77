"""Entry points of the ``pem.kernels`` Triton kernels in the argument order TensorRT launches plugin kernels with.

A TensorRT ahead-of-time plugin kernel receives its input pointers, then the scalar "extra arguments", then its
output pointers. These two ``@triton.jit`` adapters take that order and call the kernels of ``pem.kernels`` (which
Triton inlines), deriving the strides of the contiguous (LINEAR) tensors TensorRT hands a plugin from their sizes.
Imports triton (and ``pem.kernels``): load lazily, only to compile PTX.
"""
from __future__ import annotations

import triton
import triton.language as tl

from pem.kernels.deform_conv_kernel import deform_conv2d_kernel
from pem.kernels.prototype_gather_kernel import prototype_gather_kernel


@triton.jit
def deform_conv2d_plugin_kernel(
    input_ptr, offset_ptr, mask_ptr, weight_ptr, bias_ptr,
    in_channels, height, width, out_channels, out_height, out_width,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    out_ptr,
    KH: tl.constexpr, KW: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """``pem::DeformConv2d``: input [B, Cin, H, W], offset [B, 2*KH*KW, Ho, Wo], mask [B, KH*KW, Ho, Wo], weight
    float32 [KH, KW, Cout, Cin], bias float32 [Cout] -> out [B, Cout, Ho, Wo]; all contiguous. Grid
    (cdiv(Ho * Wo, BLOCK_P), cdiv(Cout, BLOCK_CO), B). FP32 coordinates and accumulation."""
    plane = out_height * out_width
    deform_conv2d_kernel(
        input_ptr, offset_ptr, mask_ptr, weight_ptr, bias_ptr, out_ptr,
        in_channels, height, width, out_channels, out_height, out_width,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        in_channels * height * width, height * width, width, 1,
        2 * KH * KW * plane, plane, out_width, 1,
        KH * KW * plane, plane, out_width, 1,
        out_channels * plane, plane, out_width, 1,
        KH, KW, True, True, BLOCK_P, BLOCK_CO, BLOCK_C,
    )


@triton.jit
def prototype_gather_plugin_kernel(
    memory_ptr, query_ptr, mask_ptr, skip_mask_ptr,
    num_tokens, num_queries, num_heads, head_dim,
    out_ptr,
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``pem::PrototypeGather``: memory [B, N, C], queries [B, Q, C], mask logits [B, Q, N], skip_mask float32 [B]
    (1: the image's mask is ignored) -> out [B, Q, C], C = num_heads * head_dim; all contiguous. Grid
    (B * num_heads, cdiv(Q, BLOCK_Q)). FP32 similarities."""
    channels = num_heads * head_dim
    prototype_gather_kernel(
        memory_ptr, query_ptr, mask_ptr, skip_mask_ptr, out_ptr,
        num_tokens, num_queries, num_heads, head_dim,
        num_tokens * channels, channels, 1,
        num_queries * channels, channels, 1,
        num_queries * num_tokens, num_tokens, 1,
        num_queries * channels, channels, 1,
        True, BLOCK_Q, BLOCK_N, BLOCK_D,
    )
