"""Fused kernels of the fast PyTorch-CUDA path, each with its PyTorch reference as fallback and oracle.

* ``prototype_gather_fast`` / ``prototype_gather_triton``: ``pem::PrototypeGather`` (Triton).
* ``deform_conv2d_fast`` / ``deform_conv2d_triton``: modulated deformable convolution with FP32 coordinates and
  FP32 accumulation (Triton).
* ``panoptic_pixel_stage_torch``: the per-pixel stage of panoptic fusion in torch, on any device.

The ``*_fast`` dispatchers run the Triton kernels on CUDA tensors when triton imports and ``PEM_DISABLE_TRITON``
is not ``1`` (and no gradient is needed, nothing is traced), else the references; inside ``interpreted_on_cpu()``
CPU tensors take the Triton path too, under Triton's interpreter (the CPU rehearsal of the GPU path). Triton is
imported lazily (``triton_available()``); the kernel sources are ``pem.kernels.prototype_gather_kernel`` and
``pem.kernels.deform_conv_kernel``, which import triton themselves.
"""
from __future__ import annotations

from pem.kernels._runtime import DISABLE_TRITON_ENV, interpreted_on_cpu, triton_available, use_triton
from pem.kernels.deform_conv import deform_conv2d_fast, deform_conv2d_triton
from pem.kernels.panoptic import PixelStage, panoptic_pixel_stage_torch
from pem.kernels.prototype_gather import prototype_gather_fast, prototype_gather_triton

__all__ = [
    "DISABLE_TRITON_ENV",
    "PixelStage",
    "deform_conv2d_fast",
    "deform_conv2d_triton",
    "interpreted_on_cpu",
    "panoptic_pixel_stage_torch",
    "prototype_gather_fast",
    "prototype_gather_triton",
    "triton_available",
    "use_triton",
]
