"""ONNX Runtime INT8 (Q/DQ) against FP32 on this CPU, and the share of time the FP32 islands take.

    python -m pem.benchmarks.int8_speed [--preset ade20k_semantic_stdc1] [--imgsz 512x512] [--head raw]
                                         [--threads 2] [--rounds 20] [--out benchmarks/results]

Both graphs come from one export of the preset (randomly initialised: speed does not depend on the weights) and
run batch 1 on ``--threads`` intra-op threads; the INT8 graph is calibrated (min-max, ONNX Runtime target) on the
first 8 photographs scikit-image ships. Rounds alternate FP32 and INT8 so that machine noise hits both; medians.
An ONNX Runtime profile of each graph attributes kernel time to the FP32 islands (DeformConv, PrototypeGather,
softmax, LayerNorm, argmax, the prediction head and the wrapper's pre-processing), to INT8 kernels, to conversion
ops (Q/DQ and layout) and to the remaining FP32 ops; from these, the speed-up ceilings (no conversion cost; only
islands and INT8 kernels left).
Results: ``benchmarks/results/int8_speed_<preset>_<size>_<head>_<threads>threads.json``.
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


# ONNX Runtime's INT8 kernels; everything else outside the islands runs in FP32
INT8_KERNELS = frozenset({"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QLinearAdd",
                          "QLinearMul", "QLinearConcat", "QLinearSoftmax", "QLinearAveragePool",
                          "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu"})
# ops that only convert precision or layout (Q/DQ, transposes around the NHWC INT8 kernels, NCHWc reorders, and the
# DepthToSpace that interleaves the phase convolutions of a transposed convolution)
CONVERSION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Transpose", "ReorderInput", "ReorderOutput",
                            "DepthToSpace"})


def session_options(threads: int, profile_prefix: Path | None = None) -> object:
    """ONNX Runtime options: ``threads`` intra-op threads that do not spin between runs (two sessions alternate on
    the same cores here: a spinning pool would steal the other session's time), profiling when a prefix is
    given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return options


def node_category(node: str, op_type: str, island_names: set[str]) -> str:
    """``island``, ``int8`` (an INT8 kernel), ``conversion`` (precision or layout only) or ``fp32`` (the rest)."""
    from pem.runtime.contract import PROTOTYPE_GATHER_OP

    if node in island_names or f"{PROTOTYPE_GATHER_OP}/" in node:
        return "island"
    if op_type in INT8_KERNELS:
        return "int8"
    return "conversion" if op_type in CONVERSION_OPS else "fp32"


def kernel_profiles(paths: dict[str, Path], feed: dict[str, np.ndarray], threads: int, island_names: set[str],
                    runs: int = 10) -> dict[str, dict[str, object]]:
    """Kernel time per run (ms) of each graph from ONNX Runtime's profiler (``runs`` alternating runs after one
    warm-up, as the timing does): in all, in the FP32 islands, by category (see :func:`node_category`) and by
    operator type (the 12 largest)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="pem-profile-") as folder:
        sessions = {name: ort.InferenceSession(str(path), session_options(threads, Path(folder) / name),
                                               providers=["CPUExecutionProvider"]) for name, path in paths.items()}
        for _ in range(runs + 1):
            for session in sessions.values():
                session.run(None, feed)
        events = {name: json.loads(Path(session.end_profiling()).read_text()) for name, session in sessions.items()}
    return {name: _summarize_profile(trace, island_names, runs + 1) for name, trace in events.items()}


def _summarize_profile(events: list[dict[str, object]], island_names: set[str], runs: int) -> dict[str, object]:
    """Per-run kernel milliseconds of a profiler trace of ``runs`` runs, in all, by category and by op type."""
    scale = 1e-3 / runs
    by_category = {"island": 0.0, "int8": 0.0, "conversion": 0.0, "fp32": 0.0}
    by_op: dict[str, float] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        op_type = event.get("args", {}).get("op_name", "?")
        by_category[node_category(name[: -len(KERNEL_SUFFIX)], op_type, island_names)] += event["dur"] * scale
        by_op[op_type] = by_op.get(op_type, 0.0) + event["dur"] * scale
    total = sum(by_category.values())
    largest = dict(sorted(by_op.items(), key=lambda item: -item[1])[:12])
    return {"kernel_ms": total, "island_ms": by_category["island"], "island_share": by_category["island"] / total,
            "by_category_ms": by_category, "largest_op_types_ms": largest}


def speedup_ceilings(fp32: dict[str, object], int8: dict[str, object]) -> dict[str, float]:
    """Upper bounds of the INT8 speed-up from the two kernel profiles: if every conversion op of the INT8 graph
    cost nothing, and if moreover all its FP32 work outside the islands cost nothing."""
    categories = int8["by_category_ms"]
    without_conversions = int8["kernel_ms"] - categories["conversion"]
    return {"no_conversion_ops": fp32["kernel_ms"] / without_conversions,
            "only_islands_and_int8_kernels": fp32["kernel_ms"] / (categories["island"] + categories["int8"])}


def time_interleaved(paths: dict[str, Path], feed: dict[str, np.ndarray], threads: int, rounds: int) -> dict[
        str, list[float]]:
    """Wall time (ms) of each graph, ``rounds`` alternating runs after 3 warm-up runs each."""
    import onnxruntime as ort

    sessions = {}
    for name, path in paths.items():
        sessions[name] = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        for _ in range(3):
            sessions[name].run(None, feed)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            samples[name].append(1e3 * (time.perf_counter() - start))
    return samples


def calibration_photos(count: int = 8) -> list[Path]:
    """The first ``count`` PNG photographs scikit-image ships that are at least 256 pixels high."""
    from skimage.data import data_dir

    from pem.calibration.images import list_images, load_rgb

    return [p for p in list_images(data_dir) if p.suffix == ".png" and load_rgb(p).shape[0] >= 256][:count]


def run(preset: str, imgsz: tuple[int, int], head: str, threads: int, rounds: int, work: Path) -> dict[str, object]:
    import onnx

    import pem
    from pem.calibration.images import load_rgb
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx
    from pem.export.precision.fp16 import Fp32Islands
    from pem.export.precision.int8 import quantize_to_int8
    from pem.export.precision.recipe import QuantRecipe
    from pem.export.precision.scopes import node_scopes
    from pem.runtime.predictor import Predictor

    fp32_path, int8_path = work / "fp32.onnx", work / "int8.onnx"
    model = pem.build_model(preset).eval()
    save_onnx(export_onnx(model, ExportOptions(head=head, imgsz=imgsz)), fp32_path)
    photos = calibration_photos()
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
    profiles = kernel_profiles({"fp32": fp32_path, "int8": int8_path}, feed, threads, island_names)
    speedup = medians["fp32"] / medians["int8"]
    return {
        "preset": preset, "imgsz": f"{imgsz[0]}x{imgsz[1]}", "head": head, "threads": threads, "rounds": rounds,
        "weights": "random initialisation (speed does not depend on the weights)",
        "calibration": [p.name for p in photos], "median_ms": medians, "samples_ms": samples,
        "int8_speedup": speedup, "int8_mac_share": outcome.coverage.int8_share, "macs": outcome.coverage.to_json(),
        "profiles": profiles, "speedup_ceilings": speedup_ceilings(profiles["fp32"], profiles["int8"]),
        "target_speedup": 1.8, "passed": speedup >= 1.8,
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
    name = f"int8_speed_{args.preset}_{record['imgsz']}_{args.head}_{args.threads}threads.json"
    (args.out / name).write_text(json.dumps(record, indent=2) + "\n")
    profiles = record["profiles"]
    threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
    print(f"{args.preset} {record['imgsz']} {args.head} head, {threads}, medians of {args.rounds}: "
          f"FP32 {record['median_ms']['fp32']:.1f} ms, INT8 {record['median_ms']['int8']:.1f} ms "
          f"-> {record['int8_speedup']:.2f}x (target 1.8x: {'PASS' if record['passed'] else 'FAIL'})")
    print(f"FP32 islands: {100 * profiles['fp32']['island_share']:.0f}% of FP32 kernel time "
          f"({profiles['fp32']['island_ms']:.1f} ms), {100 * profiles['int8']['island_share']:.0f}% of INT8 kernel "
          f"time ({profiles['int8']['island_ms']:.1f} ms); INT8 share of multiply-adds "
          f"{100 * record['int8_mac_share']:.1f}%")
    ceilings = record["speedup_ceilings"]
    print(f"ceilings from the profiles: {ceilings['no_conversion_ops']:.2f}x with free Q/DQ and layout ops, "
          f"{ceilings['only_islands_and_int8_kernels']:.2f}x with only the islands and INT8 kernels left; "
          f"wrote {args.out / name}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
