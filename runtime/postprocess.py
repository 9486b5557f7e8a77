"""Graph outputs of one image -> semantic map, panoptic map and segments at the original size, per head.

Shapes: Q queries, K classes, H0 x W0 the original image, h x w the resized image fed to the graph, h' x w' its
padded size. Batch index 0 is read from every output.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pem.runtime.fusion import Segment, keep_queries, panoptic_inference, panoptic_segments, semantic_inference
from pem.runtime.geometry import padded_size, resize_bilinear, resize_mask_logits
from pem.runtime.metadata import ArtifactMetadata

__all__ = ["VOID_LABEL", "Geometry", "Postprocessed", "postprocess"]

VOID_LABEL = 255


@dataclass(frozen=True)
class Geometry:
    """Sizes of one image through the chain: ``original`` (H0, W0), ``resized`` (h, w) as fed to the graph."""

    original: tuple[int, int]
    resized: tuple[int, int]


@dataclass(frozen=True, eq=False)
class Postprocessed:
    """``semantic`` int64 [H0, W0] class ids (``VOID_LABEL`` where a ``panoptic`` head leaves a pixel void),
    ``panoptic`` int32 [H0, W0] segment ids (0 void) or None, ``segments`` in id order."""

    semantic: np.ndarray
    panoptic: np.ndarray | None
    segments: list[Segment]


def postprocess(outputs: Mapping[str, np.ndarray], meta: ArtifactMetadata, geometry: Geometry) -> Postprocessed:
    """Dispatch on ``meta.head``: ``raw``, ``semantic`` or ``panoptic`` (see ``pem.runtime.contract``)."""
    if meta.head == "raw":
        return _raw(outputs, meta, geometry)
    if meta.head == "semantic":
        return Postprocessed(np.asarray(outputs["semantic"][0], dtype=np.int64), None, [])
    return _panoptic(outputs, meta)


def _float32_at_least(x: np.ndarray) -> np.ndarray:
    """float32/float64 kept; float16 (FP16 graphs) and other dtypes as float32, as the torch reference computes."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _raw(outputs: Mapping[str, np.ndarray], meta: ArtifactMetadata, geometry: Geometry) -> Postprocessed:
    """pred_logits [1, Q, K+1] and pred_masks [1, Q, h'/4, w'/4] -> the official chain and the numpy fusion.

    Panoptic presets resize the mask logits to the original size and fuse there; semantic presets compute the
    semantic scores at the padded size and resize those (the official order for each)."""
    logits = _float32_at_least(outputs["pred_logits"][0])
    masks = _float32_at_least(outputs["pred_masks"][0])
    padded = padded_size(*geometry.resized, meta.size_divisibility)
    if not meta.panoptic_on:
        scores = semantic_inference(logits, resize_bilinear(masks, padded))
        scores = resize_mask_logits(scores.astype(masks.dtype, copy=False), padded, geometry.resized,
                                    geometry.original)
        return Postprocessed(scores.argmax(axis=0), None, [])
    full = resize_mask_logits(masks, padded, geometry.resized, geometry.original)
    semantic = semantic_inference(logits, full).argmax(axis=0)
    fused = panoptic_inference(logits, full, meta.thing_ids, meta.object_mask_threshold, meta.overlap_threshold)
    return Postprocessed(semantic, fused.panoptic, fused.segments)


def _panoptic(outputs: Mapping[str, np.ndarray], meta: ArtifactMetadata) -> Postprocessed:
    """The graph's per-pixel stage -> the per-query rules on the host and one lookup-table relabel; the semantic
    map is each segment's class, ``VOID_LABEL`` on void."""
    scores = _float32_at_least(outputs["query_scores"][0])
    labels = np.asarray(outputs["query_labels"][0]).astype(np.int64)
    keep = keep_queries(scores, labels, meta.num_classes, meta.object_mask_threshold)
    lut, segments = panoptic_segments(
        scores, labels, keep, outputs["winner_area"][0], outputs["mask_area"][0], outputs["visible_area"][0],
        meta.thing_ids, meta.overlap_threshold,
    )
    panoptic = lut[np.asarray(outputs["winner"][0])]
    classes = np.full(len(segments) + 1, VOID_LABEL, dtype=np.int64)
    for segment in segments:
        classes[segment.id] = segment.category_id
    return Postprocessed(classes[panoptic], panoptic, segments)
