"""Fusion resolutions (``pem-export --fusion-size original|input|mask``) on frames of growing size.

For one preset and head (default ``ade20k_semantic_stdc1``, semantic head, static 512x512, random weights: timing
and agreement do not need trained weights), exported once per mode plus a ``raw`` graph:

* time: one process, ONNX Runtime on the CPU with ``--threads`` threads, each mode on each frame size, the median of
  ``--iters`` calls after one warm-up, alternating with the raw graph's inference alone on the 512x512 feed (the
  reference, recorded beside each figure: load from other jobs falls on both). A frame that ``original`` refuses
  (memory budget) is recorded as refused.
* peak RSS: each (mode, size) in a fresh process that imports the runtime only (checked: torch not imported), one
  frame; ``--huge`` adds one larger frame (default 12000x12000, 144 MP) in every mode.
* agreement with ``original``: the share of identical semantic labels on each frame size ``original`` accepts.
* INT8 in ``mask`` mode: the raw graph and the ``mask`` graph quantized (``pem-export``'s INT8 pass), INT8/FP32
  speed-up of the raw graph alone and of the ``mask`` head end to end on the smallest frame, in one interleaved run.
* accuracy: the trained ``synthetic_panoptic_tiny`` fixture (torch backend, panoptic head) in each mode on held-out
  synthetic scenes (seed 12) generated at 2x and 4x its 256x256 size: PQ, mIoU, and the panoptic agreement with
  ``original`` after matching segments by overlap (``pem.benchmarks.agreement``).

``python -m pem.benchmarks.fusion_size`` writes ``benchmarks/results/fusion_size_<preset>_<threads>threads.json``;
``--reduced`` runs a small version (tiny preset exported at 64x64, small frames, no huge frame, one scale).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synthetic_panoptic_tiny.pth"
RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("original", "input", "mask")
SCENE_SEED = 12  # the held-out scenes of train_synthetic
SCENE_SIZE = 256


def _size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def frame(size: tuple[int, int]) -> np.ndarray:
    """A deterministic uint8 [H, W, 3] RGB frame of smooth gradients and stripes (any size, cheap to make)."""
    rows = np.linspace(0, 255, size[0], dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, size[1], dtype=np.float32)[None, :]
    image = np.empty((*size, 3), dtype=np.uint8)
    image[..., 0] = (rows + 0 * cols).astype(np.uint8)
    image[..., 1] = (cols + 0 * rows).astype(np.uint8)
    image[..., 2] = ((rows + cols) % 97 * 2.6).astype(np.uint8)
    return image


def child(artifact: str, size: tuple[int, int], threads: int) -> dict[str, Any]:
    """One frame in this (fresh) process: peak RSS in MiB, whether torch got imported, refusal message if any."""
    from pem.runtime import Predictor
    from pem.runtime.resolution import MemoryBudgetError

    image = frame(size)
    refused = None
    start = time.perf_counter()
    with Predictor(artifact, providers=["cpu"], threads=threads) as predictor:
        try:
            predictor(image)
        except MemoryBudgetError as error:
            refused = str(error)
    return {"rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - start,
            "torch_imported": "torch" in sys.modules, "refused": refused}


def peak_rss_mb() -> float:
    """This process's peak resident set in MiB: ``VmHWM`` of ``/proc/self/status`` (Linux). Not ``ru_maxrss``: a
    child started by fork + exec inherits its parent's maximum there (getrusage(2): the maximum is kept over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status (peak RSS is read on Linux only)")


def _export(preset: str, head: str, imgsz: tuple[int, int], work: Path) -> dict[str, Path]:
    """The raw graph and one graph per mode (random weights, seed 0)."""
    import torch

    import pem
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx

    torch.manual_seed(0)
    model = pem.build_model(preset).eval()
    paths = {}
    for name, spec in (("raw", {"head": "raw"}), *((m, {"head": head, "fusion_size": m}) for m in MODES)):
        paths[name] = work / f"{name}.onnx"
        save_onnx(export_onnx(model, ExportOptions(imgsz=imgsz, **spec)), paths[name])
    return paths


def interleaved_medians(calls: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median wall time (ms) of each call: one warm-up each, then ``rounds`` rounds calling each once in turn, so
    that load from other jobs on a shared machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in samples.items()}


def timing(paths: dict[str, Path], sizes: list[tuple[int, int]], imgsz: tuple[int, int], threads: int,
           iters: int) -> dict[str, Any]:
    """Medians per mode and size, the raw graph's median, and label agreement with ``original``."""
    import onnxruntime as ort

    from pem.runtime import Predictor
    from pem.runtime.resolution import MemoryBudgetError

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(paths["raw"]), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: frame(imgsz)[None]}

    def raw_call() -> None:
        session.run(None, feed)

    raw_medians = []
    rows: dict[str, Any] = {}
    labels: dict[tuple[str, tuple[int, int]], np.ndarray] = {}
    for mode in MODES:
        with Predictor(paths[mode], providers=["cpu"], threads=threads) as predictor:
            for size in sizes:
                key = f"{size[0]}x{size[1]}"
                image = frame(size)
                try:
                    labels[mode, size] = predictor(image).semantic
                except MemoryBudgetError as error:
                    rows.setdefault(mode, {})[key] = {"refused": str(error)}
                    continue
                medians = interleaved_medians({"raw": raw_call, "frame": lambda image=image: predictor(image)}, iters)
                raw_medians.append(medians["raw"])
                rows.setdefault(mode, {})[key] = {"median_ms": medians["frame"], "raw_graph_median_ms": medians["raw"]}
    for mode in MODES[1:]:
        for size in sizes:
            if ("original", size) in labels and (mode, size) in labels:
                same = float((labels[mode, size] == labels["original", size]).mean())
                rows[mode][f"{size[0]}x{size[1]}"]["label_agreement_with_original"] = same
    return {"raw_graph_median_ms": statistics.median(raw_medians), "modes": rows}


def int8_in_mask_mode(paths: dict[str, Path], imgsz: tuple[int, int], size: tuple[int, int], threads: int,
                      rounds: int, work: Path) -> dict[str, Any]:
    """INT8 against FP32 with the head in ``mask`` mode: the raw graph's inference alone on the ``imgsz`` feed and
    the ``mask`` graph end to end (``Predictor`` on a ``size`` frame), each quantized by ``pem-export``'s INT8 pass
    (min-max, ONNX Runtime target, 8 photographs); ``rounds`` alternating calls after a warm-up, medians."""
    import onnx
    import onnxruntime as ort

    from pem.benchmarks.int8_speed import calibration_photos
    from pem.export.precision.int8 import quantize_to_int8
    from pem.export.precision.recipe import QuantRecipe
    from pem.runtime import Predictor

    photos = calibration_photos()
    graphs = {}
    for name in ("raw", "mask"):
        graphs[name, "fp32"] = paths[name]
        graphs[name, "int8"] = work / f"{name}_int8.onnx"
        onnx.save(quantize_to_int8(paths[name], photos, QuantRecipe(calibration_images=len(photos))).model,
                  str(graphs[name, "int8"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    feed_image, image = frame(imgsz)[None], frame(size)
    calls: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for precision in ("fp32", "int8"):
            session = ort.InferenceSession(str(graphs["raw", precision]), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: feed_image}
            calls[f"raw_{precision}"] = lambda session=session, feed=feed: session.run(None, feed)
            predictor = stack.enter_context(Predictor(graphs["mask", precision], providers=["cpu"], threads=threads))
            calls[f"mask_{precision}"] = lambda predictor=predictor: predictor(image)
        medians = interleaved_medians(calls, rounds)
    raw_speedup = medians["raw_fp32"] / medians["raw_int8"]
    mask_speedup = medians["mask_fp32"] / medians["mask_int8"]
    return {"frame": f"{size[0]}x{size[1]}", "rounds": rounds, "median_ms": medians, "raw_int8_speedup": raw_speedup,
            "mask_end_to_end_int8_speedup": mask_speedup, "end_to_end_over_raw_speedup": mask_speedup / raw_speedup,
            "calibration": [p.name for p in photos]}


def memory(paths: dict[str, Path], sizes: list[tuple[int, int]], threads: int) -> dict[str, Any]:
    """Peak RSS of one frame per (mode, size), each in a fresh process."""
    rows: dict[str, Any] = {}
    for mode in MODES:
        for size in sizes:
            command = [sys.executable, "-m", "pem.benchmarks.fusion_size", "--child", str(paths[mode]),
                       f"{size[0]}x{size[1]}", "--threads", str(threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            key = f"{size[0]}x{size[1]}"
            if done.returncode != 0:
                rows.setdefault(mode, {})[key] = {"error": done.stderr.strip().splitlines()[-1:]}
                continue
            rows.setdefault(mode, {})[key] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def accuracy(work: Path, scales: tuple[int, ...], scenes: int) -> dict[str, Any]:
    """PQ/mIoU of the trained tiny fixture per mode on held-out scenes at each scale, and matched agreement."""
    from pem.benchmarks.agreement import matched_pixel_agreement
    from pem.data.synthetic import generate_synthetic_dataset
    from pem.export.torch_backend import TorchBackend
    from pem.metrics.predictor_accuracy import panoptic_folder_accuracy
    from pem.runtime import Predictor
    from pem.runtime.images import read_image

    out: dict[str, Any] = {}
    for scale in scales:
        size = (SCENE_SIZE * scale, SCENE_SIZE * scale)
        folder = generate_synthetic_dataset(work / f"scenes_{scale}x", scenes, size, SCENE_SEED)
        images = [read_image(p).image for p in sorted((folder / "images").glob("*.jpg"))]
        maps: dict[str, list[np.ndarray]] = {}
        row: dict[str, Any] = {}
        for mode in MODES:
            backend = TorchBackend(FIXTURE, head="panoptic", fusion_size=mode)
            with Predictor(backend) as predictor:
                row[mode] = panoptic_folder_accuracy(predictor, folder)
                maps[mode] = [predictor(image).panoptic for image in images]
        for mode in MODES[1:]:
            row[mode]["PQ_loss_vs_original"] = row["original"]["PQ"] - row[mode]["PQ"]
            row[mode]["matched_agreement_with_original"] = float(np.mean(
                [matched_pixel_agreement(a, b) for a, b in zip(maps["original"], maps[mode])]))
        out[f"{scale}x ({size[0]}x{size[1]})"] = row
    return out


def measure(paths: dict[str, Path], sizes: list[tuple[int, int]], imgsz: tuple[int, int], threads: int, iters: int,
            huge: tuple[int, int] | None, scales: tuple[int, ...], scenes: int, work: Path,
            memory_sizes: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Timing, memory, accuracy and the acceptance figures of the graphs ``paths`` (``raw`` and each mode).
    ``memory_sizes``: the frame sizes of the peak-RSS processes (None: ``sizes``), ``huge`` added."""
    result: dict[str, Any] = {"timing": timing(paths, sizes, imgsz, threads, iters)}
    result["int8_in_mask_mode"] = int8_in_mask_mode(paths, imgsz, sizes[0], threads, iters, work)
    result["memory"] = memory(paths, (sizes if memory_sizes is None else memory_sizes) + ([huge] if huge else []),
                              threads)
    result["accuracy"] = accuracy(work, scales, scenes)
    result["acceptance"] = checks(result, sizes, huge)
    return result


def checks(result: dict[str, Any], sizes: list[tuple[int, int]], huge: tuple[int, int] | None) -> dict[str, Any]:
    """The issue's acceptance figures for the default mode (``input``), as measured."""
    small, middle, large = (f"{s[0]}x{s[1]}" for s in (sizes[0], sizes[len(sizes) // 2], sizes[-1]))
    times = result["timing"]["modes"]["input"]
    figures: dict[str, Any] = {
        "input_large_over_small": times[large]["median_ms"] / times[small]["median_ms"],
        "input_middle_over_small": times[middle]["median_ms"] / times[small]["median_ms"],
        "input_small_over_raw_graph": times[small]["median_ms"] / times[small]["raw_graph_median_ms"],
        "input_large_peak_rss_mb": result["memory"]["input"].get(large, {}).get("rss_mb"),
    }
    figures["met"] = {
        "large_over_small_at_most_2.0": figures["input_large_over_small"] <= 2.0,
        "middle_over_small_at_most_1.5": figures["input_middle_over_small"] <= 1.5,
        "small_over_raw_at_most_1.3": figures["input_small_over_raw_graph"] <= 1.3,
        "large_rss_at_most_1536_mb": (figures["input_large_peak_rss_mb"] or 1e9) <= 1536,
        "mask_int8_end_to_end_at_least_0.9_of_raw": result["int8_in_mask_mode"]["end_to_end_over_raw_speedup"] >= 0.9,
        "input_pq_loss_at_most_1.0": all(row["input"]["PQ_loss_vs_original"] <= 1.0
                                         for row in result["accuracy"].values()),
    }
    if huge is not None:
        key = f"{huge[0]}x{huge[1]}"
        figures["huge_frame"] = {mode: result["memory"][mode].get(key) for mode in MODES}
        figures["met"]["huge_processed_in_input_and_mask"] = all(
            (result["memory"][mode].get(key) or {}).get("refused") is None
            and "rss_mb" in (result["memory"][mode].get(key) or {}) for mode in ("input", "mask"))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pem.benchmarks.fusion_size", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ade20k_semantic_stdc1")
    parser.add_argument("--head", default="semantic", choices=("semantic", "panoptic"))
    parser.add_argument("--imgsz", type=_size, default=(512, 512), help="static graph size (default 512x512)")
    parser.add_argument("--sizes", default="512x683,1080x1920,3000x4000", help="frame sizes, small to large")
    parser.add_argument("--huge", default="12000x12000", help="one more frame for peak RSS ('none' to skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=8, help="held-out scenes per scale")
    parser.add_argument("--scales", default="2,4")
    parser.add_argument("--reduced", action="store_true", help="tiny preset, small frames, no huge frame, 2 iters")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("ARTIFACT", "HxW"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], _size(args.child[1]), args.threads)))
        return 0
    if args.reduced:
        args.preset, args.imgsz, args.huge = "synthetic_panoptic_tiny", (64, 64), "none"
        args.sizes = "64x80,96x128,160x200"
        args.iters, args.scenes, args.scales = 2, 2, "2"
    sizes = [_size(s) for s in args.sizes.split(",")]
    huge = None if args.huge == "none" else _size(args.huge)
    from pem.benchmarks.environment import environment
    from pem.runtime.coco_panoptic import write_json_atomic

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pem-fusion-size-") as folder:
        work = Path(folder)
        paths = _export(args.preset, args.head, args.imgsz, work)
        result = measure(paths, sizes, args.imgsz, args.threads, args.iters, huge,
                         tuple(int(s) for s in args.scales.split(",")), args.scenes, work)
    result["setup"] = {"preset": args.preset, "head": args.head, "imgsz": list(args.imgsz), "threads": args.threads,
                       "iters": args.iters, "weights": "random (seed 0)", "backend": "onnxruntime CPU FP32",
                       "accuracy_model": "synthetic_panoptic_tiny fixture, torch backend", "reduced": args.reduced,
                       "command": " ".join(["python -m pem.benchmarks.fusion_size", *(argv or sys.argv[1:])]),
                       "seconds": round(time.perf_counter() - started, 1)}
    result["environment"] = environment()
    output = args.output or RESULTS / f"fusion_size_{args.preset}_{args.threads}threads.json"
    write_json_atomic(output, result)
    print(json.dumps(result["acceptance"], indent=1))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
