"""Load on ``pem-serve`` over loopback: 1, 4, 8 concurrent clients x 250 requests, against one in-process Predictor.

``python -m pem.benchmarks.serve_load [--artifact X.onnx | --graph batch|static|dynamic] [--requests 250]
[--reference-requests 1000] [--threads 1,2] [--server-threads 1] [--instances 2] [--max-batch 8]
[--max-queue-delay-us 2000] [--json OUT]`` (main venv with tritonclient; the server from
``.venv-serve/bin/pem-serve``). Without ``--artifact`` the trained tiny fixture is exported at 128x128, the frames'
size: ``batch`` (default) with a free batch axis and fusion size ``input``, so Triton's batched requests run as one
graph batch; ``static`` with batch 1 and fusion size ``original`` (requests of one call run one after another);
``dynamic`` with free batch/height/width and fusion size ``input`` (its pre-processing resizes a 128x128 frame to the
preset's 256x256, so a frame costs more).

The reference is the same frames through one in-process Predictor on the same artifact, one caller, for each of
``--threads``, measured before and after the served runs (the machine may be shared); the ratio divides by the
fastest of these. Then ``--pairs`` rounds each run the most clients' load and, right after it, the reference at
each thread count: a ratio of figures seconds apart (the median is kept), steadier than one of minutes apart on a
shared machine. Saves (default ``benchmarks/results/serve_load_cpu.json``): the configuration, the 1-minute load
average at start and end (other work on the machine moves every figure), per run the throughput (frames/s), p50/p99
latency (ms), errors, the mean batch Triton ran (its Prometheus counters) and the server's RSS (MB) after it; the
RSS after the first 100 requests; the exit code after SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pem.runtime.backends.tritonserver import free_ports, wait_until_ready
from pem.runtime.coco_panoptic import write_json_atomic
from pem.runtime.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "serve_load_cpu.json"
MODEL = "pem"


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (tritonserver, the Python backend stubs), MB."""
    own = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout.split()
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return (int(own[0]) / 1024 if own else 0.0) + sum(_rss_mb(int(k)) for k in kids)


GRAPHS = {  # --graph: export options of the fixture and how the JSON describes them
    "batch": ({"dynamic_batch": True, "fusion_size": "input"}, "128x128, free batch, fusion size input"),
    "static": ({}, "128x128 static, batch 1, fusion size original"),
    "dynamic": ({"dynamic": True, "fusion_size": "input"}, "free batch/height/width, fusion size input"),
}


def _export_fixture(folder: Path, graph: str) -> Path:
    import pem
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx

    model = pem.build_model("synthetic_panoptic_tiny", weights=str(REPO / "tests/fixtures/synthetic_panoptic_tiny.pth"))
    path = folder / f"tiny_panoptic_128x128_{graph}.onnx"
    save_onnx(export_onnx(model, ExportOptions(head="panoptic", imgsz=(128, 128), **GRAPHS[graph][0])), path)
    return path


def _triton_counts(metrics_url: str) -> tuple[float, float]:
    """(requests answered, model executions) of the frame model from Triton's Prometheus text."""
    with urllib.request.urlopen(metrics_url, timeout=5) as answer:
        text = answer.read().decode()

    def counter(name: str) -> float:
        found = re.search(rf'^{name}{{model="{MODEL}",version="1"}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return counter("nv_inference_request_success"), counter("nv_inference_exec_count")


def _load(predictor: Predictor, frames: list[np.ndarray], clients: int, requests: int) -> dict[str, float]:
    """``clients`` threads each sending ``requests`` frames through ``predictor``; throughput and latencies."""
    def run(worker: int) -> tuple[list[float], int]:
        latencies, errors = [], 0
        for i in range(requests):
            start = time.perf_counter()
            try:
                predictor(frames[(worker + i) % len(frames)])
            except Exception:  # counted, not raised: the figure is the error count
                errors += 1
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(run, range(clients)))
    wall = time.perf_counter() - start
    latencies = np.concatenate([np.array(d[0]) for d in done])
    return {"clients": clients, "requests": clients * requests, "wall_s": round(wall, 2),
            "throughput_fps": round(clients * requests / wall, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2), "errors": sum(d[1] for d in done)}


def _served(remote: Predictor, frames: list[np.ndarray], clients: int, requests: int, metrics_url: str,
            server_pid: int) -> dict[str, float]:
    """One served run, with the mean batch Triton executed during it and the server's RSS after it."""
    answered, executed = _triton_counts(metrics_url)
    run = _load(remote, frames, clients, requests)
    answered_after, executed_after = _triton_counts(metrics_url)
    executions = executed_after - executed
    run["mean_batch"] = round((answered_after - answered) / executions, 2) if executions else 0.0
    run["server_rss_mb_after"] = round(_rss_mb(server_pid), 1)
    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=None, help="artifact to serve (default: export the fixture)")
    parser.add_argument("--graph", choices=sorted(GRAPHS), default="batch", help="the fixture's export without "
                        "--artifact (module docstring; batch)")
    parser.add_argument("--requests", type=int, default=250, help="requests per client (250)")
    parser.add_argument("--reference-requests", type=int, default=1000, help="requests of each in-process reference "
                        "run (1000)")
    parser.add_argument("--clients", default="1,4,8", help="concurrent clients of each served run (1,4,8)")
    parser.add_argument("--threads", default="1,2", help="onnxruntime threads of the reference, comma list: each "
                        "is measured and the fastest is the reference (1,2)")
    parser.add_argument("--server-threads", type=int, default=1, help="onnxruntime threads of each server instance "
                        "(1)")
    parser.add_argument("--instances", type=int, default=2, help="pem-serve --instances (2)")
    parser.add_argument("--max-batch", type=int, default=8, help="pem-serve --max-batch (8)")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000, help="pem-serve --max-queue-delay-us (2000)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the most clients' served run followed by "
                        "the in-process reference, for ratios of runs seconds apart (3)")
    parser.add_argument("--json", type=Path, default=RESULT, help="where the figures go")
    parser.add_argument("--machine", default="2-core AMD EPYC shared VM, CPU only", help="stored with the figures")
    return parser


def main() -> None:
    """Run the load benchmark (module docstring) and save its JSON."""
    args = _parser().parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    clients = [int(c) for c in args.clients.split(",")]
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        artifact = args.artifact or _export_fixture(Path(folder), args.graph)
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(8)]
        http, grpc, metrics = free_ports(3)
        log = Path(folder) / "server.log"
        command = [str(REPO / ".venv-serve/bin/pem-serve"), str(artifact), "--http-port", str(http), "--grpc-port",
                   str(grpc), "--metrics-port", str(metrics), "--threads", str(args.server_threads), "--instances",
                   str(args.instances), "--max-batch", str(args.max_batch), "--max-queue-delay-us",
                   str(args.max_queue_delay_us)]
        with log.open("w") as log_file:
            server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(f"http://127.0.0.1:{http}/v2/models/{MODEL}_metadata/ready", 60,
                             lambda: server.poll() is None)
            local = {count: Predictor(artifact, threads=count) for count in threads}
            graph_input = list(local[threads[0]].preprocess(frames[0])[1].resized)
            remote = Predictor(f"http://127.0.0.1:{http}/{MODEL}")
            metrics_url = f"http://127.0.0.1:{metrics}/metrics"
            before = {count: _load(predictor, frames, 1, args.reference_requests)
                      for count, predictor in local.items()}
            _load(remote, frames, 1, 100)
            rss_start = _rss_mb(server.pid)
            runs = [_served(remote, frames, count, args.requests, metrics_url, server.pid) for count in clients]
            pairs = []
            for _ in range(args.pairs):
                served = _served(remote, frames, clients[-1], args.requests, metrics_url, server.pid)
                reference = {count: _load(predictor, frames, 1, args.reference_requests)["throughput_fps"]
                             for count, predictor in local.items()}
                pairs.append({"served_fps": served["throughput_fps"], "errors": served["errors"],
                              "mean_batch": served["mean_batch"], "server_rss_mb_after": served["server_rss_mb_after"],
                              "in_process_fps": {f"threads_{count}": fps for count, fps in reference.items()},
                              "ratio": round(served["throughput_fps"] / max(reference.values()), 3)})
            after = {count: _load(predictor, frames, 1, args.reference_requests)
                     for count, predictor in local.items()}
            remote.close()
            for predictor in local.values():
                predictor.close()
        finally:
            server.terminate()
            code = server.wait(60)
        used = re.search(r"max batch (\d+)\)", log.read_text())
    best = max(run["throughput_fps"] for run in [*before.values(), *after.values()])
    report = {
        "machine": args.machine,
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "artifact": str(args.artifact) if args.artifact else
        f"synthetic_panoptic_tiny ONNX FP32, {GRAPHS[args.graph][1]}",
        "frame": [128, 128, 3], "graph_input": graph_input,
        "server": {"instances": args.instances, "onnxruntime_threads": args.server_threads,
                   "max_batch": args.max_batch,
                   "max_batch_used": int(used.group(1)) if used else None,
                   "max_queue_delay_us": args.max_queue_delay_us, "client": "Predictor over HTTP, raw uint8 pixels"},
        "in_process_reference": {"callers": 1, "best_fps": best,
                                 **{f"threads_{count}": {"before": before[count], "after": after[count]}
                                    for count in threads}},
        "served": runs, "server_rss_mb_after_first_100": round(rss_start, 1),
        "server_rss_mb_end": (pairs[-1] if pairs else runs[-1])["server_rss_mb_after"],
        "server_exit_code_after_sigterm": code,
        "served_vs_in_process": {str(run["clients"]): round(run["throughput_fps"] / best, 3) for run in runs},
        "paired_rounds": {"clients": clients[-1], "rounds": pairs,
                          "median_ratio": float(np.median([p["ratio"] for p in pairs])) if pairs else None}}
    write_json_atomic(args.json, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
