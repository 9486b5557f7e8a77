"""PTX of the plugin kernels (``pem.export.tensorrt.plugins.kernels``) for one GPU architecture, without a GPU.

TensorRT embeds the PTX in the engine and launches it with exactly the tensor pointers and scalar arguments of the
plugin. Triton (>= 3.3) appends scratch-memory pointer parameters to every kernel; ours use no scratch memory, so
these trailing parameters are checked to be unused and removed from the entry, which then takes the plugin's
arguments only. ``ptx_version`` caps the PTX ISA version for older drivers (JetPack 6.2's CUDA 12.6 driver JITs
PTX up to ISA 8.5; :func:`driver_ptx_version` gives it for a driver). Imports triton lazily.

Triton's NVIDIA backend names used here are private and changed between releases (read in
``triton/backends/nvidia/compiler.py``: 3.8.0 has ``get_ptxas(arch) -> knobs.NvidiaTool`` with ``.version``; other
releases have ``get_ptxas()`` without the argument, or ``get_ptxas(arch)`` returning a ``(path, version)`` tuple;
releases before ~3.3 set no ``global_scratch_size``; ``ptx_get_version`` maps CUDA 12.6 to 85 in 3.8 and to 86 in
older releases, and knows no CUDA 13 before ~3.4). So the ptxas version is read with fallbacks, the PTX ISA of a
CUDA version comes from our own table (:data:`PTX_ISA`), and :func:`check_triton` runs these probes before TensorRT
starts a build, so an incompatible Triton stops with one clear :class:`TritonCompatibilityError` instead of a
failure inside TensorRT's ``aot_impl`` callback. Tested range: the ``trt-plugins`` extra of pyproject.toml.
"""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DTYPES",
    "PTX_ISA",
    "KernelPTX",
    "TritonCompatibilityError",
    "check_triton",
    "deform_conv2d_ptx",
    "driver_ptx_version",
    "prototype_gather_ptx",
    "ptx_isa_version",
    "ptxas_version",
    "strip_trailing_params",
]

DTYPES = ("fp32", "fp16", "bf16")  # Triton names of the float dtypes the kernels take
# CUDA (major, minor) -> the PTX ISA version (85 = 8.5) its toolkit emits and its driver JITs, from the "Release
# Notes" table of NVIDIA's PTX ISA documentation (8.5 shipped with CUDA 12.5 and 12.6; 9.0 with CUDA 13.0).
PTX_ISA = {(12, 0): 80, (12, 1): 81, (12, 2): 82, (12, 3): 83, (12, 4): 84, (12, 5): 85, (12, 6): 85, (12, 7): 86,
           (12, 8): 87, (12, 9): 88, (13, 0): 90, (13, 1): 91, (13, 2): 92}


class TritonCompatibilityError(RuntimeError):
    """The installed Triton lacks what the plugin PTX compilation needs; the message says which Triton to install."""


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
    can JIT."""
    return ptx_isa_version(f"{driver_version // 1000}.{driver_version % 1000 // 10}")


def ptx_isa_version(cuda_version: str) -> int:
    """PTX ISA version (85 = 8.5) of CUDA ``"12.6"``: :data:`PTX_ISA`, capped at its newest entry for a newer
    CUDA (the newest ISA we know is safe to emit); ValueError for CUDA older than 12.0 or an unreadable version."""
    match = re.fullmatch(r"(\d+)\.(\d+)", cuda_version.strip())
    if match is None:
        raise ValueError(f"cannot read CUDA version {cuda_version!r} (expected MAJOR.MINOR)")
    key = (int(match.group(1)), int(match.group(2)))
    if key < min(PTX_ISA):
        raise ValueError(f"CUDA {cuda_version} is older than 12.0, which the plugin kernels need")
    return PTX_ISA.get(key, PTX_ISA[max(k for k in PTX_ISA if k <= key)])


def ptxas_version(arch: int) -> str:
    """The CUDA version (``"12.8"``) of the ptxas Triton compiles ``sm_<arch>`` with, whatever form this Triton's
    private ``get_ptxas`` has: ``get_ptxas(arch)`` or ``get_ptxas()``, returning an object with ``.version`` or a
    ``(path, version)`` tuple. Raises TritonCompatibilityError naming what is missing."""
    compiler = _nvidia_compiler()
    get_ptxas = getattr(compiler, "get_ptxas", None)
    if get_ptxas is None:
        raise TritonCompatibilityError(_incompatible("it has no triton.backends.nvidia.compiler.get_ptxas"))
    try:
        takes_arch = bool(inspect.signature(get_ptxas).parameters)
    except (TypeError, ValueError):
        takes_arch = True
    try:
        tool = get_ptxas(arch) if takes_arch else get_ptxas()
    except Exception as error:  # Triton raises RuntimeError without ptxas, or anything from a changed API
        raise TritonCompatibilityError(_incompatible(f"get_ptxas failed: {error}")) from None
    version = getattr(tool, "version", None)
    if version is None and isinstance(tool, tuple) and len(tool) == 2:
        version = tool[1]
    if not isinstance(version, str) or re.fullmatch(r"\d+\.\d+", version) is None:
        raise TritonCompatibilityError(_incompatible(f"get_ptxas returned {tool!r}, without a MAJOR.MINOR version"))
    return version


def check_triton(arch: int) -> str:
    """Probe Triton for ``sm_<arch>`` before a TensorRT build -> ``"Triton 3.8.0, ptxas 12.8 (PTX ISA 8.7)"``.

    Raises ImportError without Triton, TritonCompatibilityError when its private API cannot be read."""
    try:
        import triton
    except ImportError as error:
        raise ImportError(f"PEM's TensorRT plugins compile their kernels with Triton while the engine is built "
                          f"({error}): pip install -e \".[trt-plugins]\", or build without the plugins") from None
    if not hasattr(triton, "compile"):
        raise TritonCompatibilityError(_incompatible("it has no triton.compile"))
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as error:
        raise TritonCompatibilityError(_incompatible(str(error))) from None
    version = ptxas_version(arch)
    try:
        isa = ptx_isa_version(version)
    except ValueError as error:
        raise TritonCompatibilityError(_incompatible(str(error))) from None
    return f"Triton {getattr(triton, '__version__', '?')}, ptxas {version} (PTX ISA {isa // 10}.{isa % 10})"


def _nvidia_compiler() -> Any:
    try:
        return importlib.import_module("triton.backends.nvidia.compiler")
    except ImportError as error:
        raise TritonCompatibilityError(_incompatible(f"no NVIDIA backend ({error})")) from None


def _incompatible(reason: str) -> str:
    return (f"this Triton cannot compile PEM's TensorRT plugins: {reason}. Install the tested range with "
            "pip install -e \".[trt-plugins]\", or build without the plugins (pem-export --no-plugins)")


def _compile(kernel: Any, pointers: dict[str, str], constants: dict[str, int], options: dict[str, int], arch: int,
             ptx_version: int | None) -> KernelPTX:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    bundled = ptx_isa_version(ptxas_version(arch))
    options = {**options, "ptx_version": bundled if ptx_version is None else min(bundled, ptx_version)}
    signature = {name: "constexpr" if name in constants else pointers.get(name, "i32") for name in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", arch, 32),
                              options=options)
    metadata = compiled.metadata
    if getattr(metadata, "global_scratch_size", 0) or getattr(metadata, "profile_scratch_size", 0):
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
