"""CUDA timing for the ``gpu`` kernel tests (printed; run pytest with ``-s`` to see the lines)."""
from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def cuda_milliseconds(fn: Callable[[], object], warmup: int = 3, repeats: int = 20) -> float:
    """Median time of ``fn()`` on the current CUDA stream in milliseconds (CUDA events, after warm-up)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def report(name: str, shape: str, timings: dict[str, float]) -> None:
    """Print one ``[timing]`` line naming the GPU, the case and each implementation's median milliseconds."""
    parts = ", ".join(f"{key} {value:.3f} ms" for key, value in timings.items())
    print(f"[timing] {torch.cuda.get_device_name()} | {name} {shape} | {parts}")
