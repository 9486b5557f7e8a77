"""PTX of the plugin kernels (``pem.export.tensorrt.plugins.kernels``) for one GPU architecture, without a GPU.

TensorRT embeds the PTX in the engine and launches it with exactly the tensor pointers and scalar arguments of the
plugin. Triton (>= 3.3) appends scratch-memory pointer parameters to every kernel; ours use no scratch memory, so
these trailing parameters are checked to be unused and removed from the entry, which then takes the plugin's
arguments only. ``ptx_version`` caps the PTX ISA version for older drivers (JetPack 6.2's CUDA 12.6 driver JITs
PTX up to ISA 8.5; :func:`driver_ptx_version` gives it for a driver). Imports triton lazily.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DTYPES",
    "KernelPTX",
    "deform_conv2d_ptx",
    "driver_ptx_version",
    "prototype_gather_ptx",
    "strip_trailing_params",
]

DTYPES = ("fp32", "fp16", "bf16")  # Triton names of the float dtypes the kernels take


@dataclass(frozen=True)
class KernelPTX:
    """A compiled kernel: entry ``name``, ``ptx`` text, ``params`` (entry parameter count), launch ``num_warps``
    (block = 32 * num_warps threads), ``shared_mem`` bytes per block and the ``constants`` (block sizes) it was
    compiled with, which the launch grid needs."""

    name: str
    ptx: str
    params: int
    num_warps: int
    shared_mem: int
    constants: dict[str, int]


def deform_conv2d_ptx(dtype: str, arch: int, kernel_size: tuple[int, int], out_channels: int,
                      ptx_version: int | None = None) -> KernelPTX:
    """``pem::DeformConv2d`` for input/offset/mask/output of ``dtype`` (fp32|fp16|bf16) on ``sm_<arch>``."""
    from pem.export.tensorrt.plugins.kernels import deform_conv2d_plugin_kernel
    from pem.kernels import deform_conv as launch

    constants = {"KH": kernel_size[0], "KW": kernel_size[1], "BLOCK_P": launch.BLOCK_P,
                 "BLOCK_CO": _block_co(out_channels), "BLOCK_C": launch.BLOCK_C}
    pointers = {name: f"*{_check_dtype(dtype)}" for name in ("input_ptr", "offset_ptr", "mask_ptr", "out_ptr")}
    pointers.update(weight_ptr="*fp32", bias_ptr="*fp32")
    options = {"num_warps": launch.NUM_WARPS, "num_stages": launch.NUM_STAGES}
    return _compile(deform_conv2d_plugin_kernel, pointers, constants, options, arch, ptx_version)


def _block_co(out_channels: int) -> int:
    """Output channels per program: as ``pem.kernels.deform_conv`` chooses them (16 .. 64, a power of two)."""
    from pem.kernels import deform_conv as launch
    from pem.kernels._runtime import next_power_of_2

    return min(launch.MAX_BLOCK_CO, max(16, next_power_of_2(out_channels)))


def prototype_gather_ptx(dtype: str, arch: int, head_dim: int, ptx_version: int | None = None) -> KernelPTX:
    """``pem::PrototypeGather`` for memory/queries/mask logits/output of ``dtype`` on ``sm_<arch>``."""
    from pem.export.tensorrt.plugins.kernels import prototype_gather_plugin_kernel
    from pem.kernels import prototype_gather as launch
    from pem.kernels._runtime import next_power_of_2

    constants = {"BLOCK_Q": launch.BLOCK_Q, "BLOCK_N": launch.BLOCK_N, "BLOCK_D": max(16, next_power_of_2(head_dim))}
    pointers = {name: f"*{_check_dtype(dtype)}" for name in ("memory_ptr", "query_ptr", "mask_ptr", "out_ptr")}
    pointers["skip_mask_ptr"] = "*fp32"
    options = {"num_warps": launch.NUM_WARPS}
    return _compile(prototype_gather_plugin_kernel, pointers, constants, options, arch, ptx_version)


def driver_ptx_version(driver_version: int) -> int:
    """Highest PTX ISA version (85 = 8.5) a CUDA driver of ``driver_version`` (``cudaDriverGetVersion``: 12060)
    can JIT, by Triton's own table."""
    from triton.backends.nvidia.compiler import ptx_get_version

    return ptx_get_version(f"{driver_version // 1000}.{driver_version % 1000 // 10}")


def _compile(kernel: Any, pointers: dict[str, str], constants: dict[str, int], options: dict[str, int], arch: int,
             ptx_version: int | None) -> KernelPTX:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas, ptx_get_version
    from triton.compiler import ASTSource

    bundled = ptx_get_version(get_ptxas(arch).version)
    options = {**options, "ptx_version": bundled if ptx_version is None else min(bundled, ptx_version)}
    signature = {name: "constexpr" if name in constants else pointers.get(name, "i32") for name in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", arch, 32),
                              options=options)
    metadata = compiled.metadata
    if metadata.global_scratch_size or getattr(metadata, "profile_scratch_size", 0):
        raise RuntimeError(f"{metadata.name} needs Triton scratch memory, which TensorRT plugins cannot provide")
    expected = sum(1 for kind in signature.values() if kind != "constexpr")
    ptx = strip_trailing_params(compiled.asm["ptx"], metadata.name, expected)
    return KernelPTX(metadata.name, ptx, expected, metadata.num_warps, metadata.shared, dict(constants))


def strip_trailing_params(ptx: str, name: str, keep: int) -> str:
    """``ptx`` with the entry ``name`` reduced to its first ``keep`` parameters; ValueError when the entry has
    fewer, or when the body reads a removed one."""
    header = re.search(rf"\.entry {re.escape(name)}\((.*?)\)", ptx, flags=re.DOTALL)
    if header is None:
        raise ValueError(f"no .entry {name} in the PTX")
    params = [p.strip() for p in header.group(1).split(",") if p.strip()]
    if len(params) < keep:
        raise ValueError(f"{name} has {len(params)} parameters, expected at least {keep}")
    for index in range(keep, len(params)):
        if re.search(rf"\[{re.escape(name)}_param_{index}(\+\d+)?\]", ptx):
            raise ValueError(f"{name} reads its parameter {index}, which TensorRT would not pass")
    kept = ",\n\t".join(params[:keep])
    return ptx[:header.start(1)] + f"\n\t{kept}\n" + ptx[header.end(1):]


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"the plugin kernels take {', '.join(DTYPES)} tensors, not {dtype!r}")
    return dtype
