"""Lazy imports of the export extras (onnx, onnxruntime, onnxslim, onnxscript) with an install hint."""
from __future__ import annotations

import importlib
from types import ModuleType

from pem.runtime.errors import PemError


class MissingDependencyError(PemError, ImportError):
    """An optional package the export needs is not installed; the message says how to install it."""


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the ``export`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise MissingDependencyError(
            f"{package} is needed to export PEM to ONNX: pip install 'pem-edge[export]' ({error})"
        ) from None
