"""Training data: synthetic COCO-panoptic scenes, dataset readers (Cityscapes, ADE20K, COCO-panoptic folders) and
the official training augmentation.

``pem.data.synthetic`` and ``pem.data.transforms`` are numpy + Pillow only; ``pem.data.datasets`` (torch Datasets
and ``collate``) is loaded on first use of its names, so ``import pem.data`` never pulls torch in.
"""

from __future__ import annotations

from pem.runtime.lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes("pem.data", _LAZY_ATTRIBUTES, globals())
