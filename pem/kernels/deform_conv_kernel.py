"""Triton kernel of the modulated deformable convolution (imports triton: load it lazily; also the AOT PTX source).

Fused implicit GEMM: one program computes a [BLOCK_CO, BLOCK_P] tile of the output of one image. For each kernel
tap it computes the sampling coordinates and the four bilinear corner weights of its BLOCK_P pixels in FP32
(times the modulation mask), then, per block of BLOCK_C input channels, gathers and blends the four corners in
FP32 into a [BLOCK_C, BLOCK_P] column tile that never leaves the chip, and accumulates ``weight @ columns`` in
FP32 (IEEE, no TF32). Neighbours outside the image count as zero, as in torchvision. One group, one offset group.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def deform_conv2d_kernel(
    input_ptr, offset_ptr, mask_ptr, weight_ptr, bias_ptr, out_ptr,
    in_channels, height, width, out_channels, out_height, out_width,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    stride_ib, stride_ic, stride_ih, stride_iw,
    stride_fb, stride_fc, stride_fh, stride_fw,
    stride_mb, stride_mc, stride_mh, stride_mw,
    stride_ob, stride_oc, stride_oh, stride_ow,
    KH: tl.constexpr, KW: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Grid (cdiv(Ho * Wo, BLOCK_P), cdiv(Cout, BLOCK_CO), B). input [B, Cin, H, W], offset [B, 2*KH*KW, Ho, Wo]
    (dy, dx per tap), mask [B, KH*KW, Ho, Wo] (if HAS_MASK), weight float32 [KH*KW, Cout, Cin] contiguous,
    bias float32 [Cout] (if HAS_BIAS), out [B, Cout, Ho, Wo]."""
    image = tl.program_id(2).to(tl.int64)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < out_height * out_width
    out_row = pixels // out_width
    out_col = pixels % out_width
    outs = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    out_ok = outs < out_channels
    input_base = input_ptr + image * stride_ib
    offset_base = offset_ptr + image * stride_fb + out_row * stride_fh + out_col * stride_fw
    mask_base = mask_ptr + image * stride_mb + out_row * stride_mh + out_col * stride_mw
    acc = tl.zeros([BLOCK_CO, BLOCK_P], tl.float32)
    for tap in range(KH * KW):
        dy = tl.load(offset_base + (2 * tap) * stride_fc, mask=pixel_ok, other=0.0).to(tl.float32)
        dx = tl.load(offset_base + (2 * tap + 1) * stride_fc, mask=pixel_ok, other=0.0).to(tl.float32)
        y = (out_row * stride_h - pad_h + (tap // KW) * dil_h).to(tl.float32) + dy
        x = (out_col * stride_w - pad_w + (tap % KW) * dil_w).to(tl.float32) + dx
        # A NaN coordinate contributes zero, as the official kernel's bounds test gives; far-away (and infinite)
        # samples are clamped to just outside the image, where all four neighbours are zero anyway.
        y = tl.minimum(tl.maximum(tl.where(y == y, y, -2.0), -2.0), height + 1.0)
        x = tl.minimum(tl.maximum(tl.where(x == x, x, -2.0), -2.0), width + 1.0)
        y_low = tl.floor(y)
        x_low = tl.floor(x)
        frac_y = y - y_low
        frac_x = x - x_low
        row0 = y_low.to(tl.int32)
        col0 = x_low.to(tl.int32)
        row1 = row0 + 1
        col1 = col0 + 1
        row0_ok = (row0 >= 0) & (row0 < height) & pixel_ok
        row1_ok = (row1 >= 0) & (row1 < height) & pixel_ok
        col0_ok = (col0 >= 0) & (col0 < width)
        col1_ok = (col1 >= 0) & (col1 < width)
        scale = 1.0
        if HAS_MASK:
            scale = tl.load(mask_base + tap * stride_mc, mask=pixel_ok, other=0.0).to(tl.float32)
        w00 = (1.0 - frac_y) * (1.0 - frac_x) * scale
        w01 = (1.0 - frac_y) * frac_x * scale
        w10 = frac_y * (1.0 - frac_x) * scale
        w11 = frac_y * frac_x * scale
        a00 = row0 * stride_ih + col0 * stride_iw
        a01 = row0 * stride_ih + col1 * stride_iw
        a10 = row1 * stride_ih + col0 * stride_iw
        a11 = row1 * stride_ih + col1 * stride_iw
        for start in range(0, in_channels, BLOCK_C):
            channels = start + tl.arange(0, BLOCK_C)
            channel_ok = channels < in_channels
            rows = input_base + channels.to(tl.int64)[:, None] * stride_ic
            ok = channel_ok[:, None]
            columns = w00[None, :] * tl.load(rows + a00[None, :], mask=ok & (row0_ok & col0_ok)[None, :],
                                             other=0.0).to(tl.float32)
            columns += w01[None, :] * tl.load(rows + a01[None, :], mask=ok & (row0_ok & col1_ok)[None, :],
                                              other=0.0).to(tl.float32)
            columns += w10[None, :] * tl.load(rows + a10[None, :], mask=ok & (row1_ok & col0_ok)[None, :],
                                              other=0.0).to(tl.float32)
            columns += w11[None, :] * tl.load(rows + a11[None, :], mask=ok & (row1_ok & col1_ok)[None, :],
                                              other=0.0).to(tl.float32)
            weights = tl.load(weight_ptr + (tap * out_channels + outs)[:, None] * in_channels + channels[None, :],
                              mask=out_ok[:, None] & channel_ok[None, :], other=0.0)
            acc += tl.dot(weights, columns, input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(bias_ptr + outs, mask=out_ok, other=0.0)[:, None]
    out = out_ptr + image * stride_ob + outs[:, None] * stride_oc + (out_row * stride_oh + out_col * stride_ow)[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=out_ok[:, None] & pixel_ok[None, :])
