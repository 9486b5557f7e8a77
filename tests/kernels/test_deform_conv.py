"""The shipped Triton deformable-conv kernel against ``deform_conv2d_reference`` (interpreter on CPU, and GPU)."""
from __future__ import annotations

import math

import pytest
import torch

from pem.kernels import deform_conv2d_fast, deform_conv2d_triton
from pem.ops.deform_conv import deform_conv2d, deform_conv2d_reference
from tests.kernels.gpu_timing import cuda_milliseconds, report

FP32_ATOL = 1e-5
HALF_RTOL = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}  # one rounding of the FP32 result to the output
# Triton's interpreter (3.8) truncates float32 -> bfloat16 casts instead of rounding them to nearest as the GPU does
INTERPRETER_RTOL = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-7}
HALF_ATOL = 1e-5


def _tensors(batch: int, in_channels: int, out_channels: int, height: int, width: int, kernel: tuple[int, int] = (3, 3),
             out_size: tuple[int, int] | None = None, offset_scale: float = 2.0, seed: int = 0,
             device: str = "cpu") -> dict[str, torch.Tensor]:
    """input [B, Cin, H, W], offset [B, 2*kh*kw, Ho, Wo], mask in [0, 1], weight with 1/sqrt(fan-in) scale, bias."""
    generator = torch.Generator().manual_seed(seed)
    kh, kw = kernel
    out_h, out_w = out_size or (height, width)
    fan_in = in_channels * kh * kw
    tensors = {
        "input": torch.randn(batch, in_channels, height, width, generator=generator),
        "offset": torch.randn(batch, 2 * kh * kw, out_h, out_w, generator=generator) * offset_scale,
        "mask": torch.rand(batch, kh * kw, out_h, out_w, generator=generator),
        "weight": torch.randn(out_channels, in_channels, kh, kw, generator=generator) / math.sqrt(fan_in),
        "bias": torch.randn(out_channels, generator=generator),
    }
    return {name: t.to(device) for name, t in tensors.items()}


def _border_offsets(offset: torch.Tensor, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """PEM geometry (3x3, padding 1): offsets whose samples land exactly on the borders, just inside/outside,
    at -1 and H/W (zero), and 1e6 px away; [B, 18, H, W] like ``offset``."""
    generator = torch.Generator().manual_seed(seed)
    taps = torch.arange(9)
    rows = (torch.arange(height)[None, :, None] + (taps // 3 - 1)[:, None, None]).double()
    cols = (torch.arange(width)[None, None, :] + (taps % 3 - 1)[:, None, None]).double()
    out = torch.empty(offset.shape, dtype=torch.float64)
    for axis, (size, base) in enumerate(((height, rows), (width, cols))):
        targets = torch.tensor([-1.0, size, 0.0, size - 1.0, -0.5, size - 0.5, -1.0 + 1e-6, size - 1e-6, -2.0,
                                size + 1.0, -1e6, 1e6, 0.25, size - 1.25, size / 2.0 + 0.3], dtype=torch.float64)
        chosen = targets[torch.randint(len(targets), (offset.shape[0], 9, height, width), generator=generator)]
        out[:, axis::2] = chosen - base
    return out.to(offset.dtype)


def _run(fn: object, tensors: dict[str, torch.Tensor], bias: bool = False, mask: bool = True,
         **geometry: tuple[int, int]) -> torch.Tensor:
    return fn(tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"] if bias else None,
              mask=tensors["mask"] if mask else None, **geometry)


@pytest.mark.parametrize("offsets", ["random", "border"])
def test_pem_geometry_fp32(interpreter: None, offsets: str) -> None:
    """3x3, stride 1, padding 1, mask, no bias; 2 pixel blocks, 2 channel blocks, 2 output-channel blocks."""
    tensors = _tensors(2, 40, 70, 9, 8)
    if offsets == "border":
        tensors["offset"] = _border_offsets(tensors["offset"], 9, 8)
    out = _run(deform_conv2d_triton, tensors, padding=(1, 1))
    assert out.dtype == torch.float32 and out.shape == (2, 70, 9, 8)
    assert float((out - _run(deform_conv2d_reference, tensors, padding=(1, 1))).abs().max()) <= FP32_ATOL
    exact = _run(deform_conv2d_reference, {k: v.double() for k, v in tensors.items()}, padding=(1, 1))
    assert float((out.double() - exact).abs().max()) <= FP32_ATOL


def test_general_geometry_bias_no_mask(interpreter: None) -> None:
    geometry = {"stride": (2, 1), "padding": (2, 1), "dilation": (2, 1)}
    tensors = _tensors(1, 6, 5, 7, 9, kernel=(2, 3), out_size=(5, 9), offset_scale=3.0, seed=2)
    out = _run(deform_conv2d_triton, tensors, bias=True, mask=False, **geometry)
    expected = _run(deform_conv2d_reference, tensors, bias=True, mask=False, **geometry)
    assert float((out - expected).abs().max()) <= FP32_ATOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_fp32_coordinates(interpreter: None, dtype: torch.dtype) -> None:
    """Half inputs on a 600 px wide image: samples at x ~ 600 + 0.3 would move by up to 0.25 px with half-precision
    coordinates. The kernel matches the FP32 reference on the rounded inputs up to the final rounding."""
    tensors = {k: v.to(dtype) for k, v in _tensors(1, 3, 16, 2, 600, offset_scale=0.7, seed=3).items()}
    out = _run(deform_conv2d_triton, tensors, padding=(1, 1))
    assert out.dtype == dtype
    expected = _run(deform_conv2d_reference, {k: v.float() for k, v in tensors.items()}, padding=(1, 1))
    torch.testing.assert_close(out.float(), expected, rtol=INTERPRETER_RTOL[dtype], atol=HALF_ATOL)


def test_rejects_groups(interpreter: None) -> None:
    tensors = _tensors(1, 4, 4, 5, 5)
    with pytest.raises(ValueError, match="groups"):
        deform_conv2d_triton(tensors["input"], tensors["offset"], tensors["weight"][:, :2], padding=1)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d_triton(tensors["input"], tensors["offset"], tensors["weight"], padding=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_matches_reference_and_timing(compiled_triton: None, dtype: torch.dtype) -> None:
    """PEM's stride-8 level of a 512 x 1024 input (C = 128, 64 x 128), on CUDA."""
    tensors = {k: v.to(dtype) for k, v in _tensors(1, 128, 128, 64, 128, offset_scale=4.0, device="cuda").items()}
    out = _run(deform_conv2d_triton, tensors, padding=(1, 1))
    exact = _run(deform_conv2d_reference, {k: v.double() for k, v in tensors.items()}, padding=(1, 1))
    if dtype == torch.float32:
        assert float((out.double() - exact).abs().max()) <= 1e-4
    else:
        torch.testing.assert_close(out.double(), exact, rtol=HALF_RTOL[dtype], atol=1e-4)
    assert torch.equal(_run(deform_conv2d_fast, tensors, padding=(1, 1)), out)
    # torchvision's CUDA deformable conv has no BFloat16 kernel: deformable_im2col dispatches with
    # AT_DISPATCH_FLOATING_TYPES_AND_HALF (pytorch/vision@0d7913da torchvision/csrc/ops/cuda/deform_conv2d_kernel.cu;
    # the 0.29.1 CPU kernel raises "deformable_im2col" not implemented for 'BFloat16'), so pem.ops, which dispatches
    # to it, is timed on float32 copies for bfloat16 (what deform_conv2d_fast's fallback computes in).
    ops_tensors = {k: v.float() for k, v in tensors.items()} if dtype == torch.bfloat16 else tensors
    timings = {"triton": cuda_milliseconds(lambda: _run(deform_conv2d_triton, tensors, padding=(1, 1))),
               "reference": cuda_milliseconds(lambda: _run(deform_conv2d_reference, tensors, padding=(1, 1))),
               "pem.ops" if dtype != torch.bfloat16 else "pem.ops (fp32)":
                   cuda_milliseconds(lambda: _run(deform_conv2d, ops_tensors, padding=(1, 1)))}
    report("deform_conv2d", f"B=1 C=128->128 64x128 3x3 {dtype}", timings)
