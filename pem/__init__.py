"""PEM edge toolchain: the PyTorch model, training and conversion (``pem``) and the torch-free deploy side.

``import pem`` stays torch-free: the attributes that need torch are loaded on first use, so
``import pem.runtime`` and ``import pem.metrics`` never pull torch in.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY_ATTRIBUTES = {
    "build_model": "pem.builder",
    "PEM": "pem.modeling.pem_model",
    "get_preset": "pem.config",
    "list_presets": "pem.config",
    "PEMConfig": "pem.config",
}

__all__ = ["__version__", *_LAZY_ATTRIBUTES]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
