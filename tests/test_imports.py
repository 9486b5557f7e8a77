"""The deploy side and the metrics never import torch; ``import pem`` is lazy."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["pem", "pem.runtime", "pem.metrics", "pem.config", "pem.runtime.fusion",
                                    "pem.runtime.preprocess"])
def test_no_torch_import(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_build_model_attribute() -> None:
    code = "import sys, pem; f = pem.build_model; assert 'torch' in sys.modules and callable(f)"
    subprocess.run([sys.executable, "-c", code], check=True)
