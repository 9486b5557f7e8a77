"""The deploy side of PEM: pre-processing, backends, fusion, results and streams in numpy (never torch, never pem's
model). ``Predictor`` and ``Result`` load on first use, so ``import pem.runtime`` stays light."""
from __future__ import annotations

from pem.runtime.lazy import lazy_attributes

_LAZY_ATTRIBUTES = {
    "Predictor": "pem.runtime.predictor",
    "Result": "pem.runtime.result",
    "ArtifactError": "pem.runtime.metadata",
    "ArtifactMetadata": "pem.runtime.metadata",
    "PemError": "pem.runtime.errors",
}

__all__ = list(_LAZY_ATTRIBUTES)


__getattr__, __dir__ = lazy_attributes("pem.runtime", _LAZY_ATTRIBUTES, globals())
