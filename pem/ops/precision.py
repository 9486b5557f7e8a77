"""Mixed precision of the PEM model: the one rule, applied by the model itself under autocast on any device.

Under ``torch.autocast(device, dtype=float16|bfloat16)`` the model runs in the low precision everything autocast
casts down (convolutions, linear layers, matmuls of the backbone, pixel decoder and PEM-CA memory), and keeps FP32:

* deformable convolution: sampling coordinates, bilinear blend and accumulation (``pem.kernels.deform_conv2d_fast``
  computes in FP32 for any mix of float16/bfloat16/float32 arguments; the output has the input's dtype);
* PEM-CA's L2 normalisation, prototype similarity and argmax (``PrototypeCrossAttention``);
* softmax: the self-attention among the Q queries (cheap: Q <= 200 tokens);
* LayerNorm (``LayerNorm32``);
* the prediction head: class logits, mask embeddings, mask logits and their bilinear resizing.

This is the same split as the ONNX FP16 pass (``pem.export.precision.fp16``: DeformConv, PrototypeGather, ArgMax,
Softmax, LayerNormalization, ReduceL2 and the ``transformer_decoder.head`` scope stay FP32). It does not depend on
autocast's per-device op lists (CUDA puts softmax and layer_norm in FP32, the CPU does not): the FP32 regions turn
autocast off and cast their inputs explicitly. Without autocast (FP32 inference, export) every helper is a no-op
that adds nothing to a traced graph.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def autocast_active(tensor: torch.Tensor) -> bool:
    """Whether autocast is on for the device type of ``tensor`` (never for devices autocast lacks, e.g. ``meta``)."""
    device_type = tensor.device.type
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


@contextlib.contextmanager
def full_precision(tensor: torch.Tensor) -> Iterator[None]:
    """Turn autocast off for ``tensor``'s device type inside the block (nothing happens when it is off already)."""
    if not autocast_active(tensor):
        yield
        return
    with torch.autocast(tensor.device.type, enabled=False):
        yield


def fp32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 (itself when it is float32 or float64 already: no node in a traced graph)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


class LayerNorm32(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters and state-dict keys) that normalises in FP32 under autocast.

    Input [..., C] of any float dtype -> float32 [..., C] under autocast, the input dtype otherwise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not autocast_active(x):
            return super().forward(x)
        with full_precision(x):
            return F.layer_norm(fp32(x), self.normalized_shape, self.weight, self.bias, self.eps)
