"""Time and peak memory of one PyTorch forward pass on the CPU, e.g. ``cityscapes_panoptic_r50`` at 1024x2048.

    python -m pem.benchmarks.cpu_forward --config cityscapes_panoptic_r50 --imgsz 1024x2048 --repeats 3

Each measurement runs in a fresh subprocess so that the peak resident memory (ru_maxrss) belongs to that forward
pass alone; the model's random initialisation does not change the time. Results go to ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pem.benchmarks.environment import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"


def _measure_once(config: str, height: int, width: int, threads: int) -> dict[str, float]:
    """Runs in the child process: build, forward without grad, report time and peak RSS."""
    import torch

    import pem

    torch.set_num_threads(threads)
    model = pem.build_model(config).eval()
    images = torch.rand(1, 3, height, width) * 255
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(images)
        seconds = time.perf_counter() - start
    assert torch.isfinite(out["pred_masks"]).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_rss_mib": peak / 1024, "rss_before_forward_mib": before / 1024}


def main(argv: list[str] | None = None) -> int:
    from pem.runtime.sizes import parse_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cityscapes_panoptic_r50")
    parser.add_argument("--imgsz", type=parse_size, default=(1024, 2048))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    height, width = args.imgsz
    if args.child:
        print(json.dumps(_measure_once(args.config, height, width, args.threads)))
        return 0
    runs = []
    for _ in range(args.repeats):
        command = [sys.executable, "-m", "pem.benchmarks.cpu_forward", "--child", "--config", args.config,
                   "--imgsz", f"{height}x{width}", "--threads", str(args.threads)]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"forward {runs[-1]['seconds']:.2f} s, peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    import torch

    report = {
        "benchmark": "cpu_forward", "config": args.config, "height": height, "width": width,
        "threads": args.threads, "machine": cpu_model(), "torch": torch.__version__,
        "seconds": [r["seconds"] for r in runs], "median_seconds": statistics.median(r["seconds"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "rss_before_forward_mib": max(r["rss_before_forward_mib"] for r in runs),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"cpu_forward_{args.config}_{height}x{width}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"median {report['median_seconds']:.2f} s, peak RSS {report['peak_rss_mib']:.0f} MiB -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
