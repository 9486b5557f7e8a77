"""The TensorRT plugin entry points (``pem.export.tensorrt.plugins.kernels``) launched as TensorRT would launch them
(inputs, scalars, outputs; contiguous tensors; the grids and constants of the plugins' ``aot_impl``), under Triton's
interpreter on CPU tensors, against the PyTorch references."""
from __future__ import annotations

import pytest
import torch

from pem.kernels._runtime import cdiv, launcher, next_power_of_2
from pem.ops.deform_conv import deform_conv2d_reference
from pem.ops.prototype_gather import prototype_gather


def test_prototype_gather_plugin_entry_point(interpreter: None) -> None:
    from pem.export.tensorrt.plugins.kernels import prototype_gather_plugin_kernel
    from pem.kernels import prototype_gather as launch

    generator = torch.Generator().manual_seed(3)
    batch, tokens, queries, heads, head_dim = 2, 70, 20, 4, 24
    channels = heads * head_dim
    memory = torch.nn.functional.normalize(torch.randn(batch, tokens, channels, generator=generator), dim=-1)
    query = torch.nn.functional.normalize(torch.randn(batch, queries, channels, generator=generator), dim=-1)
    logits = torch.randn(batch, queries, tokens, generator=generator) + 0.25
    logits[1] = -1.0  # image 1 excludes everything: its mask is ignored
    skip_mask = (logits < 0).flatten(1).all(1).float()
    out = torch.empty_like(query)
    grid = (batch * heads, cdiv(queries, launch.BLOCK_Q))
    launcher(prototype_gather_plugin_kernel, memory.device)[grid](
        memory, query, logits, skip_mask, tokens, queries, heads, head_dim, out,
        BLOCK_Q=launch.BLOCK_Q, BLOCK_N=launch.BLOCK_N, BLOCK_D=max(16, next_power_of_2(head_dim)),
    )
    torch.testing.assert_close(out, prototype_gather(memory, query, logits, heads), rtol=0, atol=0)


@pytest.mark.parametrize(("stride", "pad", "dilation"), [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_deform_conv2d_plugin_entry_point(interpreter: None, stride: int, pad: int, dilation: int) -> None:
    from pem.export.tensorrt.plugins.kernels import deform_conv2d_plugin_kernel
    from pem.export.tensorrt.plugins.ptx import _block_co
    from pem.kernels import deform_conv as launch

    generator = torch.Generator().manual_seed(stride * 10 + pad)
    batch, in_channels, height, width, out_channels, kernel = 2, 6, 9, 11, 20, 3
    x = torch.randn(batch, in_channels, height, width, generator=generator)
    out_h = (height + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    out_w = (width + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    offset = 2.5 * torch.randn(batch, 2 * kernel * kernel, out_h, out_w, generator=generator)
    mask = torch.rand(batch, kernel * kernel, out_h, out_w, generator=generator)
    weight = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator)
    bias = torch.randn(out_channels, generator=generator)
    out = torch.empty(batch, out_channels, out_h, out_w)
    block_co = _block_co(out_channels)
    grid = (cdiv(out_h * out_w, launch.BLOCK_P), cdiv(out_channels, block_co), batch)
    launcher(deform_conv2d_plugin_kernel, x.device)[grid](
        x, offset, mask, weight.permute(2, 3, 0, 1).contiguous(), bias,
        in_channels, height, width, out_channels, out_h, out_w, stride, stride, pad, pad, dilation, dilation, out,
        KH=kernel, KW=kernel, BLOCK_P=launch.BLOCK_P, BLOCK_CO=block_co, BLOCK_C=launch.BLOCK_C,
    )
    expected = deform_conv2d_reference(x, offset, weight, bias, stride, pad, dilation, mask)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
