"""The one torch-free import check: the deploy side, the metrics and ``import pem`` never import torch (``pem``'s
torch attributes load lazily), and the runtime's entry points load no heavy backend library on import."""
from __future__ import annotations

import subprocess
import sys
import textwrap

TORCH_FREE = ["pem", "pem.config", "pem.runtime", "pem.runtime.errors", "pem.runtime.fusion", "pem.runtime.preprocess",
              "pem.runtime.images", "pem.runtime.coco_panoptic", "pem.runtime.cli", "pem.runtime.predictor",
              "pem.runtime.result", "pem.metrics", "pem.metrics.eval_panoptic_cli", "pem.metrics.predictor_accuracy"]
LIGHT = ["pem.runtime.cli", "pem.runtime.predictor", "pem.runtime.result"]  # no onnxruntime, OpenCV or onnx either


def test_torch_free_imports() -> None:
    code = textwrap.dedent(f"""
        import importlib, sys
        for module in {TORCH_FREE!r}:
            importlib.import_module(module)
            torch = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
            assert not torch, (module, torch)
            heavy = [m for m in ("onnxruntime", "cv2", "onnx") if m in sys.modules]
            assert module not in {LIGHT!r} or not heavy, (module, heavy)
        import pem
        assert pem.PemError.__module__ == "pem.runtime.errors" and "torch" not in sys.modules
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_lazy_build_model_attribute() -> None:
    code = "import sys, pem; f = pem.build_model; assert 'torch' in sys.modules and callable(f)"
    subprocess.run([sys.executable, "-c", code], check=True)
