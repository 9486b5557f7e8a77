"""Host-side cost of the runtime: panoptic post-processing of a 1024x2048 frame, and the runtime's peak memory.

    python -m pem.benchmarks.runtime_host

1. The ``panoptic`` head leaves only O(queries) work and one LUT relabel on the host. This times
   ``pem.runtime.postprocess`` (segments rules + relabel) on the outputs of a 1024x2048 frame with 30 segments
   (Voronoi cells standing in for the graph's per-pixel winners; the host work does not depend on the shapes),
   median of 50.
2. Peak RSS of a torch-free ``pem-predict`` process running an exported ``synthetic_panoptic_tiny`` graph over
   synthetic scenes (the process that would run on a robot).
Results: ``benchmarks/results/runtime_host.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pem.benchmarks.environment import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synthetic_panoptic_tiny.pth"


def panoptic_outputs(height: int, width: int, segments: int, queries: int, num_classes: int,
                     thing_ids: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Panoptic-head outputs of one frame: ``segments`` kept queries whose winners tile the frame as Voronoi cells."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform((0, 0), (height, width), size=(segments, 2))
    yy, xx = np.mgrid[0:height:4, 0:width:4]
    coarse = np.argmin((yy[..., None] - centers[:, 0]) ** 2 + (xx[..., None] - centers[:, 1]) ** 2, axis=-1)
    winner = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:height, :width].astype(np.int32)
    winner[rng.random(winner.shape) < 0.02] = -1  # a few pixels below the mask threshold
    scores = np.full(queries, 0.3, dtype=np.float32)
    scores[:segments] = rng.uniform(0.85, 0.99, segments)
    labels = np.full(queries, num_classes, dtype=np.int64)
    stuff = [c for c in range(num_classes) if c not in thing_ids]
    labels[:segments] = [thing_ids[i % len(thing_ids)] if i % 2 else stuff[i % len(stuff)] for i in range(segments)]
    visible = np.bincount(winner[winner >= 0], minlength=queries).astype(np.int64)
    winner_area = visible + np.bincount(np.clip(winner, 0, None)[winner < 0], minlength=queries)
    return {"query_scores": scores[None], "query_labels": labels[None], "winner": winner[None],
            "winner_area": winner_area[None], "mask_area": (visible + visible // 10)[None],
            "visible_area": visible[None]}


def time_postprocess(repeats: int = 50) -> dict[str, float]:
    from pem.config import get_preset
    from pem.runtime.metadata import ArtifactMetadata, graph_metadata
    from pem.runtime.postprocess import Geometry, postprocess

    config = get_preset("cityscapes_panoptic_r50")
    shapes = {"batch": 1, "height": 1024, "width": 2048}
    meta = ArtifactMetadata.from_props(graph_metadata(config, "panoptic", "uint8_nhwc", shapes, 19), "benchmark")
    outputs = panoptic_outputs(1024, 2048, 30, 100, config.num_classes, config.thing_ids)
    geometry = Geometry((1024, 2048), (1024, 2048))
    samples, segments = [], 0
    for _ in range(repeats + 3):
        start = time.perf_counter()
        result = postprocess(outputs, meta, geometry)
        samples.append((time.perf_counter() - start) * 1e3)
        segments = len(result.segments)
    samples = samples[3:]
    return {"median_ms": statistics.median(samples), "p90_ms": float(np.percentile(samples, 90)),
            "repeats": repeats, "segments": segments}


def runtime_peak_rss(images: int = 50) -> dict[str, float]:
    """Peak RSS (MiB) of a ``pem-predict`` child process with torch blocked from importing.

    Read from the child's own ``VmHWM``: ``ru_maxrss`` of a child started by fork/exec also counts the parent's
    memory at the fork (here the parent holds torch and the exporter)."""
    import pem
    from pem.data.synthetic import generate_synthetic_dataset
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = pem.build_model("synthetic_panoptic_tiny", str(FIXTURE))
        save_onnx(export_onnx(model, ExportOptions(head="panoptic", imgsz=(256, 256), dynamic=True)),
                  tmp / "tiny.onnx")
        scenes = generate_synthetic_dataset(tmp / "scenes", images, (256, 256), seed=5)
        blocker = ("import sys\nclass _Block:\n    def find_spec(self, name, *args):\n"
                   "        if name == 'torch' or name.startswith('torch.'):\n"
                   "            raise ImportError('torch is blocked in the runtime process')\n"
                   "sys.meta_path.insert(0, _Block())\n"
                   "from pem.runtime.cli import main\ncode = main(sys.argv[1:])\n"
                   "hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
                   "print('PEAK_RSS_KIB', hwm.split()[1])\nsys.exit(code)\n")
        command = [sys.executable, "-c", blocker, str(tmp / "tiny.onnx"), str(scenes / "images"), "--out",
                   str(tmp / "out"), "--save", "panoptic", "--quiet"]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
    peak_kib = int(result.stdout.split("PEAK_RSS_KIB")[-1].split()[0])
    return {"peak_rss_mib": peak_kib / 1024, "images": images}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = {"benchmark": "runtime_host", "machine": cpu_model(), "postprocess_1024x2048_panoptic": time_postprocess(),
              "pem_predict_process": runtime_peak_rss()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_host.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
