"""``pem-eval``: run a model over a dataset split, write its predictions, and compute PQ and mIoU.

Predictions go through the same chain as deployment (``pem.inference.predict``: official resize, geometry and the
runtime's fusion) and the one evaluation loop, ``pem.metrics.predictor_accuracy.evaluate_samples``. PQ uses
``pem.metrics.PanopticQuality`` (panopticapi's definition) on the dataset's panoptic PNGs; mIoU uses
``pem.metrics.SemanticMetrics`` on the dataset's semantic labels (255 ignored).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pem.config import PEMConfig
from pem.metrics.predictor_accuracy import EvalSample, evaluate_samples
from pem.modeling.pem_model import PEM
from pem.runtime.coco_panoptic import write_json_atomic, write_panoptic_png
from pem.runtime.destinations import check_destination
from pem.runtime.entry import command
from pem.runtime.errors import PemError
from pem.runtime.fusion import Segment
from pem.runtime.sizes import positive_int


def _finite_or_none(value: Any) -> Any:
    """NaN entries (classes absent from the evaluation) become None, so the metrics are strict JSON."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def find_split(config: PEMConfig, root: str | Path, split: str) -> Any | None:
    """The dataset of ``split`` under ``root``, or None when that split does not exist."""
    from pem.data.datasets import DatasetError, build_dataset

    try:
        return build_dataset(config, root, split)
    except (DatasetError, FileNotFoundError):
        return None


@dataclass(frozen=True, eq=False)
class _Result:
    """``pem.inference.Prediction`` as the evaluation loop reads it (``semantic``, ``panoptic``, ``segments``)."""

    semantic: np.ndarray
    panoptic: np.ndarray | None
    segments: list[Segment]


def _samples(dataset: Any, count: int, panoptic: bool) -> Iterator[EvalSample]:
    """The first ``count`` items of ``dataset`` with their ground truth (``sem_seg``; panoptic PNG and segments)."""
    from pem.data.datasets import read_panoptic

    for index in range(count):
        sample = dataset[index]
        if not panoptic:
            yield EvalSample(sample["image"], sample["sem_seg"], index)
            continue
        record = dataset.records[index]
        segments = [{"id": i, "category_id": c, "iscrowd": int(crowd)} for i, c, crowd in record.segments]
        yield EvalSample(sample["image"], sample["sem_seg"], record.image_id, read_panoptic(record.panoptic_file),
                         segments)


@torch.no_grad()
def evaluate(model: PEM, root: str | Path, split: str = "val", out: str | Path | None = None,
             max_images: int | None = None, verbose: bool = False) -> dict[str, Any]:
    """Metrics of ``model`` (eval mode) on ``split``; with ``out``, COCO-panoptic predictions and metrics.json."""
    from pem.data.datasets import build_dataset
    from pem.inference import predict

    config = model.config
    dataset = build_dataset(config, root, split)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    panoptic_on = config.test.panoptic_on
    dataset_ids = [c.dataset_id for c in config.categories]
    annotations = []
    done = 0

    def run(image: np.ndarray) -> _Result:
        prediction = predict(model, image)
        fused = prediction.panoptic
        return _Result(prediction.semantic, None if fused is None else fused.panoptic,
                       [] if fused is None else fused.segments)

    def save(sample: EvalSample, result: _Result) -> None:
        nonlocal done
        done += 1
        if out is not None and panoptic_on:
            name = Path(dataset.records[done - 1].panoptic_file).name
            write_panoptic_png(Path(out) / "panoptic" / name, result.panoptic)
            annotations.append({
                "image_id": sample.image_id, "file_name": name,
                "segments_info": [{"id": s.id, "category_id": dataset_ids[s.category_id], "iscrowd": 0,
                                   "area": s.area, "score": s.score, "isthing": s.isthing}
                                  for s in result.segments],
            })
        if verbose and sys.stderr.isatty():
            print(f"\r{done}/{count} images", end="", file=sys.stderr, flush=True)

    started = time.perf_counter()
    scores = evaluate_samples(run, _samples(dataset, count, panoptic_on),
                              {c.id: c.isthing for c in config.categories}, panoptic_on, save)
    if verbose:
        print(f"\revaluated {count} images of {split}", file=sys.stderr)
    metrics: dict[str, Any] = {"split": split, "images": count, "semantic": _finite_or_none(scores.semantic),
                               "seconds": time.perf_counter() - started}
    if scores.panoptic is not None:
        metrics["panoptic"] = scores.panoptic
    metrics["summary"] = scores.summary()
    if out is not None:
        out = Path(out)
        if panoptic_on:
            categories = [{"id": c.dataset_id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
                          for c in config.categories]
            write_json_atomic(out / "predictions.json", {"annotations": annotations, "categories": categories})
        write_json_atomic(out / "metrics.json", metrics)
    return metrics


@command("pem-eval")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pem-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="preset name")
    parser.add_argument("--weights", required=True, help="checkpoint from pem-train or pem-convert")
    parser.add_argument("--data", type=Path, required=True, help="dataset root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, help="folder for predictions (COCO-panoptic PNG + JSON) and metrics.json")
    parser.add_argument("--json", type=Path, help="write the metrics JSON here")
    parser.add_argument("--max-images", type=positive_int, help="evaluate only the first N images (N >= 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for output in (args.json, args.out):
        if output is not None:
            check_destination(output, [args.weights, args.data], folder=output is args.out)
    import pem

    try:
        model = pem.build_model(args.config, args.weights).to(args.device).eval()
        metrics = evaluate(model, args.data, args.split, args.out, args.max_images, verbose=True)
    except PemError as error:  # expected failures only: a bug keeps its traceback
        print(f"pem-eval: error: {error}", file=sys.stderr)
        return error.exit_code
    print("  ".join(f"{key} {value:.1f}" for key, value in metrics["summary"].items()))
    if args.json is not None:
        write_json_atomic(args.json, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
