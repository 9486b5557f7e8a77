"""File formats of results: COCO-panoptic segments_info, Cityscapes-style label ids, semantic PNGs.

All files are written atomically (temporary file beside the target, then one rename) and folders are created.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pem.runtime.coco_panoptic import PathLike, write_atomic
from pem.runtime.fusion import Segment
from pem.runtime.metadata import ClassInfo

__all__ = [
    "CITYSCAPES_DIVISOR",
    "cityscapes_ids",
    "coco_categories",
    "segment_boxes",
    "segments_info",
    "write_image",
    "write_label_image",
    "write_semantic_png",
]

CITYSCAPES_DIVISOR = 1000
_UINT16_MAX = 65535


def segment_boxes(panoptic: np.ndarray, segments: Sequence[Segment]) -> dict[int, list[int]]:
    """Tight box ``[x, y, width, height]`` (COCO convention, pixels) of each segment id of ``panoptic`` [H, W]."""
    if not segments:
        return {}
    height, width = panoptic.shape
    count = int(panoptic.max(initial=0)) + 1
    rows = np.zeros((count, height), dtype=bool)
    cols = np.zeros((count, width), dtype=bool)
    rows[panoptic, np.arange(height)[:, None]] = True
    cols[panoptic, np.arange(width)[None, :]] = True
    boxes = {}
    for segment in segments:
        if segment.id >= count or not rows[segment.id].any():
            boxes[segment.id] = [0, 0, 0, 0]
            continue
        y0, y1 = rows[segment.id].argmax(), height - 1 - rows[segment.id][::-1].argmax()
        x0, x1 = cols[segment.id].argmax(), width - 1 - cols[segment.id][::-1].argmax()
        boxes[segment.id] = [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]
    return boxes


def segments_info(panoptic: np.ndarray, segments: Sequence[Segment], classes: Sequence[ClassInfo]) -> list[dict]:
    """COCO-panoptic ``segments_info``: id, dataset ``category_id``, area, bbox, iscrowd 0, plus isthing and score."""
    boxes = segment_boxes(panoptic, segments)
    return [
        {"id": s.id, "category_id": classes[s.category_id].dataset_id, "area": int(s.area), "bbox": boxes[s.id],
         "iscrowd": 0, "isthing": int(s.isthing), "score": round(float(s.score), 6)}
        for s in segments
    ]


def coco_categories(classes: Sequence[ClassInfo]) -> list[dict[str, Any]]:
    """COCO-panoptic ``categories`` with the dataset ids."""
    return [{"id": c.dataset_id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)} for c in classes]


def cityscapes_ids(semantic: np.ndarray, panoptic: np.ndarray | None, segments: Sequence[Segment],
                   classes: Sequence[ClassInfo], void_label: int) -> np.ndarray:
    """Cityscapes ``instanceIds``-style map int32 [H, W]: ``dataset_id * 1000 + k`` for the k-th instance (from 0,
    in segment id order) of a thing class, ``dataset_id`` for stuff, 0 on void. Without a panoptic map every pixel
    gets its class's dataset id."""
    if panoptic is None:
        lut = np.zeros(max(len(classes), void_label + 1), dtype=np.int32)
        lut[: len(classes)] = [c.dataset_id for c in classes]
        return lut[semantic]
    lut = np.zeros(int(panoptic.max(initial=0)) + 1, dtype=np.int32)
    instances: dict[int, int] = {}
    for segment in segments:
        dataset_id = classes[segment.category_id].dataset_id
        if segment.isthing:
            index = instances.get(segment.category_id, 0)
            if index >= CITYSCAPES_DIVISOR:
                raise ValueError(f"more than {CITYSCAPES_DIVISOR} instances of class {segment.category_id}")
            instances[segment.category_id] = index + 1
            lut[segment.id] = dataset_id * CITYSCAPES_DIVISOR + index
        else:
            lut[segment.id] = dataset_id
    return lut[panoptic]


def write_image(path: PathLike, image: np.ndarray, **options: Any) -> None:
    """Write an [H, W, 3] uint8 RGB (or [H, W] uint8) array; the format follows the suffix (.png, .jpg, ...)."""
    target = Path(path)
    pil_image = Image.fromarray(image)
    image_format = Image.registered_extensions().get(target.suffix.lower())
    if image_format is None:
        raise ValueError(f"unknown image format for {target}")
    write_atomic(target, lambda handle: pil_image.save(handle, format=image_format, **options), target.suffix)


def write_label_image(path: PathLike, labels: np.ndarray) -> Path:
    """Write non-negative integer labels [H, W]: a 16-bit PNG when they fit (max 65535), else a 32-bit TIFF (the
    suffix of ``path`` is replaced by ``.tif``); returns the path written."""
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise ValueError("label images hold non-negative ids")
    target = Path(path)
    if labels.max(initial=0) <= _UINT16_MAX:
        image = Image.fromarray(labels.astype(np.uint16))
        write_atomic(target, lambda handle: image.save(handle, format="PNG"), ".png")
        return target
    target = target.with_suffix(".tif")
    image = Image.fromarray(labels.astype(np.int32))
    write_atomic(target, lambda handle: image.save(handle, format="TIFF"), ".tif")
    return target


def write_semantic_png(path: PathLike, semantic: np.ndarray, classes: Sequence[ClassInfo], void_label: int,
                       palette: bool = True) -> None:
    """Class ids [H, W] -> PNG. ``palette``: an 8-bit palette image whose colours are the class colours (void
    black); else 8-bit grey levels (16-bit when there are more than 255 classes)."""
    semantic = np.asarray(semantic)
    if palette:
        if len(classes) > void_label:
            raise ValueError(f"a palette PNG holds at most {void_label} classes, this artifact has {len(classes)}")
        colours = np.zeros((256, 3), dtype=np.uint8)
        colours[: len(classes)] = [c.color for c in classes]
        image = Image.fromarray(semantic.astype(np.uint8))
        image.putpalette(colours.ravel().tolist())  # turns the grey-level image into a palette one
    else:
        dtype = np.uint8 if semantic.max(initial=0) <= 255 else np.uint16
        image = Image.fromarray(semantic.astype(dtype))
    write_atomic(path, lambda handle: image.save(handle, format="PNG"), ".png")
