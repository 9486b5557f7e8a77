"""Panoptic quality (PQ, SQ, RQ) in numpy, with the definition of panopticapi's ``pq_compute``.

Per image, segment areas are pixel counts of the id maps (0 is void) and ``overlap[g, p]`` counts the pixels where
the ground-truth map holds ``g`` and the prediction ``p``:

* A non-crowd ground-truth segment ``g`` and a predicted segment ``p`` of the same category with
  ``IoU = overlap[g, p] / (area[p] + area[g] - overlap[g, p] - overlap[void, p]) > 0.5`` are a true positive:
  prediction pixels on void do not count in the union. IoU > 0.5 makes the matching unique.
* Crowd ground truth (``iscrowd`` = 1) is never matched and never a false negative; other unmatched ground-truth
  segments are false negatives.
* An unmatched prediction is a false positive unless more than half of its area lies on void or on crowd regions of
  its own category, in which case it is ignored.

Per category, with ``IoU_sum`` over its true positives: ``PQ = IoU_sum / (TP + FP/2 + FN/2)``,
``SQ = IoU_sum / TP`` (0 without TP), ``RQ = TP / (TP + FP/2 + FN/2)``. All, Things and Stuff average these over
the categories of that group with ``TP + FP + FN > 0``; ``n`` is how many were averaged. Every value is a fraction
in [0, 1] (panopticapi prints them times 100). As in panopticapi, only id 0 is void: ground-truth ids absent from
the ground-truth segment list are neither void nor matched, and ground-truth segments whose category is not in the
category table are counted but left out of every result. Two differences, both for inputs panopticapi does not
expect: an average over ``n = 0`` categories is reported as 0.0 (panopticapi divides by zero), and several crowd
segments of one category in an image all count as crowd (panopticapi keeps the last one; COCO has at most one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pem.runtime.coco_panoptic import MAX_SEGMENT_ID, PathLike, load_panoptic_json, read_panoptic_png

__all__ = ["VOID_ID", "PanopticQuality", "evaluate_panoptic_folders"]

VOID_ID = 0
_OFFSET = MAX_SEGMENT_ID + 1

Categories = Mapping[int, bool] | Iterable[Mapping[str, Any]]


@dataclass
class _CategoryStats:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0


@dataclass(frozen=True)
class _Segment:
    category_id: int
    iscrowd: bool


def _category_table(categories: Categories) -> dict[int, bool]:
    """``{category_id: isthing}`` from a mapping or from COCO category dicts with ``id`` and ``isthing``."""
    if isinstance(categories, Mapping):
        pairs = list(categories.items())
    else:
        pairs = []
        for category in categories:
            if not isinstance(category, Mapping) or "id" not in category or "isthing" not in category:
                raise ValueError(f"a category needs 'id' and 'isthing', got {category!r}")
            pairs.append((category["id"], category["isthing"]))
    table: dict[int, bool] = {}
    for category_id, isthing in pairs:
        if int(category_id) in table:
            raise ValueError(f"category id {category_id} is listed twice")
        table[int(category_id)] = bool(isthing)
    if not table:
        raise ValueError("the category table is empty")
    return table


def _id_map(ids: np.ndarray, name: str, where: str) -> np.ndarray:
    """Check an id map, integer [H, W] in [0, 2**24), and return it as int64."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}{where} must be an integer array [H, W], got dtype {ids.dtype} shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise ValueError(f"{name}{where} must hold ids in [0, {MAX_SEGMENT_ID}], got [{ids.min()}, {ids.max()}]")
    return ids.astype(np.int64, copy=False)


def _segment_table(segments: Iterable[Mapping[str, Any]], name: str, where: str) -> dict[int, _Segment]:
    """``{segment_id: _Segment}`` from segment dicts (``id``, ``category_id``, optional ``iscrowd``)."""
    table: dict[int, _Segment] = {}
    for segment in segments:
        if not isinstance(segment, Mapping) or "id" not in segment or "category_id" not in segment:
            raise ValueError(f"{name}{where}: a segment needs 'id' and 'category_id', got {segment!r}")
        segment_id = int(segment["id"])
        if segment_id == VOID_ID:
            raise ValueError(f"{name}{where}: segment id {VOID_ID} is reserved for void")
        if segment_id in table:
            raise ValueError(f"{name}{where}: segment id {segment_id} is listed twice")
        table[segment_id] = _Segment(int(segment["category_id"]), bool(segment.get("iscrowd", 0)))
    return table


def _areas(ids: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(ids, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def _class_metrics(stats: _CategoryStats) -> dict[str, float | int]:
    denominator = stats.tp + 0.5 * stats.fp + 0.5 * stats.fn
    pq = stats.iou_sum / denominator if denominator else 0.0
    sq = stats.iou_sum / stats.tp if stats.tp else 0.0
    rq = stats.tp / denominator if denominator else 0.0
    return {"pq": pq, "sq": sq, "rq": rq, "tp": stats.tp, "fp": stats.fp, "fn": stats.fn}


class PanopticQuality:
    """Streaming PQ/SQ/RQ over images (see the module docstring for the definition).

    ``categories``: ``{category_id: isthing}`` or COCO category dicts with ``id`` and ``isthing``.
    """

    def __init__(self, categories: Categories) -> None:
        self._isthing = _category_table(categories)
        self._stats: defaultdict[int, _CategoryStats] = defaultdict(_CategoryStats)

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._stats.clear()

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Iterable[Mapping[str, Any]],
        pred_ids: np.ndarray,
        pred_segments: Iterable[Mapping[str, Any]],
        image_id: object = None,
    ) -> None:
        """Add one image. ``gt_ids``, ``pred_ids``: integer [H, W] segment ids in [0, 2**24), 0 = void.
        ``gt_segments``: dicts with ``id``, ``category_id``, ``iscrowd`` (0 when absent); ``pred_segments``: dicts
        with ``id`` and ``category_id``. ``image_id`` only names the image in error messages. Raises ValueError when
        the shapes differ, a predicted id is in the map but not in the list (or the reverse), or a predicted
        category is unknown; nothing is counted then."""
        where = "" if image_id is None else f" (image_id {image_id!r})"
        gt = _id_map(gt_ids, "gt_ids", where)
        pred = _id_map(pred_ids, "pred_ids", where)
        if gt.shape != pred.shape:
            raise ValueError(f"gt_ids shape {gt.shape} and pred_ids shape {pred.shape} differ{where}")
        gt_table = _segment_table(gt_segments, "gt_segments", where)
        pred_table = _segment_table(pred_segments, "pred_segments", where)
        pred_area = _areas(pred)
        self._check_predictions(pred_table, pred_area, where)
        gt_area = _areas(gt)
        pairs, counts = np.unique(gt * _OFFSET + pred, return_counts=True)
        gt_of_pair, pred_of_pair = (pairs // _OFFSET).tolist(), (pairs % _OFFSET).tolist()
        overlap = dict(zip(zip(gt_of_pair, pred_of_pair), counts.tolist()))

        matched_gt: set[int] = set()
        matched_pred: set[int] = set()
        for (gt_id, pred_id), intersection in overlap.items():
            gt_segment, pred_segment = gt_table.get(gt_id), pred_table.get(pred_id)
            if gt_segment is None or pred_segment is None or gt_segment.iscrowd:
                continue
            if gt_segment.category_id != pred_segment.category_id:
                continue
            union = pred_area[pred_id] + gt_area[gt_id] - intersection - overlap.get((VOID_ID, pred_id), 0)
            iou = intersection / union
            if iou > 0.5:
                stats = self._stats[gt_segment.category_id]
                stats.tp += 1
                stats.iou_sum += iou
                matched_gt.add(gt_id)
                matched_pred.add(pred_id)

        crowd_ids: defaultdict[int, list[int]] = defaultdict(list)
        for gt_id, gt_segment in gt_table.items():
            if gt_segment.iscrowd:
                crowd_ids[gt_segment.category_id].append(gt_id)
            elif gt_id not in matched_gt:
                self._stats[gt_segment.category_id].fn += 1

        for pred_id, pred_segment in pred_table.items():
            if pred_id in matched_pred:
                continue
            ignored = overlap.get((VOID_ID, pred_id), 0)
            ignored += sum(overlap.get((gt_id, pred_id), 0) for gt_id in crowd_ids.get(pred_segment.category_id, ()))
            if ignored / pred_area[pred_id] <= 0.5:
                self._stats[pred_segment.category_id].fp += 1

    def _check_predictions(self, pred_table: dict[int, _Segment], pred_area: dict[int, int], where: str) -> None:
        unlisted = sorted(set(pred_area) - set(pred_table) - {VOID_ID})
        if unlisted:
            raise ValueError(f"pred_ids{where} hold segment ids {unlisted} that pred_segments does not list")
        absent = sorted(set(pred_table) - set(pred_area))
        if absent:
            raise ValueError(f"pred_segments{where} list segment ids {absent} that pred_ids does not hold")
        unknown = {i: s.category_id for i, s in pred_table.items() if s.category_id not in self._isthing}
        if unknown:
            raise ValueError(f"pred_segments{where} have unknown category ids (segment id: category id): {unknown}")

    def compute(self) -> dict[str, Any]:
        """Results as fractions in [0, 1]: ``All``, ``Things``, ``Stuff`` -> ``{pq, sq, rq, n}`` and ``per_class``
        -> ``{category_id: {pq, sq, rq, tp, fp, fn}}`` for every category of the table (zeros when unseen)."""
        stats = {category_id: self._stats.get(category_id, _CategoryStats()) for category_id in self._isthing}
        per_class = {category_id: _class_metrics(s) for category_id, s in stats.items()}
        results: dict[str, Any] = {}
        for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            counted = [
                category_id
                for category_id, s in stats.items()
                if (isthing is None or self._isthing[category_id] == isthing) and s.tp + s.fp + s.fn > 0
            ]
            n = len(counted)
            averages = {key: sum(per_class[c][key] for c in counted) / n if n else 0.0 for key in ("pq", "sq", "rq")}
            results[group] = {**averages, "n": n}
        results["per_class"] = per_class
        return results


def evaluate_panoptic_folders(
    gt_json: PathLike, gt_folder: PathLike, pred_json: PathLike, pred_folder: PathLike
) -> dict[str, Any]:
    """PQ of COCO-panoptic predictions against COCO-panoptic ground truth, as :meth:`PanopticQuality.compute`.

    Annotations are paired by ``image_id``; every ground-truth image needs a prediction (predictions for other
    images are not used). Categories come from the ground-truth JSON. Errors are ValueErrors naming the file or
    image."""
    gt_data = load_panoptic_json(gt_json)
    pred_data = load_panoptic_json(pred_json, require_categories=False)
    predictions: dict[Any, dict[str, Any]] = {}
    for annotation in pred_data["annotations"]:
        if annotation["image_id"] in predictions:
            raise ValueError(f"{pred_json}: image_id {annotation['image_id']!r} has more than one annotation")
        predictions[annotation["image_id"]] = annotation
    metric = PanopticQuality(gt_data["categories"])
    for gt_annotation in gt_data["annotations"]:
        image_id = gt_annotation["image_id"]
        pred_annotation = predictions.get(image_id)
        if pred_annotation is None:
            raise ValueError(
                f"{pred_json} has no prediction for image_id {image_id!r} (ground truth {gt_annotation['file_name']})"
            )
        metric.update(
            read_panoptic_png(Path(gt_folder) / gt_annotation["file_name"]),
            gt_annotation["segments_info"],
            read_panoptic_png(Path(pred_folder) / pred_annotation["file_name"]),
            pred_annotation["segments_info"],
            image_id=image_id,
        )
    return metric.compute()
