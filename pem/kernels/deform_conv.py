"""Fused modulated deformable convolution: Triton kernel wrapper and a dispatcher with ``pem.ops`` as fallback.

Arguments, offset layout (channel 2k = dy, 2k+1 = dx of row-major tap k) and result are those of
``torchvision.ops.deform_conv2d`` / ``pem.ops.deform_conv2d``. The kernel (``pem.kernels.deform_conv_kernel``) is
a fused implicit GEMM: sampling coordinates, bilinear weights, blended samples and the accumulation over Cin * kh * kw
are all FP32 for float16/bfloat16/float32 inputs (the output has the input dtype), and no im2col buffer is
written. It covers any kernel size, stride, padding, dilation, optional mask and bias, with groups = 1 and one
offset group (what PEM uses: 3x3, stride 1, padding 1, mask, no bias). A NaN or infinite offset makes its tap
contribute zero, as in ``pem.ops.deform_conv2d``.

Mixed dtypes (the model under autocast: float16/bfloat16 input, offset and mask with a float32 weight) are
accepted by both paths and computed in FP32 (``pem.ops.precision``): the kernel converts every load; the
fallback runs ``pem.ops.deform_conv2d`` on float32 copies with autocast off. The output has the input's dtype.
"""
from __future__ import annotations

import torch

from pem.kernels._runtime import SUPPORTED_DTYPES, cdiv, launcher, next_power_of_2, use_triton
from pem.ops.deform_conv import IntPair, as_pair, check_deform_arguments, deform_conv2d
from pem.ops.precision import full_precision

__all__ = ["deform_conv2d_fast", "deform_conv2d_triton"]

BLOCK_P = 64
BLOCK_C = 32
MAX_BLOCK_CO = 64
NUM_WARPS = 4
# One stage: software pipelining of the gathers (cp.async) spills registers to the stack for float32 inputs
# (ptxas resource usage for sm_90, measured without a GPU); one stage and 4 warps need 168 registers and no stack.
NUM_STAGES = 1


def deform_conv2d_triton(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, stride: IntPair = (1, 1), padding: IntPair = (0, 0),
                         dilation: IntPair = (1, 1), mask: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton kernel: input [B, Cin, H, W], offset [B, 2*kh*kw, Ho, Wo], weight [Cout, Cin, kh, kw],
    mask [B, kh*kw, Ho, Wo] or None, bias [Cout] or None -> [B, Cout, Ho, Wo] in the input dtype, channels-last
    when the input is (so the next layer needs no layout conversion), NCHW-contiguous otherwise.

    Each tensor float16, bfloat16 or float32 (dtypes may differ), one device; groups and offset groups must be 1.
    CUDA tensors
    run the compiled kernel; CPU tensors run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before
    triton is imported; slow, for tests). Offsets inside one image use int32 (fewer than 2**31 elements per image
    and tensor). Requires triton. No autograd.
    """
    from pem.kernels.deform_conv_kernel import deform_conv2d_kernel

    stride, padding, dilation = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    groups, offset_groups, out_h, out_w = check_deform_arguments(input, offset, weight, bias, stride, padding, dilation,
                                                           mask, same_dtype=False)
    dtypes = [t.dtype for t in (input, offset, weight, bias, mask) if t is not None]
    if groups != 1 or offset_groups != 1 or any(dtype not in SUPPORTED_DTYPES for dtype in dtypes):
        raise ValueError(f"deform_conv2d_triton: supports groups = offset_groups = 1 and float16/bfloat16/float32, "
                         f"got groups={groups}, offset_groups={offset_groups}, {sorted(map(str, set(dtypes)))}")
    batch, in_channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    channels_last = input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()
    out = torch.empty(batch, out_channels, out_h, out_w, dtype=input.dtype, device=input.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if out.numel() == 0:
        return out
    taps_weight = weight.detach().float().permute(2, 3, 0, 1).reshape(kh * kw, out_channels, in_channels).contiguous()
    bias32 = taps_weight if bias is None else bias.detach().float().contiguous()
    modulation = offset if mask is None else mask.detach()
    block_co = min(MAX_BLOCK_CO, max(16, next_power_of_2(out_channels)))
    grid = (cdiv(out_h * out_w, BLOCK_P), cdiv(out_channels, block_co), batch)
    launcher(deform_conv2d_kernel, input.device)[grid](
        input.detach(), offset.detach(), modulation, taps_weight, bias32, out,
        in_channels, height, width, out_channels, out_h, out_w,
        *stride, *padding, *dilation,
        *input.stride(), *offset.stride(), *(modulation.stride() if mask is not None else (0, 0, 0, 0)),
        *out.stride(),
        KH=kh, KW=kw, HAS_MASK=mask is not None, HAS_BIAS=bias is not None,
        BLOCK_P=BLOCK_P, BLOCK_CO=block_co, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out


def deform_conv2d_fast(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None = None, stride: IntPair = (1, 1), padding: IntPair = (0, 0),
                       dilation: IntPair = (1, 1), mask: torch.Tensor | None = None) -> torch.Tensor:
    """``pem.ops.deform_conv2d`` through the Triton kernel where possible, else ``pem.ops.deform_conv2d`` itself.

    The kernel runs for CUDA float16/bfloat16/float32 tensors with groups = offset groups = 1, without autograd,
    outside tracing/export, when triton imports and ``PEM_DISABLE_TRITON`` is not ``1``. The fallback is
    torchvision's kernel or the pure-PyTorch reference, as ``pem.ops.deform_conv2d_backend()`` says, in FP32 when
    any argument is float16/bfloat16 (mixed dtypes included); the output then has the input's dtype.
    """
    tensors = [t for t in (input, offset, weight, bias, mask) if t is not None]
    taps = weight.shape[2] * weight.shape[3] if weight.dim() == 4 else 0
    single_group = weight.dim() == 4 and input.dim() == 4 and weight.shape[1] == input.shape[1] \
        and offset.dim() == 4 and offset.shape[1] == 2 * taps
    if single_group and use_triton(*tensors):
        return deform_conv2d_triton(input, offset, weight, bias, stride, padding, dilation, mask)
    dtypes = {t.dtype for t in tensors}
    if dtypes <= {torch.float32, torch.float64} or not dtypes <= set(SUPPORTED_DTYPES):
        return deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)
    with full_precision(input):
        out = deform_conv2d(input.float(), offset.float(), weight.float(), None if bias is None else bias.float(),
                            stride, padding, dilation, None if mask is None else mask.float())
    return out.to(input.dtype)
