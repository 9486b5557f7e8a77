"""Compile the shipped kernels ahead of time to PTX and cubin for NVIDIA targets, without a GPU (child process).

Run as ``python -m tests.kernels.aot_check`` with TRITON_INTERPRET unset. For each (kernel, dtype, sm) it compiles
with the wrappers' launch constants and checks the PTX entry and target and that ptxas reports no stack (no
register spills). It also checks that compiled kernels refuse CPU tensors with a clear message. Exit status 0 on
success; one line per compilation on stdout.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pem.kernels import deform_conv as deform
from pem.kernels import prototype_gather as gather
from pem.kernels.deform_conv_kernel import deform_conv2d_kernel
from pem.kernels.prototype_gather_kernel import prototype_gather_kernel

TRITON_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _signature(kernel: Any, pointers: dict[str, str], constexprs: dict[str, int | bool]) -> dict[str, str]:
    """Triton signature: ``*dtype`` for pointers, ``constexpr`` for constants, ``i32`` for the other scalars."""
    return {name: "constexpr" if name in constexprs else pointers.get(name, "i32") for name in kernel.arg_names}


def _stack_bytes(cubin: bytes) -> int:
    """Stack size ptxas reserved (> 0 means spilled registers), read with the cuobjdump bundled with triton."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(cubin)
    try:
        usage = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "--dump-resource-usage", handle.name],
                               capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(handle.name)
    return max(int(m) for m in re.findall(r"STACK:(\d+)", usage))


def compile_kernel(name: str, dtype: torch.dtype, arch: int, pem_variant: bool = True) -> tuple[str, int]:
    """Compile one kernel as its wrapper launches it for head_dim 32 / a 3x3 DCN -> (PTX, stack bytes).

    ``pem_variant``: with mask logits / with modulation mask and no bias (PEM); else no mask (and a DCN bias)."""
    t = TRITON_DTYPES[dtype]
    if name == "prototype_gather":
        kernel, options = prototype_gather_kernel, {"num_warps": gather.NUM_WARPS}
        constexprs = {"HAS_MASK": pem_variant, "BLOCK_Q": gather.BLOCK_Q, "BLOCK_N": gather.BLOCK_N, "BLOCK_D": 32}
        pointers = {"memory_ptr": f"*{t}", "query_ptr": f"*{t}", "mask_ptr": f"*{t}", "skip_mask_ptr": "*i8",
                    "out_ptr": f"*{t}"}
    else:
        kernel, options = deform_conv2d_kernel, {"num_warps": deform.NUM_WARPS, "num_stages": deform.NUM_STAGES}
        constexprs = {"KH": 3, "KW": 3, "HAS_MASK": pem_variant, "HAS_BIAS": not pem_variant, "BLOCK_P": deform.BLOCK_P,
                      "BLOCK_CO": deform.MAX_BLOCK_CO, "BLOCK_C": deform.BLOCK_C}
        pointers = {"input_ptr": f"*{t}", "offset_ptr": f"*{t}", "mask_ptr": f"*{t}", "weight_ptr": "*fp32",
                    "bias_ptr": "*fp32", "out_ptr": f"*{t}"}
    source = ASTSource(kernel, _signature(kernel, pointers, constexprs), constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    return compiled.asm["ptx"], _stack_bytes(compiled.asm["cubin"])


def main() -> int:
    failures = []
    for name, dtype, arch, pem_variant in [
        ("prototype_gather", torch.float16, 87, True), ("prototype_gather", torch.float32, 90, True),
        ("prototype_gather", torch.bfloat16, 80, True), ("prototype_gather", torch.float16, 90, False),
        ("deform_conv2d", torch.float16, 87, True), ("deform_conv2d", torch.float32, 87, True),
        ("deform_conv2d", torch.float32, 90, True), ("deform_conv2d", torch.bfloat16, 90, False),
    ]:
        ptx, stack = compile_kernel(name, dtype, arch, pem_variant)
        ok = f".entry {name}_kernel" in ptx and f".target sm_{arch}" in ptx and stack == 0
        print(f"{name} {dtype} sm_{arch} {'PEM' if pem_variant else 'unmasked'}: {len(ptx)} PTX chars, "
              f"stack {stack} bytes, {'ok' if ok else 'FAILED'}")
        if not ok:
            failures.append(name)
    try:
        gather.prototype_gather_triton(torch.randn(1, 4, 16), torch.randn(1, 2, 16), None, 1)
        failures.append("compiled kernel accepted CPU tensors")
    except ValueError as error:
        if "TRITON_INTERPRET" not in str(error):
            failures.append(f"unclear error for CPU tensors: {error}")
    print("failures:", failures or "none")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
