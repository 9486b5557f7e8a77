"""Backends behind one contract (:class:`Backend`), chosen by name or by the artifact's file suffix.

A backend is registered with :func:`register_backend` as a name, the suffixes it reads and a ``"module:attr"``
loader that is imported only when the backend is opened (so onnxruntime, TensorRT or torch load lazily). The
``torch`` backend lives in ``pem`` (``pem.torch_backend``, for our ``.pth`` checkpoints) and is only imported when
opened, so the runtime itself never imports torch; ``tensorrt`` (``.engine``/``.plan``, with the JSON manifest
beside the engine) is ``pem.runtime.backends.tensorrt``.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pem.runtime.backends.base import Backend, TensorInfo
from pem.runtime.metadata import ArtifactError

__all__ = ["Backend", "BackendSpec", "TensorInfo", "backend_names", "open_backend", "register_backend"]


@dataclass(frozen=True)
class BackendSpec:
    """``loader`` is ``"module:attr"``, a callable ``(artifact, providers=...) -> Backend``."""

    name: str
    suffixes: tuple[str, ...]
    loader: str


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(name: str, suffixes: Sequence[str], loader: str) -> None:
    """Register (or replace) the backend ``name`` reading files ending in ``suffixes`` (lower case, with dot)."""
    _REGISTRY[name] = BackendSpec(name, tuple(s.lower() for s in suffixes), loader)


def backend_names() -> list[str]:
    """The registered backend names."""
    return sorted(_REGISTRY)


def _known_formats() -> str:
    return "; ".join(f"{', '.join(spec.suffixes)} -> {spec.name}" for spec in _REGISTRY.values() if spec.suffixes)


def open_backend(artifact: str | Path, backend: str = "auto", providers: Sequence[Any] | None = None,
                 threads: int | None = None) -> Backend:
    """Open ``artifact`` with the backend called ``backend``, or the one registered for its suffix (``auto``).
    ``threads``: intra-op CPU threads, for the ``onnxruntime`` backend only (None: its default).

    Raises FileNotFoundError for a missing file, ArtifactError for an unknown format or backend, ValueError for
    ``threads`` on another backend."""
    path = Path(artifact)
    if not path.exists():
        raise FileNotFoundError(f"artifact not found: {path}")
    if backend == "auto":
        suffix = path.suffix.lower()
        spec = next((s for s in _REGISTRY.values() if suffix in s.suffixes), None)
        if spec is None:
            raise ArtifactError(
                f"unknown artifact format {suffix or '(no suffix)'!r} for {path}; known formats: {_known_formats()}"
            )
    else:
        spec = _REGISTRY.get(backend)
        if spec is None:
            raise ArtifactError(f"unknown backend {backend!r}; registered backends: {', '.join(backend_names())}")
    if threads is not None and spec.name != "onnxruntime":
        raise ValueError(f"a thread count applies to the onnxruntime backend only, not to {spec.name}")
    module_name, _, attr = spec.loader.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    if threads is not None:
        return factory(path, providers=providers, threads=threads)
    return factory(path, providers=providers)


register_backend("onnxruntime", (".onnx",), "pem.runtime.backends.onnxruntime:OnnxRuntimeBackend")
register_backend("torch", (".pth", ".pt"), "pem.torch_backend:TorchBackend")
register_backend("tensorrt", (".engine", ".plan"), "pem.runtime.backends.tensorrt:TensorRTBackend")
