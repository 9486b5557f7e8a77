"""The ``tensorrt.plugin`` definitions of ``pem::PrototypeGather`` and ``pem::DeformConv2d`` (imports TensorRT).

Importing this module registers both plugins; use :func:`pem.export.tensorrt.plugins.register_plugins`. Each
``aot_impl`` compiles the adapter kernel of ``plugins.kernels`` for the dtype TensorRT picked (the network is
strongly typed, so it is the graph's) and the GPU of the build, capped at the PTX ISA version its driver JITs, and
returns the launch grid and the scalar arguments as symbolic expressions of the input shapes (dynamic shapes work).
Channel counts, kernel size and head count must be build-time constants (they are in exported PEM graphs).

No ``from __future__ import annotations`` here: ``tensorrt.plugin`` reads the annotations as objects.
"""
import numpy as np
import numpy.typing as npt
import tensorrt as trt
import tensorrt.plugin as trtp

from pem.export.tensorrt.plugins import DEFORM_CONV2D_PLUGIN, PROTOTYPE_GATHER_PLUGIN, kernel_dtype
from pem.export.tensorrt.plugins.ptx import KernelPTX, deform_conv2d_ptx, driver_ptx_version, prototype_gather_ptx
from pem.runtime.backends.tensorrt import cuda_call, device_facts, import_cudart

Launch = tuple[str, str, trtp.KernelLaunchParams, trtp.SymIntExprs]

_TRITON_DTYPES = {trt.float32: "fp32", trt.float16: "fp16", trt.bfloat16: "bf16"}


@trtp.register(PROTOTYPE_GATHER_PLUGIN)
def prototype_gather_shape(memory: trtp.TensorDesc, queries: trtp.TensorDesc, mask_logits: trtp.TensorDesc,
                           skip_mask: trtp.TensorDesc, num_heads: int) -> trtp.TensorDesc:
    """memory [B, N, C], queries [B, Q, C], mask logits [B, Q, N], skip_mask float32 [B] -> prototypes [B, Q, C]."""
    return queries.like()


@trtp.aot_impl(PROTOTYPE_GATHER_PLUGIN)
def prototype_gather_launch(memory: trtp.TensorDesc, queries: trtp.TensorDesc, mask_logits: trtp.TensorDesc,
                            skip_mask: trtp.TensorDesc, num_heads: int, outputs: tuple[trtp.TensorDesc],
                            tactic: int) -> Launch:
    """Grid (B * heads, cdiv(Q, BLOCK_Q)); scalars N, Q, heads, head_dim."""
    channels = _constant(memory.shape_expr[2], f"the channel count of {PROTOTYPE_GATHER_PLUGIN}")
    if num_heads < 1 or channels % num_heads:
        raise ValueError(f"{PROTOTYPE_GATHER_PLUGIN}: {channels} channels do not split into {num_heads} heads")
    head_dim = channels // num_heads
    dtype = kernel_dtype(PROTOTYPE_GATHER_PLUGIN, {"memory": memory, "queries": queries, "mask_logits": mask_logits},
                         _TRITON_DTYPES)
    kernel = prototype_gather_ptx(dtype, _arch(), head_dim, _ptx_version())
    batch, tokens, num_queries = memory.shape_expr[0], memory.shape_expr[1], queries.shape_expr[1]
    grid = (batch * num_heads, trtp.cdiv(num_queries, kernel.constants["BLOCK_Q"]), 1)
    return _launch(kernel, grid, [tokens, num_queries, num_heads, head_dim])


@trtp.register(DEFORM_CONV2D_PLUGIN)
def deform_conv2d_shape(input: trtp.TensorDesc, offset: trtp.TensorDesc, mask: trtp.TensorDesc,
                        weight_taps: trtp.TensorDesc, bias: trtp.TensorDesc, strides: npt.NDArray[np.int32],
                        pads: npt.NDArray[np.int32], dilations: npt.NDArray[np.int32]) -> trtp.TensorDesc:
    """input [B, Cin, H, W], offset [B, 2*kh*kw, Ho, Wo], mask [B, kh*kw, Ho, Wo], weight_taps float32
    [kh, kw, Cout, Cin], bias float32 [Cout] -> output [B, Cout, Ho, Wo] in the input dtype."""
    return trtp.from_shape_expr((input.shape_expr[0], weight_taps.shape_expr[2], offset.shape_expr[2],
                                 offset.shape_expr[3]), dtype=input.dtype)


@trtp.aot_impl(DEFORM_CONV2D_PLUGIN)
def deform_conv2d_launch(input: trtp.TensorDesc, offset: trtp.TensorDesc, mask: trtp.TensorDesc,
                         weight_taps: trtp.TensorDesc, bias: trtp.TensorDesc, strides: npt.NDArray[np.int32],
                         pads: npt.NDArray[np.int32], dilations: npt.NDArray[np.int32],
                         outputs: tuple[trtp.TensorDesc], tactic: int) -> Launch:
    """Grid (cdiv(Ho * Wo, BLOCK_P), cdiv(Cout, BLOCK_CO), B); scalars Cin, H, W, Cout, Ho, Wo, stride, pad,
    dilation (pads begin == end, as the rewrite checked)."""
    what = f"the weight shape of {DEFORM_CONV2D_PLUGIN}"
    kh, kw, out_channels = (_constant(weight_taps.shape_expr[i], what) for i in range(3))
    dtype = kernel_dtype(DEFORM_CONV2D_PLUGIN, {"input": input, "offset": offset, "mask": mask}, _TRITON_DTYPES)
    kernel = deform_conv2d_ptx(dtype, _arch(), (kh, kw), out_channels, _ptx_version())
    batch, in_channels, height, width = (input.shape_expr[i] for i in range(4))
    out_height, out_width = offset.shape_expr[2], offset.shape_expr[3]
    grid = (trtp.cdiv(out_height * out_width, kernel.constants["BLOCK_P"]),
            -(-out_channels // kernel.constants["BLOCK_CO"]), batch)
    scalars = [in_channels, height, width, out_channels, out_height, out_width,
               *(int(v) for v in strides[:2]), *(int(v) for v in pads[:2]), *(int(v) for v in dilations[:2])]
    return _launch(kernel, grid, scalars)


def _launch(kernel: KernelPTX, grid: tuple, scalars: list) -> Launch:
    """The aot_impl result: kernel name, PTX, launch parameters (grid, 32 * num_warps threads, shared memory) and
    the scalar arguments as 32-bit symbolic integers."""
    params = trtp.KernelLaunchParams()
    params.grid_x, params.grid_y, params.grid_z = grid
    params.block_x = kernel.num_warps * 32
    params.shared_mem = kernel.shared_mem
    extra_args = trtp.SymIntExprs(len(scalars))
    for index, value in enumerate(scalars):
        extra_args[index] = trtp.SymInt32(value)
    return kernel.name, kernel.ptx, params, extra_args


def _constant(expr: trtp.ShapeExpr, what: str) -> int:
    if expr.is_fake or not expr.is_constant:
        raise ValueError(f"{what} must be fixed when the engine is built")
    return int(expr.constant_value())


def _arch() -> int:
    """Compute capability of the current CUDA device as an int (87 for 8.7)."""
    major, minor = device_facts(cuda_call(import_cudart().cudaGetDevice()))[1].split(".")
    return int(major) * 10 + int(minor)


def _ptx_version() -> int:
    """Highest PTX ISA version this machine's CUDA driver compiles (the engine is built where it runs)."""
    return driver_ptx_version(cuda_call(import_cudart().cudaDriverGetVersion()))
