"""The deploy side of PEM: pre-processing, backends, fusion, results and streams in numpy (never torch, never pem's
model). ``Predictor`` and ``Result`` load on first use, so ``import pem.runtime`` stays light."""
from __future__ import annotations

import importlib
from typing import Any

_LAZY_ATTRIBUTES = {
    "Predictor": "pem.runtime.predictor",
    "Result": "pem.runtime.result",
    "ArtifactError": "pem.runtime.metadata",
    "ArtifactMetadata": "pem.runtime.metadata",
}

__all__ = list(_LAZY_ATTRIBUTES)


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pem.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
