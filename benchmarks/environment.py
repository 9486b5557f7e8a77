"""What a benchmark ran on: CPU, GPU and clocks where readable, library versions."""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _distribution(name: str) -> str | None:
    """An installed distribution's version without importing it (None when absent)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_settings() -> dict[str, Any]:
    """The numerics switches a GPU timing depends on: TF32 for matmul and cuDNN, cuDNN benchmark/determinism."""
    import torch

    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_version": torch.backends.cudnn.version(),
    }


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:  # an optional library that is absent or broken is simply not reported
        return None


def gpu_info() -> list[dict[str, str]]:
    """Name, driver, clocks and temperature of each NVIDIA GPU that ``nvidia-smi`` reports (empty without one)."""
    if shutil.which("nvidia-smi") is None:
        return []
    fields = ["name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "temperature.gpu",
              "power.draw", "compute_cap"]
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in result.stdout.strip().splitlines()]


def environment() -> dict[str, Any]:
    """Everything worth recording beside a measurement."""
    torch_info: dict[str, Any] = {"torch": _version("torch")}
    if torch_info["torch"] is not None:
        import torch

        torch_info["cuda"] = torch.version.cuda
        torch_info["threads"] = torch.get_num_threads()
        torch_info["torch_settings"] = torch_settings()
        if torch.cuda.is_available():
            torch_info["device"] = torch.cuda.get_device_name()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
        "triton": _distribution("triton"),
        "torchvision": _distribution("torchvision"),
        "PEM_DISABLE_TRITON": os.environ.get("PEM_DISABLE_TRITON"),
        **torch_info,
        "gpus": gpu_info(),
    }
