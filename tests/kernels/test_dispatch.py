"""Dispatchers: the references run on CPU, with PEM_DISABLE_TRITON=1, under autograd and without triton."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pem.kernels.deform_conv as deform_module
import pem.kernels.prototype_gather as gather_module
from pem.kernels import deform_conv2d_fast, prototype_gather_fast, use_triton
from pem.kernels._runtime import triton_disabled
from pem.ops import deform_conv2d
from pem.ops.prototype_gather import prototype_gather

REPO = Path(__file__).resolve().parents[2]


def _refuse(*args: object, **kwargs: object) -> torch.Tensor:
    raise AssertionError("the Triton kernel must not be launched here")


def test_cpu_tensors_run_the_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gather_module, "prototype_gather_triton", _refuse)
    monkeypatch.setattr(deform_module, "deform_conv2d_triton", _refuse)
    memory, queries, logits = torch.randn(2, 12, 32), torch.randn(2, 5, 32), torch.randn(2, 5, 12)
    assert torch.equal(prototype_gather_fast(memory, queries, logits, 2), prototype_gather(memory, queries, logits, 2))
    x, offset, weight, mask = torch.randn(1, 3, 5, 4), torch.randn(1, 18, 5, 4), torch.randn(2, 3, 3, 3), \
        torch.rand(1, 9, 5, 4)
    assert torch.equal(deform_conv2d_fast(x, offset, weight, padding=1, mask=mask),
                       deform_conv2d(x, offset, weight, padding=1, mask=mask))
    assert not use_triton(x, offset)


def test_disable_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEM_DISABLE_TRITON", "1")
    assert triton_disabled()
    monkeypatch.setenv("PEM_DISABLE_TRITON", "0")
    assert not triton_disabled()


def test_imports_and_falls_back_without_triton() -> None:
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, pem.kernels as k\n"
        "assert not k.triton_available()\n"
        "m, q = torch.randn(1, 6, 16), torch.randn(1, 3, 16)\n"
        "assert k.prototype_gather_fast(m, q, None, 2).shape == (1, 3, 16)\n"
        "x = torch.randn(1, 2, 4, 4)\n"
        "assert k.deform_conv2d_fast(x, torch.zeros(1, 18, 4, 4), torch.randn(3, 2, 3, 3), padding=1).shape[1] == 3\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.gpu
def test_gpu_dispatch(compiled_triton: None, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = torch.randn(1, 40, 32, device="cuda")
    queries = torch.randn(1, 6, 32, device="cuda")
    calls = []
    original = gather_module.prototype_gather_triton

    def spy(*args: object) -> torch.Tensor:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(gather_module, "prototype_gather_triton", spy)
    prototype_gather_fast(memory, queries, None, 2)
    assert calls == [1]
    prototype_gather_fast(memory.requires_grad_(), queries, None, 2)
    with torch.no_grad():
        prototype_gather_fast(memory, queries, None, 2)
    monkeypatch.setenv("PEM_DISABLE_TRITON", "1")
    prototype_gather_fast(memory.detach(), queries, None, 2)
    assert calls == [1, 1]
