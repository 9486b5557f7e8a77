"""PEM's TensorRT plugins: ``pem::PrototypeGather`` and ``pem::DeformConv2d`` as Quickly Deployable Plugins.

Each is a ``tensorrt.plugin`` pair: ``@register`` (output shape and dtype) and ``@aot_impl`` (PTX compiled from the
Triton kernels of ``pem.kernels`` for the building GPU, launch grid and scalar arguments). The kernel is embedded
in the engine at build time (TensorRT >= 10.9 with its ONNX parser's ahead-of-time plugin support), so running the
engine needs neither Python nor Triton; building it needs both (and torch, which ``pem.kernels`` imports).
:func:`register_plugins` registers them (idempotent); importing this package imports neither TensorRT nor Triton.
"""
from __future__ import annotations

import importlib
from collections.abc import Hashable, Mapping
from typing import Any

from pem.runtime.contract import DEFORM_CONV2D_OP, PROTOTYPE_GATHER_DOMAIN, PROTOTYPE_GATHER_OP

__all__ = ["DEFORM_CONV2D_OP", "DEFORM_CONV2D_PLUGIN", "MIN_TENSORRT", "PLUGINS", "PLUGIN_VERSION",
           "PROTOTYPE_GATHER_PLUGIN", "kernel_dtype", "register_plugins"]

PLUGIN_VERSION = "1"  # tensorrt.plugin registers every plugin as version "1"
PROTOTYPE_GATHER_PLUGIN = f"{PROTOTYPE_GATHER_DOMAIN}::{PROTOTYPE_GATHER_OP}"
DEFORM_CONV2D_PLUGIN = f"{PROTOTYPE_GATHER_DOMAIN}::{DEFORM_CONV2D_OP}"
PLUGINS = (PROTOTYPE_GATHER_PLUGIN, DEFORM_CONV2D_PLUGIN)
MIN_TENSORRT = (10, 9)  # first TensorRT whose ONNX parser imports ahead-of-time Python plugins


def register_plugins() -> tuple[str, ...]:
    """Register both plugins with TensorRT's plugin registry (once per process) -> their ``ns::name`` ids.

    Raises ImportError when ``tensorrt.plugin`` (TensorRT >= 10.9 for ahead-of-time plugins) is missing."""
    importlib.import_module("pem.export.tensorrt.plugins.definitions")
    return PLUGINS


def kernel_dtype(plugin: str, tensors: Mapping[str, Any], names: Mapping[Hashable, str]) -> str:
    """The one Triton dtype (``names[desc.dtype]``: fp32|fp16|bf16) of the ``tensors`` (name -> ``TensorDesc``) a
    plugin kernel is compiled for; ValueError naming each tensor's dtype when they differ or one is not a float
    dtype the kernels take (a mixed-dtype graph would otherwise be read through the wrong pointer type)."""
    dtypes = {name: names.get(desc.dtype) for name, desc in tensors.items()}
    found = ", ".join(f"{name} {desc.dtype}" for name, desc in tensors.items())
    if None in dtypes.values():
        raise ValueError(f"{plugin} runs on float32, float16 or bfloat16 tensors, got {found}")
    if len(set(dtypes.values())) != 1:
        raise ValueError(f"{plugin} needs {', '.join(tensors)} of one dtype, got {found}: keep them in one precision "
                         "(the FP16 pass keeps pem nodes in FP32)")
    return next(iter(dtypes.values()))
