"""Triton's interpreter for the kernel tests, and the fixtures that say where the kernels can run.

``TRITON_INTERPRET=1`` only works if it is in the environment when triton is first imported: triton's own
``@triton.jit`` library functions (``tl.max``, ``tl.zeros``, ...) are decorated at that moment, and an interpreted
kernel cannot call compiled-mode ones. So this file sets the variable, at collection time, only when triton is not
imported yet and there is no CUDA GPU (the compiled kernels could not run anyway, so nothing else changes). Then
the interpreter tests run in this process. Otherwise (triton imported earlier by another test module, or a GPU
machine, whose ``gpu`` tests need compiled kernels) they are skipped here and ``test_child_processes.py`` runs
them in a child pytest with the variable set before anything starts.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch


def _engage_interpreter() -> bool:
    """Set TRITON_INTERPRET=1 where that is safe; True when interpreted kernels run in this process."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    if "triton" in sys.modules or torch.cuda.is_available():
        return False
    os.environ["TRITON_INTERPRET"] = "1"
    return True


INTERPRETER_IN_PROCESS = _engage_interpreter()


@pytest.fixture(scope="session")
def interpreter_in_process() -> bool:
    """Whether the Triton kernels run under the interpreter in this process."""
    return INTERPRETER_IN_PROCESS


@pytest.fixture
def interpreter() -> None:
    """Skip unless triton imports and its kernels run under the interpreter here (CPU tensors)."""
    pytest.importorskip("triton")
    if not INTERPRETER_IN_PROCESS:
        pytest.skip("interpreter tests run in a child process (test_child_processes.py)")


@pytest.fixture
def compiled_triton() -> None:
    """Skip unless triton imports in compiled mode (``gpu`` tests: CUDA is checked by the suite's conftest)."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: kernels are interpreted, GPU timings would be meaningless")
