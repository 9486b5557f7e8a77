"""When the Triton kernels run, and how a kernel is launched on the device of its tensors.

Triton is imported lazily and silently: nothing here imports it until ``triton_available()`` is asked.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch

DISABLE_TRITON_ENV = "PEM_DISABLE_TRITON"

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_CPU_INTERPRETER = contextvars.ContextVar("pem_kernels_cpu_interpreter", default=False)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether ``import triton`` succeeds (tried once, warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import triton  # noqa: F401
        except Exception:  # a broken install may raise anything at import time
            return False
    return True


def triton_disabled() -> bool:
    """``PEM_DISABLE_TRITON=1`` in the environment (read on every call)."""
    return os.environ.get(DISABLE_TRITON_ENV, "").strip() == "1"


def _tracing() -> bool:
    """True while torch.compile, torch.export or the ONNX exporter traces the model (the references trace)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


@contextlib.contextmanager
def interpreted_on_cpu() -> Iterator[None]:
    """Inside the block the dispatchers also send CPU tensors to the Triton kernels, which run under Triton's
    interpreter: the CPU rehearsal of the GPU dispatch (slow; for tests). Needs ``TRITON_INTERPRET=1`` set before
    triton was imported (RuntimeError otherwise)."""
    if os.environ.get("TRITON_INTERPRET") != "1" or not triton_available():
        raise RuntimeError("interpreted_on_cpu needs triton and TRITON_INTERPRET=1 set before triton is imported")
    token = _CPU_INTERPRETER.set(True)
    try:
        yield
    finally:
        _CPU_INTERPRETER.reset(token)


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether a dispatcher should launch the Triton kernel for ``tensors``.

    Yes when every tensor is a CUDA tensor (or a CPU tensor inside ``interpreted_on_cpu()``) of a supported dtype
    (float16/bfloat16/float32), no gradient is needed (the kernels have no backward), nothing is being traced,
    Triton imports and ``PEM_DISABLE_TRITON`` is not ``1``.
    """
    on_cpu = _CPU_INTERPRETER.get()
    if not all((t.is_cuda or (on_cpu and t.device.type == "cpu")) and t.dtype in SUPPORTED_DTYPES for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return not _tracing() and not triton_disabled() and triton_available()


def launcher(kernel: Any, device: torch.device) -> Any:
    """``kernel`` after checking that it can run on ``device``.

    Compiled kernels run on CUDA tensors. With ``TRITON_INTERPRET=1`` in the environment before triton was first
    imported, ``@triton.jit`` returns interpreted kernels, which also run on CPU tensors (slowly: for tests).
    The variable is read when the decorators run, so setting it after ``import triton`` has no effect.
    """
    if device.type == "cuda":
        return kernel
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(kernel, InterpretedFunction):
        return kernel
    raise ValueError(f"Triton kernels need CUDA tensors, got {device}; CPU tensors run under Triton's interpreter "
                     f"only when TRITON_INTERPRET=1 is set before triton is imported")


def cdiv(numerator: int, denominator: int) -> int:
    """Ceiling division of positive ints (grid sizes)."""
    return -(-numerator // denominator)


def next_power_of_2(value: int) -> int:
    """Smallest power of two >= value (value >= 1)."""
    return 1 << (value - 1).bit_length()
