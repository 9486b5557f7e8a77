"""Colouring and overlays for segmentation results (numpy only).

Colours are RGB uint8. Things get their class colour shifted per instance, so touching instances differ.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pem.runtime.fusion import Segment


def instance_color(base: Sequence[int], segment_id: int) -> np.ndarray:
    """The class colour ``base`` moved by a deterministic per-instance offset of at most ±40 per channel."""
    rng = np.random.default_rng(segment_id)
    return np.clip(np.asarray(base, dtype=np.int32) + rng.integers(-40, 41, size=3), 0, 255).astype(np.uint8)


def colorize_panoptic(panoptic: np.ndarray, segments: Sequence[Segment],
                      class_colors: Sequence[Sequence[int]]) -> np.ndarray:
    """[H, W] segment ids (0 = void) -> [H, W, 3] uint8; void stays black."""
    lut = np.zeros((int(panoptic.max(initial=0)) + 1, 3), dtype=np.uint8)
    for segment in segments:
        base = class_colors[segment.category_id]
        lut[segment.id] = instance_color(base, segment.id) if segment.isthing else np.asarray(base, np.uint8)
    return lut[panoptic]


def colorize_semantic(semantic: np.ndarray, class_colors: Sequence[Sequence[int]], ignore: int = 255) -> np.ndarray:
    """[H, W] class ids -> [H, W, 3] uint8; ``ignore`` (and any id without a colour) is black."""
    lut = np.zeros((max(len(class_colors), ignore + 1), 3), dtype=np.uint8)
    lut[: len(class_colors)] = np.asarray(class_colors, dtype=np.uint8)
    return lut[np.clip(semantic, 0, len(lut) - 1)]


def boundaries(ids: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels whose right or lower neighbour carries another id."""
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def overlay(image: np.ndarray, colors: np.ndarray, ids: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend ``colors`` over ``image`` ([H, W, 3] uint8 RGB) where ``ids`` != 0 and draw white outlines."""
    blended = image.astype(np.float32)
    labelled = ids != 0
    blended[labelled] = (1 - alpha) * blended[labelled] + alpha * colors[labelled].astype(np.float32)
    out = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    out[boundaries(ids)] = 255
    return out
