"""INT8 accuracy guard: PQ of the Q/DQ graph in ONNX Runtime against FP32 (and FP16), on held-out scenes.

    python -m pem.benchmarks.int8_accuracy [--out benchmarks/results] [--calibration 64] [--search 48] [--eval 48]

The trained ``synthetic_panoptic_tiny`` fixture is exported (panoptic head, 256x256), calibrated on one set of
synthetic scenes (seed 21), its blocks searched on a second (seed 22, budget 1.0 PQ) and everything evaluated on a
third (seed 12: the held-out set of ``train_synthetic``); the three sets are disjoint (checked by content).
Acceptance: FP32 PQ >= 45, INT8 loses <= 1.0 PQ, >= 80% of the conv/matmul multiply-adds in INT8.
Results: ``benchmarks/results/int8_accuracy_synthetic_panoptic_tiny.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synthetic_panoptic_tiny.pth"
SEEDS = {"calibration": 21, "search": 22, "evaluation": 12}
SIZE = (256, 256)


def run(calibration: int, search: int, evaluation: int, budget: float, work: Path) -> dict[str, object]:
    """Export, quantize with the search, evaluate FP32/FP16/INT8; returns the result record."""
    import onnx

    import pem
    from pem.calibration.images import list_images, require_disjoint
    from pem.data.synthetic import generate_synthetic_dataset
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx
    from pem.export.precision.fp16 import convert_to_fp16
    from pem.export.precision.int8 import quantize_to_int8
    from pem.export.precision.recipe import QuantRecipe
    from pem.metrics.predictor_accuracy import panoptic_folder_accuracy
    from pem.runtime.predictor import Predictor

    sets = {name: generate_synthetic_dataset(work / name, count, SIZE, SEEDS[name])
            for name, count in (("calibration", calibration), ("search", search), ("evaluation", evaluation))}
    require_disjoint([(name, list_images(folder)) for name, folder in sets.items()])
    model = pem.build_model("synthetic_panoptic_tiny", weights=str(FIXTURE))
    fp32_path = work / "fp32.onnx"
    save_onnx(export_onnx(model, ExportOptions(head="panoptic", imgsz=SIZE)), fp32_path)
    start = time.perf_counter()
    outcome = quantize_to_int8(fp32_path, list_images(sets["calibration"]), QuantRecipe(calibration_images=calibration),
                               search_data=sets["search"], budget=budget)
    quantize_seconds = time.perf_counter() - start
    print(outcome.search.table())
    paths = {"fp32": fp32_path, "fp16": work / "fp16.onnx", "int8": work / "int8.onnx"}
    onnx.save(convert_to_fp16(onnx.load(str(fp32_path)))[0], str(paths["fp16"]))
    onnx.save(outcome.model, str(paths["int8"]))
    scores = {}
    for precision, path in paths.items():
        with Predictor(path, providers=["cpu"]) as predictor:
            scores[precision] = panoptic_folder_accuracy(predictor, sets["evaluation"])
        print(f"{precision}: PQ {scores[precision]['PQ']:.2f}  mIoU {scores[precision]['mIoU']:.2f}")
    drop = scores["fp32"]["PQ"] - scores["int8"]["PQ"]
    checks = {"fp32_pq_at_least_45": scores["fp32"]["PQ"] >= 45.0, "int8_drop_at_most_1": drop <= 1.0,
              "int8_mac_share_at_least_80": outcome.coverage.int8_share >= 0.8}
    return {
        "scores": scores, "int8_pq_drop": drop, "fp16_pq_drop": scores["fp32"]["PQ"] - scores["fp16"]["PQ"],
        "int8_mac_share": outcome.coverage.int8_share, "macs": outcome.coverage.to_json(),
        "fp32_blocks": outcome.search.fp32_blocks, "search": outcome.search.to_json(),
        "quantize_and_search_seconds": quantize_seconds, "checks": checks, "passed": all(checks.values()),
        "images": {"calibration": calibration, "search": search, "evaluation": evaluation}, "seeds": SEEDS,
        "size": f"{SIZE[0]}x{SIZE[1]}", "recipe": outcome.details["recipe"],
    }


def main(argv: list[str] | None = None) -> int:
    from pem.benchmarks.environment import environment

    parser = argparse.ArgumentParser(prog="python -m pem.benchmarks.int8_accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--search", type=int, default=48)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pem-int8-accuracy-") as work:
        record = run(args.calibration, args.search, args.eval, args.budget, Path(work))
    record = {"benchmark": "int8_accuracy", "preset": "synthetic_panoptic_tiny", "environment": environment(),
              "command": "python -m pem.benchmarks.int8_accuracy " + " ".join(argv or sys.argv[1:]), **record}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "int8_accuracy_synthetic_panoptic_tiny.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"FP32 PQ {record['scores']['fp32']['PQ']:.2f}, INT8 drop {record['int8_pq_drop']:+.2f}, "
          f"INT8 share {100 * record['int8_mac_share']:.1f}% -> {'PASS' if record['passed'] else 'FAIL'}; wrote {path}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
