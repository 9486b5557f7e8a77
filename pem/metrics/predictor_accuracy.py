"""Accuracy after export: PQ and mIoU of a runtime ``Predictor`` on a COCO-panoptic folder.

The folder is what ``pem-data synthetic`` writes (``images/``, ``panoptic/``, ``panoptic.json``), or any
COCO-panoptic dataset whose category ids are the dataset ids in the artifact's metadata. Ground-truth semantic
labels come from the panoptic PNGs (void 255; crowd regions keep their class); pixels a panoptic head leaves void
(255) count as misses in mIoU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pem.metrics import PanopticQuality, SemanticMetrics
from pem.runtime.coco_panoptic import load_panoptic_json, read_panoptic_png


def panoptic_folder_accuracy(predictor: Any, folder: str | Path, max_images: int | None = None) -> dict[str, float]:
    """PQ/SQ/RQ (all, things, stuff) and mIoU, in percent, of ``predictor`` on ``folder``.

    ``predictor(image) -> Result`` with ``semantic``, ``panoptic`` and ``segments`` (contiguous category ids) and
    ``predictor.metadata.classes`` giving each class's ``dataset_id``.
    """
    from PIL import Image

    folder = Path(folder)
    index = load_panoptic_json(folder / "panoptic.json")
    classes = predictor.metadata.classes
    contiguous = {c.dataset_id: c.id for c in classes}
    panoptic = PanopticQuality({c.id: c.isthing for c in classes})
    semantic = SemanticMetrics(len(classes), void_prediction=255)
    names = {image["id"]: image["file_name"] for image in index.get("images", [])}
    annotations = index["annotations"][:max_images]
    for annotation in annotations:
        image_name = names.get(annotation["image_id"], Path(annotation["file_name"]).with_suffix(".jpg").name)
        with Image.open(folder / "images" / image_name) as handle:
            image = np.asarray(handle.convert("RGB"))
        gt_ids = read_panoptic_png(folder / "panoptic" / annotation["file_name"])
        gt_segments = [{"id": s["id"], "category_id": contiguous[s["category_id"]], "iscrowd": s.get("iscrowd", 0)}
                       for s in annotation["segments_info"]]
        result = predictor(image)
        pred_segments = [{"id": s.id, "category_id": s.category_id} for s in result.segments]
        panoptic.update(gt_ids, gt_segments, result.panoptic, pred_segments, image_id=annotation["image_id"])
        lut = {s["id"]: s["category_id"] for s in gt_segments}
        gt_semantic = np.full(gt_ids.shape, 255, dtype=np.int64)
        for segment_id, category in lut.items():
            gt_semantic[gt_ids == segment_id] = category
        semantic.update(result.semantic, gt_semantic)
    scores = panoptic.compute()
    summary = {"images": float(len(annotations)), "mIoU": 100 * semantic.compute()["mIoU"]}
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            summary[f"{key.upper()}{suffix}"] = 100 * scores[group][key]
    return summary
