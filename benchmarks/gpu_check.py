"""The prepared GPU check: the fast PyTorch-CUDA path against the paper's setting, agreement and timings.

    python -m pem.benchmarks.gpu_check --smoke --weights tests/fixtures/synthetic_panoptic_tiny.pth --out /tmp/c
    python -m pem.benchmarks.gpu_check --weights cityscapes_r50.pth --out benchmarks/results   # CUDA, <= 6 min

Stages (the JSON is rewritten after each one, so a failure later leaves the earlier results and the error):
1. ``panoptic``: the checkpoint's preset at 1024x2048 (256x256 with ``--smoke``), batch 1.
   Paper mode = FP32 eager, TF32 off for matmul and cuDNN, cuDNN benchmark off, NCHW-contiguous input, the
   PyTorch reference kernels (``PEM_DISABLE_TRITON=1``), as the official code runs. The fast path = FP16 autocast
   with the model's FP32 regions, channels-last weights, CUDA graph, Triton kernels (bf16 autocast on the CPU). Both run
   the panoptic head through ``pem.runtime.Predictor``; each call gives the device time (CUDA events around the
   forward and fusion stage) and the end-to-end wall time, and each speed-up divides the same measure.
   Agreement: pixels in matching panoptic segments (``pem.benchmarks.agreement``), refused (null, with the reason)
   when the paper-mode result has fewer than 5 segments: random weights keep no query at the 0.8 threshold.
2. ``deform_conv``: the last deformable layer's real inputs (captured during the paper-mode forward; offsets from
   the trained offset conv, or N(0, 2 px) where the weights give all-zero offsets), reference kernel in FP32
   against the fast dispatcher in FP32 and in the fast path's precision.
3. ``semantic``: ``ade20k_semantic_r50`` at 512x512 (random weights: timing only), device time of the fast path.
``--weights`` is required outside ``--smoke``. Every setting and library version is in ``environment`` and in each
stage. The Triton kernel checks are the ``gpu``-marked tests (``pytest -m gpu``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pem.benchmarks.agreement import matched_pixel_agreement
from pem.benchmarks.environment import environment, torch_settings

MIN_SEGMENTS = 5
PAPER_MODE = {"precision": "fp32", "execution": "eager", "input": "NCHW-contiguous float32",
              "kernels": "PyTorch reference (PEM_DISABLE_TRITON=1)"}


@contextlib.contextmanager
def paper_mode() -> Iterator[dict[str, Any]]:
    """TF32 off (matmul and cuDNN), cuDNN benchmark off, ``PEM_DISABLE_TRITON=1``; restored on exit.

    Yields the settings read back inside the block (``environment.torch_settings`` plus the variable).
    """
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             os.environ.get("PEM_DISABLE_TRITON"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    os.environ["PEM_DISABLE_TRITON"] = "1"
    try:
        yield {**torch_settings(), "PEM_DISABLE_TRITON": os.environ["PEM_DISABLE_TRITON"]}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = \
            saved[:3]
        if saved[3] is None:
            os.environ.pop("PEM_DISABLE_TRITON", None)
        else:
            os.environ["PEM_DISABLE_TRITON"] = saved[3]


def test_image(preset: str, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """uint8 [H, W, 3]: a held-out synthetic scene for the synthetic presets, scikit-image's astronaut otherwise."""
    if preset.startswith("synthetic"):
        from pem.data.synthetic import synthetic_scene

        return synthetic_scene(np.random.default_rng(1712), size, 48)[0], "synthetic scene, seed 1712"
    from PIL import Image
    from skimage.data import data_dir

    with Image.open(Path(data_dir) / "astronaut.png") as image:
        return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)), "skimage astronaut.png"


def _timed_calls(predictor: Any, image: np.ndarray, iterations: int, warmup: int) -> tuple[Any, dict[str, float]]:
    """The last result and the medians of device time (backend compute) and end-to-end wall time, in ms."""
    for _ in range(warmup):
        predictor(image)
    device_ms, wall_ms = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        result = predictor(image)
        wall_ms.append((time.perf_counter() - start) * 1e3)
        device_ms.append(predictor.backend.last_timings["compute_ms"])
    return result, {"device_ms_median": statistics.median(device_ms),
                    "end_to_end_ms_median": statistics.median(wall_ms), "iterations": iterations}


def _fast_options(device: str) -> dict[str, Any]:
    """The fast path's backend options; on the CPU bf16 autocast only (bf16 channels-last convolutions are several
    times slower than NCHW on CPUs without native bf16; tests/kernels/test_cpu_rehearsal.py runs that combination)."""
    if device.startswith("cuda"):
        return {"precision": "fp16", "channels_last": True, "cuda_graph": True}
    return {"precision": "bf16"}


def panoptic_stage(weights: str, device: str, size: tuple[int, int], iterations: int, warmup: int,
                   captured: dict[str, Any]) -> dict[str, Any]:
    """Paper mode against the fast path on one image; fills ``captured`` with the deformable layer's inputs."""
    import torch

    from pem.export.torch_backend import TorchBackend
    from pem.runtime import Predictor

    with paper_mode() as settings:
        backend = TorchBackend(weights, head="panoptic", device=device)
        preset = backend.wrapper.model.config.name
        image, source = test_image(preset, size)
        stage: dict[str, Any] = {"preset": preset, "weights": weights, "size": list(size), "image": source}
        layer = backend.wrapper.model.pixel_decoder.deform_layers[-1].deform_conv

        def keep_inputs(module: Any, args: tuple[Any, ...], out: Any) -> None:
            captured.setdefault("args", (*args, module.weight))

        hook = layer.register_forward_hook(keep_inputs)
        layer_input = backend.wrapper.to_nchw(torch.from_numpy(image[None].copy()).to(device))
        with Predictor(backend, input_size=size) as paper:
            expected, paper_times = _timed_calls(paper, image, iterations, warmup)
        hook.remove()
        stage["paper_mode"] = {**PAPER_MODE, "settings": settings,
                               "input_nchw_contiguous": bool(layer_input.is_contiguous()), **paper_times}
    options = _fast_options(device)
    with Predictor(TorchBackend(weights, head="panoptic", device=device, **options), input_size=size) as fast:
        got, fast_times = _timed_calls(fast, image, iterations, warmup)
        stage["fast"] = {**options, "kernels": "Triton where dispatched", "settings": torch_settings(), **fast_times}
    stage["speedup_device"] = paper_times["device_ms_median"] / fast_times["device_ms_median"]
    stage["speedup_end_to_end"] = paper_times["end_to_end_ms_median"] / fast_times["end_to_end_ms_median"]
    stage["reference_segments"] = len(expected.segments)
    stage["fast_segments"] = len(got.segments)
    if len(expected.segments) < MIN_SEGMENTS:
        stage["agreement"] = None
        stage["agreement_refused"] = (f"the paper-mode result has {len(expected.segments)} segments (< {MIN_SEGMENTS}):"
                                      f" random or wrong weights; pass a trained checkpoint with --weights")
    else:
        stage["agreement"] = matched_pixel_agreement(expected.panoptic, got.panoptic)
    return stage


def _time_ms(fn: Callable[[], object], device: str, iterations: int) -> float:
    """Median milliseconds of ``fn()`` after one warm-up: CUDA events on the GPU, wall time on the CPU."""
    import torch

    fn()
    samples = []
    for _ in range(iterations):
        if device.startswith("cuda"):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def deform_stage(captured: dict[str, Any], device: str, iterations: int) -> dict[str, Any]:
    """Reference kernel (FP32) against ``deform_conv2d_fast`` (FP32 and the fast precision, FP32 weight as under
    autocast) on the captured inputs and weight of the last deformable layer."""
    import torch

    from pem.kernels import deform_conv2d_fast, use_triton
    from pem.ops import deform_conv2d, deform_conv2d_backend

    if "args" not in captured:
        raise RuntimeError("the deformable layer's inputs were not captured (the panoptic stage failed)")
    module_input, offset, mask, weight = (t.detach() for t in captured["args"])
    source = "trained offset conv"
    if float(offset.abs().max()) == 0.0:
        offset = torch.randn(offset.shape, generator=torch.Generator().manual_seed(0)).to(offset.device) * 2.0
        source = "N(0, 2 px): the weights give all-zero offsets"
    low = torch.float16 if device.startswith("cuda") else torch.bfloat16

    def run(fn: Callable[..., torch.Tensor], dtype: torch.dtype) -> Callable[[], torch.Tensor]:
        x, off, m = module_input.to(dtype), offset.to(dtype), mask.to(dtype)  # weight stays FP32, as under autocast
        return lambda: fn(x, off, weight, padding=(1, 1), mask=m)

    with torch.inference_mode():
        reference_ms = _time_ms(run(deform_conv2d, torch.float32), device, iterations)
        fast_fp32_ms = _time_ms(run(deform_conv2d_fast, torch.float32), device, iterations)
        fast_low_ms = _time_ms(run(deform_conv2d_fast, low), device, iterations)
        error = float((run(deform_conv2d_fast, low)().float() - run(deform_conv2d, torch.float32)()).abs().max())
    return {"shape": {"input": list(module_input.shape), "weight": list(weight.shape)}, "offsets": source,
            "offset_abs_mean_px": float(offset.abs().mean()), "reference_kernel": deform_conv2d_backend(),
            "triton_dispatched": use_triton(module_input, offset, weight), "reference_fp32_ms": reference_ms,
            "fast_fp32_ms": fast_fp32_ms, f"fast_{str(low).removeprefix('torch.')}_ms": fast_low_ms,
            "fast_low_precision_max_abs_error": error}


def semantic_stage(device: str, smoke: bool) -> dict[str, Any]:
    """Device time of the fast path's semantic head (random weights: timing only)."""
    from pem.export.torch_backend import TorchBackend

    preset, size = ("synthetic_panoptic_tiny", (128, 128)) if smoke else ("ade20k_semantic_r50", (512, 512))
    image, source = test_image(preset, size)
    options = _fast_options(device)
    feed = {"image": image[None], "orig_size": np.array(size, dtype=np.int64)}
    with TorchBackend(f"preset:{preset}", head="semantic", device=device, **options) as backend:
        for _ in range(0 if smoke else 20):
            backend.infer(feed)
        samples = []
        for _ in range(2 if smoke else 200):
            backend.infer(feed)
            samples.append(backend.last_timings["compute_ms"])
    return {"preset": preset, "size": list(size), "image": source, **options,
            "device_ms_median": statistics.median(samples), "iterations": len(samples)}


def _write(report: dict[str, Any], path: Path) -> None:
    """Atomically (temp file + rename) write the report as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(json.dumps(report, indent=2) + "\n")
    Path(handle.name).replace(path)


def check(device: str, smoke: bool, weights: str | None, path: Path) -> dict[str, Any]:
    """Run the stages, rewriting ``path`` after each; a failing stage records ``{"error": ...}`` and the rest run."""
    size, iterations, warmup = ((256, 256), 2, 0) if smoke else ((1024, 2048), 30, 5)
    report: dict[str, Any] = {"device": device, "smoke": smoke, "environment": environment()}
    captured: dict[str, Any] = {}
    stages: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("panoptic", lambda: panoptic_stage(weights or "preset:synthetic_panoptic_tiny", device, size, iterations,
                                            warmup, captured)),
        ("deform_conv", lambda: deform_stage(captured, device, iterations if smoke else 50)),
        ("semantic", lambda: semantic_stage(device, smoke)),
    ]
    for name, run in stages:
        try:
            report[name] = run()
        except Exception as error:  # recorded in the JSON: a borrowed GPU's minutes are not lost to one stage
            report[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
        _write(report, path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--smoke", action="store_true", help="256x256, 2 iterations, no warm-up (logic check)")
    parser.add_argument("--weights", help="trained checkpoint (pem-train/pem-convert output); required without "
                                          "--smoke. Without it --smoke uses random weights and refuses agreement")
    args = parser.parse_args(argv)
    if not args.smoke and not args.weights:
        parser.error("--weights is required outside --smoke (random weights give no segments to agree on)")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    name = re.sub(r"[^A-Za-z0-9]+", "_", card).strip("_").lower()
    path = args.out / f"gpu_check_{name}{'_smoke' if args.smoke else ''}.json"
    report = check(device, args.smoke, args.weights, path)
    print(json.dumps({k: v for k, v in report.items() if k != "environment"}, indent=2, default=str))
    print(f"wrote {path}")
    failed = [name for name, value in report.items() if isinstance(value, dict) and "error" in value]
    if failed:
        print(f"gpu_check: stage(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
