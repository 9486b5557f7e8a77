"""PEM edge toolchain: the PyTorch model, training and conversion (``pem``) and the torch-free deploy side.

``import pem`` stays torch-free: the attributes that need torch are loaded on first use, so
``import pem.runtime`` and ``import pem.metrics`` never pull torch in.
"""
from __future__ import annotations

from pem.runtime.lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY_ATTRIBUTES = {
    "build_model": "pem.builder",
    "PEM": "pem.modeling.pem_model",
    "get_preset": "pem.config",
    "list_presets": "pem.config",
    "PEMConfig": "pem.config",
    "PemError": "pem.runtime.errors",
}

__all__ = ["__version__", *_LAZY_ATTRIBUTES]


__getattr__, __dir__ = lazy_attributes("pem", _LAZY_ATTRIBUTES, globals())
