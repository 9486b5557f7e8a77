"""The ONNX Runtime backend: CPU, CUDA or TensorRT execution providers.

On the CPU provider ``last_timings`` holds the session run as ``compute_ms`` (h2d/d2h 0). When the first provider
is CUDA or TensorRT, inputs are copied to the GPU and outputs bound there through ORT's IOBinding, so the three
phases are timed apart: ``h2d_ms`` (the input copies), ``compute_ms`` (the run) and ``d2h_ms`` (the output copies).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pem.runtime.backends.base import Backend, TensorInfo
from pem.runtime.metadata import ArtifactError

__all__ = ["PROVIDER_ALIASES", "OnnxRuntimeBackend", "import_onnxruntime", "resolve_providers"]

INSTALL_HINT = "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA/TensorRT), or the extra pem-edge[export]"

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_DEVICE_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}

ProviderSpec = str | tuple[str, dict[str, Any]]


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or ImportError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from exc
    return onnxruntime


def resolve_providers(providers: Sequence[ProviderSpec] | None, available: Sequence[str]) -> list[ProviderSpec]:
    """Provider names (aliases ``cpu``, ``cuda``, ``tensorrt``/``trt`` or full names, optionally with an options
    dict) -> ORT provider list. None picks CUDA when this onnxruntime has it, then CPU; TensorRT is used only when
    asked (its engine build takes minutes on first run)."""
    if providers is None:
        preferred = [p for p in ("CUDAExecutionProvider",) if p in available]
        return [*preferred, "CPUExecutionProvider"]
    resolved: list[ProviderSpec] = []
    for spec in providers:
        name, options = (spec, None) if isinstance(spec, str) else spec
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise ValueError(
                f"execution provider {name!r} is not available in this onnxruntime (available: "
                f"{', '.join(available)}); CUDA and TensorRT need the onnxruntime-gpu package"
            )
        resolved.append(full if options is None else (full, options))
    if not resolved:
        raise ValueError("no execution provider given")
    return resolved


class OnnxRuntimeBackend(Backend):
    """An ``onnxruntime.InferenceSession`` over an ONNX file (see the module docstring for the timings)."""

    name = "onnxruntime"

    def __init__(self, artifact: str | Path, providers: Sequence[ProviderSpec] | None = None,
                 session_options: Any = None, threads: int | None = None) -> None:
        super().__init__(str(artifact))
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        ort = import_onnxruntime()
        path = Path(artifact)
        if not path.is_file():
            raise FileNotFoundError(f"artifact not found: {path}")
        chosen = resolve_providers(providers, ort.get_available_providers())
        options = session_options or ort.SessionOptions()
        if session_options is None:
            options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:
            raise ArtifactError(f"cannot load {path} as an ONNX model: {str(exc).strip()}") from None
        self._ort = ort
        self._inputs = [_info(arg) for arg in self._session.get_inputs()]
        self._outputs = [_info(arg) for arg in self._session.get_outputs()]
        self._metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self._providers = self._session.get_providers()
        self._device_id = _device_id(chosen)
        self._on_device = self._providers[0] in _DEVICE_PROVIDERS

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        return list(self._providers)

    @property
    def description(self) -> str:
        return f"onnxruntime {self._ort.__version__} [{', '.join(self._providers)}]"

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [info.name for info in self._outputs]
        if not self._on_device:
            start = time.perf_counter()
            values = self._session.run(names, dict(feed))
            self.last_timings = {"h2d_ms": 0.0, "compute_ms": _ms_since(start), "d2h_ms": 0.0}
            return dict(zip(names, values))
        binding = self._session.io_binding()
        start = time.perf_counter()
        device_values = [
            (name, self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", self._device_id))
            for name, array in feed.items()
        ]
        h2d = _ms_since(start)
        for name, value in device_values:
            binding.bind_ortvalue_input(name, value)
        for name in names:
            binding.bind_output(name, "cuda", self._device_id)
        start = time.perf_counter()
        self._session.run_with_iobinding(binding)
        compute = _ms_since(start)
        start = time.perf_counter()
        values = binding.copy_outputs_to_cpu()
        self.last_timings = {"h2d_ms": h2d, "compute_ms": compute, "d2h_ms": _ms_since(start)}
        return dict(zip(names, values))

    def _close_impl(self) -> None:
        del self._session


def _info(arg: Any) -> TensorInfo:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ArtifactError(f"graph tensor {arg.name!r} has an unsupported type {arg.type}")
    shape = tuple(arg.shape) if arg.shape is not None else ()
    return TensorInfo(arg.name, np.dtype(dtype), shape)


def _device_id(providers: Sequence[ProviderSpec]) -> int:
    """The ``device_id`` option of the first provider (0 when absent)."""
    first = providers[0]
    return int(first[1].get("device_id", 0)) if isinstance(first, tuple) else 0


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
