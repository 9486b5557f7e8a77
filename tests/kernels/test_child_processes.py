"""Checks that need a fresh interpreter: the interpreter tests when they could not run here, and AOT compilation."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INTERPRETER_TEST_FILES = ["tests/kernels/test_prototype_gather.py", "tests/kernels/test_deform_conv.py",
                          "tests/kernels/test_plugin_adapters.py", "tests/kernels/test_cpu_rehearsal.py"]


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_interpreter_tests_in_child_process(interpreter_in_process: bool) -> None:
    """Runs the interpreter tests with TRITON_INTERPRET=1 set before triton is imported and CUDA hidden."""
    pytest.importorskip("triton")
    if interpreter_in_process:
        pytest.skip("the interpreter tests ran in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not gpu",
                   *INTERPRETER_TEST_FILES], env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]


def test_kernels_compile_ahead_of_time_without_gpu(tmp_path: Path) -> None:
    """PTX + cubin for sm_80/87/90 in compiled mode (fresh cache), no register spills; see ``aot_check``."""
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    result = _run([sys.executable, "-m", "tests.kernels.aot_check"], env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
