"""Mask2Former/PEM post-processing for one image, in numpy.

Shapes: Q queries, K classes (class logits carry K + 1 columns, the last one being "no object"), H x W pixels.
Logits are float arrays and results keep their float dtype (other dtypes are read as float64).
Class ids are contiguous indices in [0, K).

Sigmoid is computed as ``1 / (1 + exp(-x))``, the formulation torch uses, and the "mask pixel" test is
``sigmoid(logit) >= 0.5`` on that value, as in the official code. It is not quite ``logit >= 0``: for logits just
below 0, ``1 + exp(-x)`` rounds to 2 and the sigmoid is exactly 0.5 (float32: about [-1.1e-7, 0) with numpy's exp,
[-1.8e-7, 0) with torch's; float64: about [-3.3e-16, 0)). Outside that sliver of logits the two tests agree.

Panoptic inference is split in a per-pixel stage (dense, [Q, H, W] -> [H, W] and [Q] counts, fit for an ONNX
graph or a GPU) and a per-query stage (the official rules on the [Q] counts, a few loops on the host).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

__all__ = [
    "InstanceOutput",
    "PanopticOutput",
    "PanopticPixelStage",
    "Segment",
    "instance_inference",
    "keep_queries",
    "panoptic_inference",
    "panoptic_pixel_stage",
    "panoptic_segments",
    "query_scores",
    "semantic_inference",
]


@dataclass(frozen=True)
class Segment:
    """One panoptic segment: ``id`` >= 1 (0 is void), ``category_id`` in [0, K), ``area`` in pixels of the final map
    (summed over all queries painted into it, for stuff), ``score`` of the query that created it (the first one)."""

    id: int
    category_id: int
    isthing: bool
    area: int
    score: float


@dataclass(frozen=True, eq=False)
class PanopticPixelStage:
    """Per-pixel stage. ``winner`` int32 [H, W]: index of the winning kept query, or -1 where it is not a mask pixel
    of that query (or nothing is kept). int64 [Q] counts, zero for queries not kept: ``winner_area`` pixels where the
    query wins, ``mask_area`` pixels with sigmoid >= 0.5, ``visible_area`` pixels where both hold."""

    winner: np.ndarray
    winner_area: np.ndarray
    mask_area: np.ndarray
    visible_area: np.ndarray


@dataclass(frozen=True, eq=False)
class PanopticOutput:
    """``panoptic`` int32 [H, W] of segment ids (0 = void) and the segments in id order."""

    panoptic: np.ndarray
    segments: list[Segment]


@dataclass(frozen=True, eq=False)
class InstanceOutput:
    """N instances, best class score first: ``masks`` bool [N, H, W], ``scores`` float [N] in [0, 1],
    ``labels`` int64 [N] in [0, K), ``query_indices`` int64 [N] in [0, Q)."""

    masks: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    query_indices: np.ndarray


def _as_float(x: np.ndarray) -> np.ndarray:
    """x as an array, float dtypes kept, anything else as float64."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in the dtype of x; where exp overflows the result is 0, as in torch, with no warning."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row maximum so that no exp overflows."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def semantic_inference(class_logits: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
    """Class logits [Q, K+1] and mask logits [Q, H, W] -> per-class scores [K, H, W],
    ``sum_q softmax(class)[q, c] * sigmoid(mask)[q]`` with the void column dropped."""
    probs = _softmax(_as_float(class_logits))[:, :-1]
    return np.tensordot(probs, _sigmoid(_as_float(mask_logits)), axes=(0, 0))


def query_scores(class_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class logits [Q, K+1] -> (score [Q] float in [0, 1], label int64 [Q] in [0, K], K meaning void):
    the maximum softmax probability and its class, the first one on ties."""
    probs = _softmax(_as_float(class_logits))
    labels = probs.argmax(axis=-1)
    return np.take_along_axis(probs, labels[:, None], axis=-1)[:, 0], labels.astype(np.int64)


def keep_queries(
    scores: np.ndarray, labels: np.ndarray, num_classes: int, object_mask_threshold: float
) -> np.ndarray:
    """The official panoptic keep rule: scores float [Q], labels int [Q] in [0, K] (K = no object) -> keep bool [Q].

    A query is kept when its label is not "no object" and ``score > object_mask_threshold``, the threshold rounded to
    the score dtype first (torch compares a float32 tensor with a Python float in float32): a score equal to the
    rounded threshold is dropped. The in-graph head (``pem.export.wrapper.ExportWrapper.keep``) mirrors this rule.
    """
    scores = np.asarray(scores)
    return (np.asarray(labels) != num_classes) & (scores > scores.dtype.type(object_mask_threshold))


def panoptic_pixel_stage(scores: np.ndarray, keep: np.ndarray, mask_logits: np.ndarray) -> PanopticPixelStage:
    """Scores [Q] float, keep [Q] bool, mask logits [Q, H, W] -> winner map and counts.

    A pixel's winner is the kept query with the highest ``score * sigmoid(mask)``, the lowest index on ties;
    a mask pixel is one with ``sigmoid(mask) >= 0.5``."""
    keep = np.asarray(keep, dtype=bool)
    masks = _sigmoid(_as_float(mask_logits))
    num_queries = masks.shape[0]
    if not keep.any():
        return PanopticPixelStage(
            winner=np.full(masks.shape[1:], -1, dtype=np.int32),
            winner_area=np.zeros(num_queries, dtype=np.int64),
            mask_area=np.zeros(num_queries, dtype=np.int64),
            visible_area=np.zeros(num_queries, dtype=np.int64),
        )
    on_mask = masks >= 0.5
    prob = np.where(keep[:, None, None], np.asarray(scores)[:, None, None] * masks, -np.inf)
    argmax = prob.argmax(axis=0)
    visible = np.take_along_axis(on_mask, argmax[None], axis=0)[0]
    return PanopticPixelStage(
        winner=np.where(visible, argmax, -1).astype(np.int32),
        winner_area=np.bincount(argmax.ravel(), minlength=num_queries).astype(np.int64),
        mask_area=np.where(keep, on_mask.sum(axis=(1, 2)), 0).astype(np.int64),
        visible_area=np.bincount(argmax[visible], minlength=num_queries).astype(np.int64),
    )


def panoptic_segments(
    scores: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    winner_area: np.ndarray,
    mask_area: np.ndarray,
    visible_area: np.ndarray,
    thing_ids: Collection[int],
    overlap_threshold: float = 0.8,
) -> tuple[np.ndarray, list[Segment]]:
    """The official per-query rules on [Q] arrays -> (lut int32 [Q+1], segments in id order).

    Kept queries are visited in index order. A query is dropped if any of its areas is 0 or if
    ``winner_area / mask_area < overlap_threshold`` (float64 division). A thing query opens a new segment; a stuff
    query opens one for the first query of its class, later ones join it. Ids count from 1.
    ``lut[q]`` is the segment id of query q (0 if dropped) and ``lut[Q] = 0``, so ``lut[winner]`` is the panoptic map.
    """
    things = {int(c) for c in thing_ids}
    lut = np.zeros(len(scores) + 1, dtype=np.int32)
    opened: list[tuple[int, bool, float]] = []
    areas: list[int] = []
    stuff_ids: dict[int, int] = {}
    for q in np.flatnonzero(keep):
        won, masked, visible = int(winner_area[q]), int(mask_area[q]), int(visible_area[q])
        if won == 0 or masked == 0 or visible == 0 or won / masked < overlap_threshold:
            continue
        category = int(labels[q])
        isthing = category in things
        if not isthing and category in stuff_ids:
            lut[q] = stuff_ids[category]
            areas[stuff_ids[category] - 1] += visible
            continue
        opened.append((category, isthing, float(scores[q])))
        areas.append(visible)
        lut[q] = len(opened)
        if not isthing:
            stuff_ids[category] = len(opened)
    segments = [Segment(i + 1, c, t, a, s) for i, ((c, t, s), a) in enumerate(zip(opened, areas))]
    return lut, segments


def panoptic_inference(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    thing_ids: Collection[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> PanopticOutput:
    """Class logits [Q, K+1], mask logits [Q, H, W] and the thing classes -> panoptic map and segments.

    Queries are kept by :func:`keep_queries`."""
    scores, labels = query_scores(class_logits)
    keep = keep_queries(scores, labels, np.shape(class_logits)[-1] - 1, object_mask_threshold)
    stage = panoptic_pixel_stage(scores, keep, mask_logits)
    lut, segments = panoptic_segments(
        scores, labels, keep, stage.winner_area, stage.mask_area, stage.visible_area, thing_ids, overlap_threshold
    )
    return PanopticOutput(panoptic=lut[stage.winner], segments=segments)


def instance_inference(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    thing_ids: Collection[int] | None = None,
    top_k: int = 100,
) -> InstanceOutput:
    """Class logits [Q, K+1] and mask logits [Q, H, W] -> the top_k (query, class) pairs by class probability.

    Ties keep the lower flat index ``q * K + c`` first. With ``thing_ids`` (panoptic models), pairs of other classes
    are then dropped. Masks are ``logit > 0``; the score is the class probability times the mean sigmoid inside the
    mask, ``sum(sigmoid * mask) / (sum(mask) + 1e-6)``."""
    probs = _softmax(_as_float(class_logits))[:, :-1]
    num_classes = probs.shape[1]
    flat = probs.ravel()
    order = np.argsort(-flat, kind="stable")[:top_k]
    labels = order % num_classes
    if thing_ids is not None:
        order = order[np.isin(labels, np.fromiter(thing_ids, dtype=np.int64))]
        labels = order % num_classes
    queries = order // num_classes
    logits = _as_float(mask_logits)[queries]
    masks = logits > 0
    binary = masks.astype(logits.dtype)
    mask_scores = (_sigmoid(logits) * binary).sum(axis=(1, 2)) / (binary.sum(axis=(1, 2)) + 1e-6)
    return InstanceOutput(
        masks=masks,
        scores=flat[order] * mask_scores,
        labels=labels.astype(np.int64),
        query_indices=queries.astype(np.int64),
    )
