"""The prepared GPU check: kernels and the fast PyTorch-CUDA path against the reference, and their timings.

    python -m pem.benchmarks.gpu_check --out benchmarks/results            # on a CUDA machine (<= 6 min)
    python -m pem.benchmarks.gpu_check --smoke --out /tmp/check            # CPU: tiny sizes, logic only

One run measures, on the same card:
1. ``cityscapes_panoptic_r50`` at 1024x2048: FP32 eager "paper mode" (raw head, batch 1) against the fast path
   (FP16 autocast, channels-last, CUDA graph, panoptic head with the per-pixel fusion on the GPU, host segments);
2. ``ade20k_semantic_r50`` at 512x512: device time from a uint8 image on the GPU to the class map, CUDA-graph
   replay, median of >= 200;
3. agreement of the fast path with FP32 (panoptic ids, semantic labels) on a real photograph, with the
   parity oracle's official-format weights so that the reference has many segments.
The Triton kernel checks are the ``gpu``-marked tests of ``tests/kernels`` (run them with ``pytest -m gpu``).
Results: ``gpu_check_<card>.json`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pem.benchmarks.environment import environment


def _photo(size: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    from skimage.data import data_dir

    with Image.open(Path(data_dir) / "astronaut.png") as image:
        return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def _times(backend: Any, feed: dict[str, np.ndarray], iterations: int, warmup: int) -> list[float]:
    """Backend compute times (CUDA events on the GPU) of ``iterations`` calls after ``warmup``."""
    for _ in range(warmup):
        backend.infer(feed)
    samples = []
    for _ in range(iterations):
        backend.infer(feed)
        samples.append(backend.last_timings["compute_ms"])
    return samples


def _end_to_end(predictor: Any, image: np.ndarray, iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        predictor(image)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        predictor(image)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def check(device: str, smoke: bool, weights: str | None) -> dict[str, Any]:
    """Run the three parts; returns the report."""
    from pem.runtime import Predictor
    from pem.torch_backend import TorchBackend

    cuda = device.startswith("cuda")
    big_preset, big_size = ("synthetic_panoptic_tiny", (128, 256)) if smoke else ("cityscapes_panoptic_r50",
                                                                                    (1024, 2048))
    small_preset, small_size = ("synthetic_panoptic_tiny", (128, 128)) if smoke else ("ade20k_semantic_r50",
                                                                                      (512, 512))
    iterations, warmup = (3, 1) if smoke else (30, 5)
    artifact = weights or f"preset:{big_preset}"
    fast_options = {"precision": "fp16", "channels_last": True, "cuda_graph": True} if cuda else {}
    report: dict[str, Any] = {"device": device, "smoke": smoke, "environment": environment()}

    image = _photo(big_size)
    feed = {"image": image[None]}
    paper = TorchBackend(artifact, head="raw", device=device)
    paper_ms = _times(paper, feed, iterations, warmup)
    paper.close()
    with Predictor(TorchBackend(artifact, head="panoptic", device=device), input_size=big_size) as reference, \
            Predictor(TorchBackend(artifact, head="panoptic", device=device, **fast_options),
                      input_size=big_size) as fast:
        fast_ms = _end_to_end(fast, image, iterations, warmup)
        expected, got = reference(image), fast(image)
    agreement = float(np.mean(expected.panoptic == got.panoptic))
    report["cityscapes_panoptic"] = {
        "preset": big_preset, "size": list(big_size),
        "paper_mode_forward_ms_median": statistics.median(paper_ms),
        "fast_forward_and_postprocess_ms_median": statistics.median(fast_ms),
        "speedup": statistics.median(paper_ms) / statistics.median(fast_ms),
        "reference_segments": len(expected.segments),
        "reference_non_void": float(np.mean(expected.panoptic != 0)),
        "panoptic_id_agreement": agreement,
    }

    small = _photo(small_size)
    small_backend = TorchBackend(f"preset:{small_preset}", head="semantic", device=device, **fast_options)
    small_feed = {"image": small[None], "orig_size": np.array(small_size, dtype=np.int64)}
    device_ms = _times(small_backend, small_feed, 10 if smoke else 200, 3 if smoke else 20)
    small_backend.close()
    report["ade20k_semantic"] = {"preset": small_preset, "size": list(small_size),
                                 "device_ms_median": statistics.median(device_ms), "iterations": len(device_ms)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and iterations (CPU logic check)")
    parser.add_argument("--weights", help="checkpoint for the Cityscapes R50 part (e.g. converted parity weights)")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = check(device, args.smoke, args.weights)
    card = report["environment"].get("device", "cpu") if device.startswith("cuda") else "cpu"
    name = re.sub(r"[^A-Za-z0-9]+", "_", card).strip("_").lower()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_check_{name}{'_smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "environment"}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
