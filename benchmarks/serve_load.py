"""Load on ``pem-serve`` over loopback: 1, 4, 8 concurrent clients x 250 requests, against one in-process Predictor.

``python -m pem.benchmarks.serve_load [--artifact X.onnx] [--requests 250]`` (main venv with tritonclient; the server
from ``.venv-serve/bin/pem-serve``). Saves ``benchmarks/results/serve_load_cpu.json``: per configuration the
throughput (frames/s), p50/p99 latency (ms), errors; server RSS (MB) at start and at the end; the reference.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pem.runtime.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "serve_load_cpu.json"


def _ports(count: int) -> list[int]:
    held = [socket.socket() for _ in range(count)]
    for s in held:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (tritonserver, the Python backend stubs), MB."""
    own = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout.split()
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return (int(own[0]) / 1024 if own else 0.0) + sum(_rss_mb(int(k)) for k in kids)


def _export_fixture(folder: Path) -> Path:
    import pem
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx

    model = pem.build_model("synthetic_panoptic_tiny", weights=str(REPO / "tests/fixtures/synthetic_panoptic_tiny.pth"))
    path = folder / "tiny_panoptic_128x128.onnx"
    save_onnx(export_onnx(model, ExportOptions(head="panoptic", imgsz=(128, 128))), path)
    return path


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads, server and reference (2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        artifact = args.artifact or _export_fixture(Path(folder))
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(8)]
        http, grpc, metrics = _ports(3)
        server = subprocess.Popen([str(REPO / ".venv-serve/bin/pem-serve"), str(artifact), "--http-port", str(http),
                                   "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads",
                                   str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ready = f"http://127.0.0.1:{http}/v2/models/pem_metadata/ready"
            for _ in range(120):
                try:
                    with urllib.request.urlopen(ready, timeout=2):
                        break
                except OSError:
                    time.sleep(0.5)
            local = Predictor(artifact, threads=args.threads)
            remote = Predictor(f"http://127.0.0.1:{http}/pem")
            reference = _load(local, frames, 1, args.requests)
            _load(remote, frames, 1, 100)
            rss_start = _rss_mb(server.pid)
            runs = [_load(remote, frames, clients, args.requests) for clients in (1, 4, 8)]
            rss_end = _rss_mb(server.pid)
        finally:
            server.terminate()
            code = server.wait(60)
    report = {"machine": "2-core AMD EPYC shared VM, CPU only", "artifact": "synthetic_panoptic_tiny 128x128 ONNX FP32",
              "frame": [128, 128, 3], "onnxruntime_threads": args.threads, "in_process_reference": reference,
              "served": runs, "server_rss_mb_after_first_100": round(rss_start, 1),
              "server_rss_mb_end": round(rss_end, 1), "server_exit_code_after_sigterm": code,
              "served_8_clients_vs_in_process": round(runs[-1]["throughput_fps"] / reference["throughput_fps"], 3)}
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
