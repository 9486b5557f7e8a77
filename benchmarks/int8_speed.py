"""ONNX Runtime INT8 (Q/DQ) against FP32 on this CPU, and the share of time the FP32 islands take.

    python -m pem.benchmarks.int8_speed [--preset ade20k_semantic_stdc1] [--imgsz 512x512] [--head raw]
                                         [--threads 2] [--rounds 20] [--out benchmarks/results]

Both graphs come from one export of the preset (randomly initialised: speed does not depend on the weights) and
run batch 1 on ``--threads`` intra-op threads; the INT8 graph is calibrated (min-max, ONNX Runtime target) on the
first 8 photographs scikit-image ships. Rounds alternate FP32 and INT8 so that machine noise hits both; medians.
An ONNX Runtime profile of each graph attributes kernel time to the FP32 islands (DeformConv, PrototypeGather,
softmax, LayerNorm, argmax, the prediction head and the wrapper's pre-processing).
Results: ``benchmarks/results/int8_speed_<preset>_<size>.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
KERNEL_SUFFIX = "_kernel_time"


def island_share(model_path: Path, feed: dict[str, np.ndarray], threads: int, island_names: set[str],
                 runs: int = 5) -> dict[str, float]:
    """Kernel time per run (ms) of ``model_path`` from ONNX Runtime's profiler, and the FP32 islands' part of it."""
    import onnxruntime as ort

    from pem.runtime.contract import PROTOTYPE_GATHER_OP

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="pem-profile-") as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    total = islands = 0.0
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        node = name[: -len(KERNEL_SUFFIX)]
        total += event["dur"]
        if node in island_names or f"{PROTOTYPE_GATHER_OP}/" in node:
            islands += event["dur"]
    scale = 1e-3 / (runs + 1)
    return {"kernel_ms": total * scale, "island_ms": islands * scale, "island_share": islands / total}


def time_interleaved(paths: dict[str, Path], feed: dict[str, np.ndarray], threads: int, rounds: int) -> dict[
        str, list[float]]:
    """Wall time (ms) of each graph, ``rounds`` alternating runs after 3 warm-up runs each."""
    import onnxruntime as ort

    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sessions[name].run(None, feed)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            samples[name].append(1e3 * (time.perf_counter() - start))
    return samples


def run(preset: str, imgsz: tuple[int, int], head: str, threads: int, rounds: int, work: Path) -> dict[str, object]:
    import onnx
    from skimage.data import data_dir

    import pem
    from pem.calibration.images import list_images, load_rgb
    from pem.calibration.int8_export import quantize_to_int8
    from pem.calibration.recipe import QuantRecipe
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx
    from pem.export.precision.fp16 import Fp32Islands
    from pem.export.precision.scopes import node_scopes
    from pem.runtime.predictor import Predictor

    fp32_path, int8_path = work / "fp32.onnx", work / "int8.onnx"
    model = pem.build_model(preset).eval()
    save_onnx(export_onnx(model, ExportOptions(head=head, imgsz=imgsz)), fp32_path)
    photos = [p for p in list_images(data_dir) if p.suffix == ".png" and load_rgb(p).shape[0] >= 256][:8]
    outcome = quantize_to_int8(fp32_path, photos, QuantRecipe(calibration_images=8))
    onnx.save(outcome.model, str(int8_path))
    with Predictor(fp32_path, providers=["cpu"]) as predictor:
        feed, _ = predictor.preprocess(load_rgb(photos[0]))
    fp32_model = onnx.load(str(fp32_path))
    islands = Fp32Islands()
    island_names = {node.name for node, scope in zip(fp32_model.graph.node, node_scopes(fp32_model.graph))
                    if islands.keeps(node.op_type, scope)}
    samples = time_interleaved({"fp32": fp32_path, "int8": int8_path}, feed, threads, rounds)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    profiles = {name: island_share(path, feed, threads, island_names)
                for name, path in (("fp32", fp32_path), ("int8", int8_path))}
    speedup = medians["fp32"] / medians["int8"]
    return {
        "preset": preset, "imgsz": f"{imgsz[0]}x{imgsz[1]}", "head": head, "threads": threads, "rounds": rounds,
        "weights": "random initialisation (speed does not depend on the weights)",
        "calibration": [p.name for p in photos], "median_ms": medians, "samples_ms": samples,
        "int8_speedup": speedup, "int8_mac_share": outcome.coverage.int8_share, "macs": outcome.coverage.to_json(),
        "profiles": profiles, "target_speedup": 1.8, "passed": speedup >= 1.8,
    }


def main(argv: list[str] | None = None) -> int:
    from pem.benchmarks.environment import environment
    from pem.runtime.sizes import parse_size

    parser = argparse.ArgumentParser(prog="python -m pem.benchmarks.int8_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ade20k_semantic_stdc1")
    parser.add_argument("--imgsz", type=parse_size, default=(512, 512))
    parser.add_argument("--head", default="raw", choices=["raw", "semantic", "panoptic"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pem-int8-speed-") as work:
        record = run(args.preset, args.imgsz, args.head, args.threads, args.rounds, Path(work))
    record = {"benchmark": "int8_speed", "environment": environment(),
              "command": "python -m pem.benchmarks.int8_speed " + " ".join(argv or sys.argv[1:]), **record}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"int8_speed_{args.preset}_{record['imgsz']}_{args.head}.json"
    (args.out / name).write_text(json.dumps(record, indent=2) + "\n")
    profiles = record["profiles"]
    print(f"{args.preset} {record['imgsz']} {args.head} head, {args.threads} threads, medians of {args.rounds}: "
          f"FP32 {record['median_ms']['fp32']:.1f} ms, INT8 {record['median_ms']['int8']:.1f} ms "
          f"-> {record['int8_speedup']:.2f}x (target 1.8x: {'PASS' if record['passed'] else 'FAIL'})")
    print(f"FP32 islands: {100 * profiles['fp32']['island_share']:.0f}% of FP32 kernel time "
          f"({profiles['fp32']['island_ms']:.1f} ms), {100 * profiles['int8']['island_share']:.0f}% of INT8 kernel "
          f"time ({profiles['int8']['island_ms']:.1f} ms); INT8 share of multiply-adds "
          f"{100 * record['int8_mac_share']:.1f}%; wrote {args.out / name}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
