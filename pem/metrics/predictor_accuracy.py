"""The one evaluation loop: PQ and mIoU of any predictor over samples with ground truth (numpy only, torch-free).

``pem-eval`` (the PyTorch reference chain over a dataset split), ``pem-bench --accuracy``, the INT8 accuracy guard
and the INT8 sensitivity search (a runtime ``Predictor`` over a COCO-panoptic folder) all run
:func:`evaluate_samples`; they differ only in where samples come from and what predicts.

A COCO-panoptic folder is what ``pem-data synthetic`` writes (``images/``, ``panoptic/``, ``panoptic.json``), or any
COCO-panoptic dataset whose category ids are the dataset ids in the artifact's metadata. Its ground-truth semantic
labels come from the panoptic PNGs (void 255; crowd regions keep their class). Predicted pixels that a panoptic
head leaves void (255) count as misses in mIoU.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pem.metrics.panoptic_quality import PanopticQuality
from pem.metrics.semantic import SemanticMetrics
from pem.runtime.coco_panoptic import load_panoptic_json, read_panoptic_png
from pem.runtime.fusion import Segment
from pem.runtime.images import read_image

VOID_PREDICTION = 255  # what a panoptic head predicts on void pixels (pem.runtime.postprocess.VOID_LABEL)


class Predicted(Protocol):
    """What a predictor returns for one image (``pem.runtime.Result`` is one): ``semantic`` int [H, W] contiguous
    class ids (255 void), ``panoptic`` int [H, W] segment ids (0 void) or None, ``segments`` in id order."""

    semantic: np.ndarray
    panoptic: np.ndarray | None
    segments: list[Segment]


@dataclass(frozen=True, eq=False)
class EvalSample:
    """One image with its ground truth: ``image`` uint8 [H, W, 3] RGB, ``semantic`` int [H, W] contiguous ids (255
    ignored), and for panoptic evaluation ``panoptic`` int [H, W] segment ids with ``segments`` (dicts with ``id``,
    contiguous ``category_id`` and ``iscrowd``)."""

    image: np.ndarray
    semantic: np.ndarray
    image_id: Any
    panoptic: np.ndarray | None = None
    segments: list[dict[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class EvalScores:
    """``images`` evaluated; ``semantic``: ``SemanticMetrics.compute()``; ``panoptic``: ``PanopticQuality.compute()``
    or None when not evaluated. Fractions in [0, 1]."""

    images: int
    semantic: dict[str, Any]
    panoptic: dict[str, Any] | None

    def summary(self) -> dict[str, float]:
        """mIoU and (with panoptic scores) PQ/SQ/RQ of all classes, things (``_th``) and stuff (``_st``), percent."""
        summary = {"mIoU": 100 * self.semantic["mIoU"]}
        if self.panoptic is not None:
            for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
                for key in ("pq", "sq", "rq"):
                    summary[f"{key.upper()}{suffix}"] = 100 * self.panoptic[group][key]
        return summary


def evaluate_samples(
    predict: Callable[[np.ndarray], Predicted],
    samples: Iterable[EvalSample],
    isthing: Mapping[int, bool],
    panoptic: bool = True,
    on_result: Callable[[EvalSample, Predicted], None] | None = None,
) -> EvalScores:
    """Run ``predict`` on every sample and accumulate mIoU (and PQ when ``panoptic``) over the classes of
    ``isthing`` (contiguous id -> thing flag); ``on_result(sample, result)`` sees every prediction (to save it)."""
    semantic = SemanticMetrics(len(isthing), void_prediction=VOID_PREDICTION)
    quality = PanopticQuality(dict(isthing)) if panoptic else None
    count = 0
    for sample in samples:
        result = predict(sample.image)
        semantic.update(result.semantic, sample.semantic)
        if quality is not None:
            pred_segments = [{"id": s.id, "category_id": s.category_id} for s in result.segments]
            quality.update(sample.panoptic, sample.segments, result.panoptic, pred_segments, image_id=sample.image_id)
        if on_result is not None:
            on_result(sample, result)
        count += 1
    return EvalScores(count, semantic.compute(), None if quality is None else quality.compute())


def panoptic_folder_samples(
    folder: str | Path, contiguous: Mapping[int, int], max_images: int | None = None
) -> Iterator[EvalSample]:
    """The images of a COCO-panoptic ``folder`` with their ground truth; ``contiguous`` maps dataset category ids
    to contiguous ids. Images are read by ``pem.runtime.images.read_image``."""
    folder = Path(folder)
    index = load_panoptic_json(folder / "panoptic.json")
    names = {image["id"]: image["file_name"] for image in index.get("images", [])}
    for annotation in index["annotations"][:max_images]:
        image_name = names.get(annotation["image_id"], Path(annotation["file_name"]).with_suffix(".jpg").name)
        gt_ids = read_panoptic_png(folder / "panoptic" / annotation["file_name"])
        segments = [{"id": s["id"], "category_id": contiguous[s["category_id"]], "iscrowd": s.get("iscrowd", 0)}
                    for s in annotation["segments_info"]]
        gt_semantic = np.full(gt_ids.shape, 255, dtype=np.int64)
        for segment in segments:
            gt_semantic[gt_ids == segment["id"]] = segment["category_id"]
        yield EvalSample(read_image(folder / "images" / image_name).image, gt_semantic, annotation["image_id"],
                         gt_ids, segments)


def panoptic_folder_accuracy(predictor: Any, folder: str | Path, max_images: int | None = None) -> dict[str, float]:
    """PQ/SQ/RQ (all, things, stuff) and mIoU, in percent, of ``predictor`` on a COCO-panoptic ``folder``, plus
    ``images`` (the count).

    ``predictor(image) -> Result`` with ``semantic``, ``panoptic`` and ``segments`` (contiguous category ids) and
    ``predictor.metadata.classes`` giving each class's ``dataset_id``.
    """
    classes = predictor.metadata.classes
    samples = panoptic_folder_samples(folder, {c.dataset_id: c.id for c in classes}, max_images)
    scores = evaluate_samples(predictor, samples, {c.id: c.isthing for c in classes})
    return {"images": float(scores.images), **scores.summary()}
