"""The plugin PTX path against the forms Triton's private compiler API took across releases (monkeypatched), the
PTX ISA table, the toolchain check before TensorRT starts and the per-plugin dtype check of ``aot_impl``.

Forms, read in ``triton/backends/nvidia/compiler.py``: 3.8.0 (installed here) ``get_ptxas(arch) -> NvidiaTool``
with ``.version``; other releases ``get_ptxas()`` without the argument (lru_cached), or ``get_ptxas(arch)``
returning ``(path, version)``; before ~3.3 compiled metadata has no ``global_scratch_size``.
"""
from __future__ import annotations

import functools
import importlib.util
from types import SimpleNamespace

import pytest

from pem.export.tensorrt.engine_builder import EngineBuildError, check_plugin_toolchain
from pem.export.tensorrt.plugins import kernel_dtype
from pem.export.tensorrt.plugins.ptx import (
    PTX_ISA,
    TritonCompatibilityError,
    check_triton,
    driver_ptx_version,
    prototype_gather_ptx,
    ptx_isa_version,
    ptxas_version,
)

compiler = pytest.importorskip("triton.backends.nvidia.compiler")

PTX = """.version 8.7
.target sm_87
.visible .entry prototype_gather_plugin_kernel(
{params}
)
{{
{reads}
}}
"""


def fake_ptx(count: int, extra: int) -> str:
    """An entry of ``count`` parameters reading all of them, plus ``extra`` unread trailing scratch pointers."""
    name = "prototype_gather_plugin_kernel"
    params = ",\n".join(f"\t.param .u64 {name}_param_{i}" for i in range(count + extra))
    reads = "\n".join(f"\tld.param.b64 %rd{i}, [{name}_param_{i}];" for i in range(count))
    return PTX.format(params=params, reads=reads)


def no_argument_tool() -> SimpleNamespace:
    return SimpleNamespace(path="/opt/ptxas", version="12.4")


@functools.lru_cache
def cached_no_argument_tool() -> SimpleNamespace:
    return SimpleNamespace(path="/opt/ptxas", version="12.5")


@pytest.mark.parametrize(("get_ptxas", "expected"), [
    (lambda arch: SimpleNamespace(path="/opt/ptxas", version="12.8" if arch < 100 else "12.9"), "12.8"),
    (no_argument_tool, "12.4"),
    (cached_no_argument_tool, "12.5"),
    (lambda arch: ("/opt/ptxas", "12.6"), "12.6"),
])
def test_ptxas_version_in_every_form(monkeypatch: pytest.MonkeyPatch, get_ptxas: object, expected: str) -> None:
    monkeypatch.setattr(compiler, "get_ptxas", get_ptxas)
    assert ptxas_version(87) == expected


@pytest.mark.parametrize(("get_ptxas", "message"), [
    (None, "has no triton.backends.nvidia.compiler.get_ptxas"),
    (lambda arch: SimpleNamespace(path="/opt/ptxas"), "without a MAJOR.MINOR version"),
    (lambda arch: ("/opt/ptxas", None), "without a MAJOR.MINOR version"),
    (lambda arch: (_ for _ in ()).throw(RuntimeError("Cannot find ptxas")), "get_ptxas failed: Cannot find ptxas"),
])
def test_unreadable_triton_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, get_ptxas: object,
                                              message: str) -> None:
    if get_ptxas is None:
        monkeypatch.delattr(compiler, "get_ptxas")
    else:
        monkeypatch.setattr(compiler, "get_ptxas", get_ptxas)
    with pytest.raises(TritonCompatibilityError, match=message) as caught:
        check_triton(87)
    assert 'pip install -e ".[trt-plugins]"' in str(caught.value) and "--no-plugins" in str(caught.value)
    with pytest.raises(EngineBuildError, match=message):
        check_plugin_toolchain("8.7")


def test_ptx_isa_table() -> None:
    assert driver_ptx_version(12060) == 85  # JetPack 6.2's driver JITs PTX ISA <= 8.5
    assert driver_ptx_version(12080) == 87 and driver_ptx_version(13000) == 90
    assert ptx_isa_version("12.0") == 80 and ptx_isa_version("13.9") == max(PTX_ISA.values())
    with pytest.raises(ValueError, match="older than 12.0"):
        ptx_isa_version("11.8")
    with pytest.raises(ValueError, match="cannot read CUDA version"):
        ptx_isa_version("twelve")
    # where Triton's own (private) table is current, ours agrees with it (Triton 3.8.0: 12.6 -> 85, 13.0 -> 90)
    ptx_get_version = getattr(compiler, "ptx_get_version", None)
    if ptx_get_version is not None and ptx_get_version("12.6") == 85:
        for major, minor in PTX_ISA:
            if (major, minor) >= (12, 6):
                assert ptx_isa_version(f"{major}.{minor}") == ptx_get_version(f"{major}.{minor}")


def test_check_triton_on_this_machine() -> None:
    import triton

    described = check_triton(87)
    assert described.startswith(f"Triton {triton.__version__}, ptxas ") and "(PTX ISA " in described
    assert check_plugin_toolchain("8.7") == described


def test_missing_torch_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ImportError, match=r"missing: torch\. Install them with pip install -e \"\.\[trt-plugins\]\""):
        check_plugin_toolchain("8.7")


@pytest.mark.parametrize(("scratch", "error"), [
    ({}, None),  # Triton < 3.3: no global_scratch_size in the metadata at all
    ({"global_scratch_size": None, "profile_scratch_size": 0}, None),
    ({"global_scratch_size": 256}, "needs Triton scratch memory"),
])
def test_compile_with_each_metadata_form(monkeypatch: pytest.MonkeyPatch, scratch: dict, error: str | None) -> None:
    """``_compile`` through a stand-in ``triton.compile`` (the real one needs ~a minute here): the PTX ISA asked is
    the bundled ptxas's capped by the driver's, and metadata without scratch fields compiles."""
    import triton

    calls = []

    def compile_(source: object, target: object, options: dict) -> SimpleNamespace:
        calls.append((target, options))
        metadata = SimpleNamespace(name="prototype_gather_plugin_kernel", num_warps=4, shared=1024, **scratch)
        return SimpleNamespace(metadata=metadata, asm={"ptx": fake_ptx(9, 2)})

    monkeypatch.setattr(triton, "compile", compile_)
    monkeypatch.setattr(compiler, "get_ptxas", lambda: ("/opt/ptxas", "12.8"))
    if error is not None:
        with pytest.raises(RuntimeError, match=error):
            prototype_gather_ptx("fp32", 87, 64, ptx_version=85)
        return
    kernel = prototype_gather_ptx("fp32", 87, 64, ptx_version=85)
    assert calls[0][1]["ptx_version"] == 85 and calls[0][0].arch == 87
    assert kernel.params == 9 and "_param_9" not in kernel.ptx and kernel.shared_mem == 1024
    prototype_gather_ptx("fp16", 90, 64)
    assert calls[1][1]["ptx_version"] == 87  # no driver cap: the bundled ptxas 12.8 -> ISA 8.7


def test_plugin_inputs_of_mixed_dtypes_are_refused() -> None:
    """What both ``aot_impl`` functions call with their TensorDescs (``definitions.py``); stand-in descriptors
    carry the dtype only, ``names`` maps it as ``definitions._TRITON_DTYPES`` maps ``trt.DataType``."""
    names = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    desc = {dtype: SimpleNamespace(dtype=dtype) for dtype in ("float32", "float16", "int8")}
    assert kernel_dtype("pem::DeformConv2d", {"input": desc["float16"], "offset": desc["float16"],
                                              "mask": desc["float16"]}, names) == "fp16"
    with pytest.raises(ValueError, match=r"pem::PrototypeGather needs memory, queries, mask_logits of one dtype, got "
                                         r"memory float32, queries float16, mask_logits float32"):
        kernel_dtype("pem::PrototypeGather", {"memory": desc["float32"], "queries": desc["float16"],
                                              "mask_logits": desc["float32"]}, names)
    with pytest.raises(ValueError, match="runs on float32, float16 or bfloat16 tensors, got input int8"):
        kernel_dtype("pem::DeformConv2d", {"input": desc["int8"], "offset": desc["float32"]}, names)
