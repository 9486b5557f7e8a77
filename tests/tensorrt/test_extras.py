"""The ``trt`` and ``trt-plugins`` extras admit what the TensorRT code needs (pyproject.toml, read as pip reads it)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[2]


def extras() -> dict[str, dict[str, Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {name: {Requirement(r).name: Requirement(r) for r in requirements}
            for name, requirements in project["optional-dependencies"].items()}


def test_cuda_python_has_cuda_bindings() -> None:
    """cuda.bindings exists from cuda-python 12.6.1 on (its 12.6.1 release notes: cuda.cudart -> cuda.bindings)."""
    spec = extras()["trt"]["cuda-python"].specifier
    assert "12.6.0" not in spec and "12.6.1" in spec and "13.5.0" in spec
    docs = (REPO / "docs" / "tensorrt.md").read_text()
    # the install commands pick the CUDA major together with the extra, from a checkout
    assert re.search(r'pip install -e "\.\[trt\]" "cuda-python>=12\.6\.1,<13"', docs)
    assert re.search(r'pip install -e "\.\[trt\]" "cuda-python>=13"', docs)
    assert 'pip install "pem-edge[trt]"' not in docs


def test_plugin_toolchain_is_a_separate_pinned_extra() -> None:
    triton = pytest.importorskip("triton")
    found = extras()
    assert "triton" not in found["trt"] and "torch" not in found["trt"]  # JetPack 6 (TensorRT 10.3) uses no plugins
    triton_spec = found["trt-plugins"]["triton"].specifier
    assert triton.__version__ in triton_spec and "3.2.0" not in triton_spec and "3.9.0" not in triton_spec
    assert "torch" in found["trt-plugins"]
    assert "polygraphy" in found["trt"] and "polygraphy" in found["dev"]
