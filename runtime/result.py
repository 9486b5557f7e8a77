"""The result of one image: semantic and panoptic maps, segments, timings, a plot and file savers.

Shapes: H0 x W0 the original image. Class ids are the model's contiguous ids in [0, K); files use the dataset
ids from the artifact's metadata (``ClassInfo.dataset_id``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pem.runtime.coco_panoptic import PathLike, write_json_atomic, write_panoptic_png
from pem.runtime.fusion import Segment
from pem.runtime.legend import draw_legend
from pem.runtime.metadata import ArtifactMetadata
from pem.runtime.outputs import (
    cityscapes_ids,
    coco_categories,
    segment_boxes,
    segments_info,
    write_label_image,
    write_semantic_png,
)
from pem.runtime.postprocess import VOID_LABEL
from pem.runtime.preprocess import resize_to
from pem.runtime.visualize import colorize_panoptic, colorize_semantic, overlay

__all__ = ["Result"]


@dataclass(eq=False)
class Result:
    """One image's prediction.

    ``image`` uint8 [H0, W0, 3] RGB (the input, kept for :meth:`plot`); ``semantic`` int64 [H0, W0] class ids
    (255 marks void, which only a ``panoptic``-head artifact produces: there the semantic map is each segment's
    class); ``panoptic`` int32 [H0, W0] segment ids, 0 void, None for semantic-only artifacts; ``segments`` in id
    order; ``timings`` in milliseconds: ``preprocess_ms``, ``infer_ms``, ``postprocess_ms`` and the backend's
    ``h2d_ms``, ``compute_ms``, ``d2h_ms``.

    ``fusion_semantic`` / ``fusion_panoptic``: the same maps at the artifact's fusion resolution (F, see
    ``pem.runtime.resolution``; None means the full-size maps, as in fusion size ``original``) and
    ``fusion_scale`` (sy, sx) the fusion pixels per original pixel; :meth:`at_fusion_size` makes a Result of them.
    """

    image: np.ndarray
    semantic: np.ndarray
    panoptic: np.ndarray | None
    segments: list[Segment]
    metadata: ArtifactMetadata
    timings: dict[str, float] = field(default_factory=dict)
    fusion_semantic: np.ndarray | None = None
    fusion_panoptic: np.ndarray | None = None
    fusion_scale: tuple[float, float] = (1.0, 1.0)

    def at_fusion_size(self) -> Result:
        """This result at the fusion resolution F: the maps at F, the image resized to F (Pillow bilinear), segment
        areas counted at F, scale 1. Returns self when the maps already have the original size."""
        semantic = self.semantic if self.fusion_semantic is None else self.fusion_semantic
        if semantic.shape == self.semantic.shape:
            return self
        panoptic = self.fusion_panoptic
        segments = self.segments
        if panoptic is not None:
            areas = np.bincount(panoptic.ravel(), minlength=len(segments) + 1)
            segments = [dataclasses.replace(s, area=int(areas[s.id])) for s in segments]
        image = resize_to(self.image, semantic.shape)
        return Result(image, semantic, panoptic, segments, self.metadata, dict(self.timings))

    @property
    def names(self) -> list[str]:
        """Class names by contiguous id."""
        return [c.name for c in self.metadata.classes]

    def classes_present(self) -> list[int]:
        """Contiguous ids of the classes in the result, ascending (from the segments when panoptic)."""
        if self.panoptic is not None:
            return sorted({s.category_id for s in self.segments})
        ids = np.unique(self.semantic)
        return [int(i) for i in ids if i < len(self.metadata.classes)]

    def plot(self, alpha: float = 0.55, legend: bool = True) -> np.ndarray:
        """uint8 [H0, W0, 3] RGB: class colours blended over the image (things shifted per instance), white
        outlines between segments, and a legend of the classes present."""
        colors = self.metadata.class_colors
        if self.panoptic is not None:
            ids = self.panoptic
            painted = colorize_panoptic(ids, self.segments, colors)
        else:
            ids = np.where(self.semantic == VOID_LABEL, 0, self.semantic + 1)
            painted = colorize_semantic(self.semantic, colors, ignore=VOID_LABEL)
        out = overlay(self.image, painted, ids, alpha)
        if legend:
            out = draw_legend(out, [(self.names[c], colors[c]) for c in self.classes_present()])
        return out

    def segments_info(self) -> list[dict[str, Any]]:
        """COCO-panoptic ``segments_info`` (dataset category ids, area, bbox [x, y, w, h], iscrowd 0, score)."""
        return segments_info(self._require_panoptic(), self.segments, self.metadata.classes)

    def save_coco_panoptic(self, folder: PathLike, file_name: str, image_id: Any = None,
                           write_json: bool = True) -> dict[str, Any]:
        """Write ``folder/<stem of file_name>.png`` (COCO-panoptic PNG, ``id2rgb``) and, with ``write_json``,
        ``folder/<stem>.json`` (``annotations`` with this one image and ``categories``, dataset category ids).
        ``image_id`` defaults to the stem (an int when it is all digits, as COCO names files). Returns the
        annotation (``image_id``, ``file_name``, ``segments_info``)."""
        panoptic = self._require_panoptic()
        name = Path(file_name).with_suffix(".png").name
        stem = Path(name).stem
        annotation = {
            "image_id": image_id if image_id is not None else (int(stem) if stem.isdigit() else stem),
            "file_name": name,
            "segments_info": self.segments_info(),
        }
        write_panoptic_png(Path(folder) / name, panoptic)
        if write_json:
            data = {"annotations": [annotation], "categories": coco_categories(self.metadata.classes)}
            write_json_atomic(Path(folder) / f"{stem}.json", data)
        return annotation

    def save_cityscapes(self, folder: PathLike, name: str) -> Path:
        """Write the Cityscapes-style id map (``dataset_id * 1000 + instance`` for things, ``dataset_id`` for stuff,
        0 void) as ``folder/<name>.png`` (16-bit) or, when ids exceed 65535 (dataset ids above 65 with instances),
        ``folder/<name>.tif`` (32-bit). Returns the path written."""
        ids = cityscapes_ids(self.semantic, self.panoptic, self.segments, self.metadata.classes, VOID_LABEL)
        return write_label_image(Path(folder) / f"{Path(name).stem}.png", ids)

    def save_semantic(self, path: PathLike, palette: bool = True) -> None:
        """Write the class-id map as a PNG: a palette image in the class colours (void 255 black), or grey levels."""
        write_semantic_png(path, self.semantic, self.metadata.classes, VOID_LABEL, palette)

    def summary(self) -> list[dict[str, Any]]:
        """One dict per segment (id, label, category_id, dataset_id, isthing, area, score, bbox) or, without a
        panoptic map, per class present (label, category_id, dataset_id, area)."""
        classes = self.metadata.classes
        if self.panoptic is None:
            areas = np.bincount(self.semantic.ravel(), minlength=len(classes))
            return [{"label": classes[c].name, "category_id": c, "dataset_id": classes[c].dataset_id,
                     "area": int(areas[c])} for c in self.classes_present()]
        boxes = segment_boxes(self.panoptic, self.segments)
        return [{"id": s.id, "label": classes[s.category_id].name, "category_id": s.category_id,
                 "dataset_id": classes[s.category_id].dataset_id, "isthing": s.isthing, "area": s.area,
                 "score": round(float(s.score), 6), "bbox": boxes[s.id]} for s in self.segments]

    def to_json(self) -> str:
        """The summary, image size, head and timings as a JSON string."""
        height, width = self.semantic.shape
        data = {"height": height, "width": width, "preset": self.metadata.preset, "head": self.metadata.head,
                "segments": self.summary(), "timings": {k: round(v, 3) for k, v in self.timings.items()}}
        return json.dumps(data)

    def _require_panoptic(self) -> np.ndarray:
        if self.panoptic is None:
            raise ValueError(f"{self.metadata.source} (head {self.metadata.head!r}, preset {self.metadata.preset!r}) "
                             "gives no panoptic output")
        return self.panoptic
