"""Graph outputs of one image -> semantic map, panoptic map and segments at the original size, per head.

Shapes: Q queries, K classes, H0 x W0 the original image, h x w the resized image fed to the graph, h' x w' its
padded size, F the fusion resolution of the artifact (``pem.runtime.resolution``). Batch index 0 is read from every
output. Below fusion size ``original`` the id maps at F are resized to H0 x W0 by nearest neighbour (integer
gathers) and segment areas are counted on the resized map.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pem.runtime.contract import FUSION_ORIGINAL
from pem.runtime.fusion import Segment, keep_queries, panoptic_inference, panoptic_segments, semantic_inference
from pem.runtime.geometry import padded_size, resize_bilinear, resize_mask_logits
from pem.runtime.metadata import ArtifactMetadata
from pem.runtime.resolution import fusion_scale, fusion_shape, fusion_stride, resize_nearest, resize_panoptic

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
    ``panoptic`` int32 [H0, W0] segment ids (0 void) or None, ``segments`` in id order (areas of the [H0, W0] map);
    ``fusion_semantic`` / ``fusion_panoptic`` the same maps at F (the same arrays in fusion size ``original``) and
    ``fusion_scale`` (sy, sx) the fusion pixels per original pixel."""

    semantic: np.ndarray
    panoptic: np.ndarray | None
    segments: list[Segment]
    fusion_semantic: np.ndarray
    fusion_panoptic: np.ndarray | None
    fusion_scale: tuple[float, float] = (1.0, 1.0)


def postprocess(outputs: Mapping[str, np.ndarray], meta: ArtifactMetadata, geometry: Geometry) -> Postprocessed:
    """Dispatch on ``meta.head``: ``raw``, ``semantic`` or ``panoptic`` (see ``pem.runtime.contract``)."""
    if meta.head == "raw":
        semantic, panoptic, segments = _raw(outputs, meta, geometry)
    elif meta.head == "semantic":
        semantic, panoptic, segments = np.asarray(outputs["semantic"][0], dtype=np.int64), None, []
    else:
        semantic, panoptic, segments = _panoptic(outputs, meta)
    return _to_original(semantic, panoptic, segments, meta, geometry)


def _to_original(semantic: np.ndarray, panoptic: np.ndarray | None, segments: list[Segment],
                 meta: ArtifactMetadata, geometry: Geometry) -> Postprocessed:
    """Maps at F -> the result at H0 x W0 (nearest neighbour below fusion size ``original``)."""
    scale = fusion_scale(meta.fusion_size, geometry.resized, geometry.original)
    full_panoptic = panoptic
    if panoptic is not None:
        full_panoptic, segments = resize_panoptic(panoptic, segments, geometry.original, scale)
    full_semantic = resize_nearest(semantic, geometry.original, scale)
    return Postprocessed(full_semantic, full_panoptic, segments, semantic, panoptic, scale)


def _float32_at_least(x: np.ndarray) -> np.ndarray:
    """float32/float64 kept; float16 (FP16 graphs) and other dtypes as float32, as the torch reference computes."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _fusion_maps(masks: np.ndarray, meta: ArtifactMetadata, geometry: Geometry) -> np.ndarray:
    """Mask logits [Q, h'/4, w'/4] -> [Q, F]: the numpy twin of ``pem.inference.to_fusion_size``."""
    padded = padded_size(*geometry.resized, meta.size_divisibility)
    stride = fusion_stride(meta.fusion_size)
    if stride == 0:
        return resize_mask_logits(masks, padded, geometry.resized, geometry.original)
    height, width = fusion_shape(meta.fusion_size, geometry.resized, geometry.original)
    if stride == 1:
        masks = resize_bilinear(masks, padded)
    return np.ascontiguousarray(masks[:, :height, :width])


def _raw(outputs: Mapping[str, np.ndarray], meta: ArtifactMetadata,
         geometry: Geometry) -> tuple[np.ndarray, np.ndarray | None, list[Segment]]:
    """pred_logits [1, Q, K+1] and pred_masks [1, Q, h'/4, w'/4] -> the chain of the fusion size and the numpy
    fusion, maps at F.

    In fusion size ``original``, panoptic presets resize the mask logits to the original size and fuse there;
    semantic presets compute the semantic scores at the padded size and resize those (the official order for
    each)."""
    logits = _float32_at_least(outputs["pred_logits"][0])
    masks = _float32_at_least(outputs["pred_masks"][0])
    if not meta.panoptic_on and meta.fusion_size == FUSION_ORIGINAL:
        padded = padded_size(*geometry.resized, meta.size_divisibility)
        scores = semantic_inference(logits, resize_bilinear(masks, padded))
        scores = resize_mask_logits(scores.astype(masks.dtype, copy=False), padded, geometry.resized,
                                    geometry.original)
        return scores.argmax(axis=0), None, []
    fused_masks = _fusion_maps(masks, meta, geometry)
    semantic = semantic_inference(logits, fused_masks).argmax(axis=0)
    if not meta.panoptic_on:
        return semantic, None, []
    fused = panoptic_inference(logits, fused_masks, meta.thing_ids, meta.object_mask_threshold,
                               meta.overlap_threshold)
    return semantic, fused.panoptic, fused.segments


def _panoptic(outputs: Mapping[str, np.ndarray],
              meta: ArtifactMetadata) -> tuple[np.ndarray, np.ndarray, list[Segment]]:
    """The graph's per-pixel stage -> the per-query rules on the host and one lookup-table relabel; the semantic
    map is each segment's class, ``VOID_LABEL`` on void (maps at F)."""
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
    return classes[panoptic], panoptic, segments
