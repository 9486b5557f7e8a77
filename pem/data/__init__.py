"""Training data: synthetic COCO-panoptic scenes, dataset readers (Cityscapes, ADE20K, COCO-panoptic folders) and
the official training augmentation.

``pem.data.synthetic`` and ``pem.data.transforms`` are numpy + Pillow only; ``pem.data.datasets`` (torch Datasets
and ``collate``) is loaded on first use of its names, so ``import pem.data`` never pulls torch in.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_ATTRIBUTES = {
    "generate_synthetic_dataset": "pem.data.synthetic",
    "TrainTransform": "pem.data.transforms",
    "TestTransform": "pem.data.transforms",
    "DatasetError": "pem.data.datasets",
    "CocoPanopticDataset": "pem.data.datasets",
    "SemanticDataset": "pem.data.datasets",
    "CityscapesSemanticDataset": "pem.data.datasets",
    "CityscapesPanopticDataset": "pem.data.datasets",
    "ADE20KSemanticDataset": "pem.data.datasets",
    "ADE20KPanopticDataset": "pem.data.datasets",
    "build_dataset": "pem.data.datasets",
    "collate": "pem.data.datasets",
}

__all__ = list(_LAZY_ATTRIBUTES)


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pem.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
