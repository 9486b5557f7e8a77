"""Deformable convolution (DCNv1, and modulated DCNv2 when a mask is given) with torchvision's signature.

``deform_conv2d`` runs torchvision's kernel when torchvision imports and ``PEM_DISABLE_TORCHVISION_DEFORM``
is not ``1``; otherwise it runs ``deform_conv2d_reference``, a pure-PyTorch implementation (gathers +
einsum) that works on any device, in float32 and float64, and is differentiable through autograd.

Layout (identical to ``torchvision.ops.deform_conv2d``), with K = kh * kw taps in row-major order and
G offset groups:

* ``input``  [B, Cin, H, W]
* ``offset`` [B, 2 * G * K, Ho, Wo]: channel ``g * 2K + 2k`` is dy and ``g * 2K + 2k + 1`` is dx of tap k
  for the input channels ``g * Cin / G ... (g + 1) * Cin / G - 1``
* ``mask``   [B, G * K, Ho, Wo]: channel ``g * K + k`` scales tap k of offset group g
* ``weight`` [Cout, Cin / groups, kh, kw]; ``groups`` = Cin / weight.shape[1], G = offset.shape[1] / (2K)
* ``bias``   [Cout]
* output     [B, Cout, Ho, Wo] with Ho = (H + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1 (same for W)

Tap k = (i, j) of output pixel (ho, wo) samples the input at
``y = ho * stride_h - pad_h + i * dil_h + dy``, ``x = wo * stride_w - pad_w + j * dil_w + dx`` by bilinear
interpolation of the four integer neighbours, a neighbour outside [0, H-1] x [0, W-1] counting as zero (so a
sample with y <= -1, y >= H, x <= -1 or x >= W is zero).

A non-finite offset (NaN, +-Inf: a diverged model) makes its tap contribute zero, as in the official CUDA kernel
(detectron2's ``layers/csrc/deformable/deform_conv_cuda_kernel.cu``, ``modulated_deformable_im2col_gpu_kernel``,
behind ``detectron2.layers.ModulatedDeformConv``), whose bounds test ``h_im > -1 && w_im > -1 && h_im < height &&
w_im < width`` is false for a NaN or infinite coordinate. ``finite_offsets`` moves such samples outside the image
before torchvision's kernel, which otherwise reads out of bounds on the CPU (a segmentation fault), and before the
reference, where NaN * 0 would leak into the sum. ONNX Runtime's ``DeformConv`` already gives zero (tested), so
exported graphs carry no extra op.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence

import torch

__all__ = ["deform_conv2d", "deform_conv2d_backend", "deform_conv2d_reference", "finite_offsets"]

DISABLE_TORCHVISION_ENV = "PEM_DISABLE_TORCHVISION_DEFORM"

IntPair = int | Sequence[int]


def as_pair(value: IntPair, name: str) -> tuple[int, int]:
    """``int`` or a pair of ints -> ``(int, int)``."""
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair[0], pair[1]


def check_deform_arguments(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                     mask: torch.Tensor | None, same_dtype: bool = True) -> tuple[int, int, int, int]:
    """Validate shapes, dtypes and devices; return ``(groups, offset_groups, Ho, Wo)``.

    All tensors share the input's device, and its dtype unless ``same_dtype`` is False (then each must be floating).
    """
    tensors = {"input": input, "offset": offset, "weight": weight, "mask": mask}
    for name, tensor in tensors.items():
        if tensor is not None and tensor.dim() != 4:
            raise ValueError(f"deform_conv2d: {name} must be 4-D, got shape {tuple(tensor.shape)}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(f"deform_conv2d: bias must have shape ({weight.shape[0]},) to match weight "
                         f"{tuple(weight.shape)}, got {tuple(bias.shape)}")
    present = {name: t for name, t in {**tensors, "bias": bias}.items() if t is not None}
    if not input.is_floating_point():
        raise ValueError(f"deform_conv2d: input must be a floating-point tensor, got {input.dtype}")
    for name, tensor in present.items():
        dtype_ok = tensor.dtype == input.dtype if same_dtype else tensor.is_floating_point()
        if not dtype_ok or tensor.device != input.device:
            raise ValueError(f"deform_conv2d: {name} is {tensor.dtype} on {tensor.device} but input is "
                             f"{input.dtype} on {input.device}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"deform_conv2d: need stride >= 1, dilation >= 1 and padding >= 0, got stride={stride}, "
                         f"padding={padding}, dilation={dilation}")

    batch, in_channels, height, width = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    taps = kh * kw
    if taps == 0 or group_channels == 0 or in_channels % group_channels != 0:
        raise ValueError(f"deform_conv2d: input channels {in_channels} (input {tuple(input.shape)}) are not a "
                         f"multiple of weight.shape[1] = {group_channels} (weight {tuple(weight.shape)})")
    groups = in_channels // group_channels
    if out_channels % groups != 0:
        raise ValueError(f"deform_conv2d: output channels {out_channels} (weight {tuple(weight.shape)}) are not "
                         f"divisible by groups = {groups}")
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        raise ValueError(f"deform_conv2d: offset channels {offset.shape[1]} (offset {tuple(offset.shape)}) must be "
                         f"a positive multiple of 2 * kh * kw = {2 * taps} for weight {tuple(weight.shape)}")
    offset_groups = offset.shape[1] // (2 * taps)
    if in_channels % offset_groups != 0:
        raise ValueError(f"deform_conv2d: input channels {in_channels} (input {tuple(input.shape)}) are not "
                         f"divisible by offset_groups = {offset_groups} (offset {tuple(offset.shape)})")
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"deform_conv2d: empty output {out_h}x{out_w} for input {tuple(input.shape)}, weight "
                         f"{tuple(weight.shape)}, stride={stride}, padding={padding}, dilation={dilation}")
    expected = (batch, 2 * offset_groups * taps, out_h, out_w)
    if tuple(offset.shape) != expected:
        raise ValueError(f"deform_conv2d: offset must have shape {expected} for input {tuple(input.shape)} and "
                         f"weight {tuple(weight.shape)}, got {tuple(offset.shape)}")
    if mask is not None:
        expected = (batch, offset_groups * taps, out_h, out_w)
        if tuple(mask.shape) != expected:
            raise ValueError(f"deform_conv2d: mask must have shape {expected} (offset_groups * kh * kw = "
                             f"{offset_groups} * {kh} * {kw} channels), got {tuple(mask.shape)}")
    return groups, offset_groups, out_h, out_w


def finite_offsets(offset: torch.Tensor, height: int, width: int, kernel: tuple[int, int], padding: tuple[int, int],
                   dilation: tuple[int, int]) -> torch.Tensor:
    """``offset`` [B, 2*G*kh*kw, Ho, Wo] with every NaN/Inf replaced by a finite displacement that puts the sample
    below and left of any input of size ``height`` x ``width`` (so its tap contributes zero, as a non-finite
    coordinate does in the official CUDA kernel). Same shape and dtype; differentiable (zero gradient there); no
    host synchronisation, so CUDA graphs can capture it. Left as is while exporting (ONNX DeformConv gives zero)."""
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return offset
    reach = max(height, width) + max(padding) + max(dilation) * max(kernel) + 2
    return torch.where(torch.isfinite(offset), offset, offset.new_full((), -float(reach)))


def deform_conv2d_reference(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None = None, stride: IntPair = (1, 1), padding: IntPair = (0, 0),
                            dilation: IntPair = (1, 1), mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pure-PyTorch deformable convolution; same arguments, layout and result as ``torchvision.ops.deform_conv2d``.

    Shapes are in the module docstring: input [B, Cin, H, W], offset [B, 2*G*kh*kw, Ho, Wo], mask
    [B, G*kh*kw, Ho, Wo] or None, weight [Cout, Cin/groups, kh, kw], bias [Cout] or None -> [B, Cout, Ho, Wo].
    All tensors share one floating dtype (float32/float64/...) and device. Differentiable w.r.t. every tensor.

    Memory: the sampled im2col buffer is [B, Cin * kh * kw, Ho * Wo], i.e. kh * kw times the input at stride 1,
    and autograd keeps the four bilinear-corner gathers of that size for the backward pass.
    """
    stride, padding, dilation = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    groups, offset_groups, out_h, out_w = check_deform_arguments(input, offset, weight, bias, stride, padding, dilation,
                                                           mask)
    batch, in_channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    taps, pixels = kh * kw, out_h * out_w
    dtype, device = input.dtype, input.device
    offset = finite_offsets(offset, height, width, (kh, kw), padding, dilation)

    rows = torch.arange(kh, device=device, dtype=dtype)[:, None, None, None] * dilation[0]
    rows = rows + (torch.arange(out_h, device=device, dtype=dtype) * stride[0] - padding[0])[None, None, :, None]
    cols = torch.arange(kw, device=device, dtype=dtype)[None, :, None, None] * dilation[1]
    cols = cols + (torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1])[None, None, None, :]
    offset = offset.reshape(batch, offset_groups, taps, 2, out_h, out_w)
    y = rows.reshape(1, 1, kh, 1, out_h, 1) + offset[:, :, :, 0].reshape(batch, offset_groups, kh, kw, out_h, out_w)
    x = cols.reshape(1, 1, 1, kw, 1, out_w) + offset[:, :, :, 1].reshape(batch, offset_groups, kh, kw, out_h, out_w)
    y = y.reshape(batch, offset_groups, 1, taps * pixels)
    x = x.reshape(batch, offset_groups, 1, taps * pixels)

    y_low, x_low = torch.floor(y), torch.floor(x)
    frac_y, frac_x = y - y_low, x - x_low
    y_low, x_low = y_low.long(), x_low.long()
    scale = None if mask is None else mask.reshape(batch, offset_groups, 1, taps * pixels)

    source = input.reshape(batch, offset_groups, in_channels // offset_groups, height * width)
    index_shape = (batch, offset_groups, source.shape[2], taps * pixels)
    columns = torch.zeros((), dtype=dtype, device=device)
    for dy, weight_y in ((0, 1 - frac_y), (1, frac_y)):
        row = y_low + dy
        row_valid = (row >= 0) & (row < height)
        for dx, weight_x in ((0, 1 - frac_x), (1, frac_x)):
            col = x_low + dx
            valid = row_valid & (col >= 0) & (col < width)
            corner = weight_y * weight_x * valid
            if scale is not None:
                corner = corner * scale
            index = row.clamp(0, height - 1) * width + col.clamp(0, width - 1)
            columns = columns + corner * torch.gather(source, 3, index.expand(index_shape))

    columns = columns.reshape(batch, groups, (in_channels // groups) * taps, pixels)
    kernel = weight.reshape(groups, out_channels // groups, (in_channels // groups) * taps)
    out = torch.einsum("goc,bgcp->bgop", kernel, columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.reshape(1, out_channels, 1, 1)
    return out


@functools.lru_cache(maxsize=1)
def _torchvision_deform_conv2d() -> Callable[..., torch.Tensor] | None:
    """``torchvision.ops.deform_conv2d`` if torchvision imports (quietly), else None; imported once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from torchvision.ops import deform_conv2d
        except (ImportError, OSError, RuntimeError):
            return None
    return deform_conv2d


def deform_conv2d_backend() -> str:
    """The implementation ``deform_conv2d`` uses now: ``"torchvision"`` or ``"reference"``.

    ``"reference"`` when the environment variable ``PEM_DISABLE_TORCHVISION_DEFORM`` is ``1`` (read on every
    call) or torchvision cannot be imported.
    """
    if os.environ.get(DISABLE_TORCHVISION_ENV, "").strip() == "1" or _torchvision_deform_conv2d() is None:
        return "reference"
    return "torchvision"


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride: IntPair = (1, 1), padding: IntPair = (0, 0), dilation: IntPair = (1, 1),
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable convolution with the signature and semantics of ``torchvision.ops.deform_conv2d``.

    input [B, Cin, H, W], offset [B, 2*G*kh*kw, Ho, Wo] (dy, dx per tap), mask [B, G*kh*kw, Ho, Wo] or None
    (DCNv2 modulation), weight [Cout, Cin/groups, kh, kw], bias [Cout] or None -> [B, Cout, Ho, Wo]; one
    floating dtype and device for all. Runs torchvision's kernel or ``deform_conv2d_reference`` as
    ``deform_conv2d_backend()`` says. Inconsistent shapes raise ValueError.
    """
    stride, padding, dilation = as_pair(stride, "stride"), as_pair(padding, "padding"), as_pair(dilation, "dilation")
    if deform_conv2d_backend() == "reference":
        return deform_conv2d_reference(input, offset, weight, bias, stride, padding, dilation, mask)
    check_deform_arguments(input, offset, weight, bias, stride, padding, dilation, mask)
    offset = finite_offsets(offset, input.shape[2], input.shape[3], tuple(weight.shape[2:]), padding, dilation)
    kernel = _torchvision_deform_conv2d()
    return kernel(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
