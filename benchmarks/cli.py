"""``pem-bench``: latency, throughput and accuracy of PEM as users run it, across backends and precisions.

Every iteration decodes a real photograph (JPEG bytes), runs the runtime ``Predictor`` (resize, graph, fusion) and
records each stage; the backends report host-to-device, compute and device-to-host times. ``--compare`` measures
several backends/precisions in one invocation and prints ratios against the first: on shared, noisy machines only
figures measured together are comparable.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from pem.benchmarks.environment import environment
from pem.benchmarks.report import BenchRun, table, write_csv, write_json, write_plot
from pem.benchmarks.stats import spread_warning, summarize
from pem.export.precision.registry import FP32, graph_precisions, precision_modes, torch_precisions
from pem.runtime.backends import backend_names
from pem.runtime.destinations import check_destination
from pem.runtime.entry import command
from pem.runtime.errors import PemError
from pem.runtime.limits import MAX_IMAGE_SIDE, MIN_MODEL_SIDE, float_in, int_in, size_in

if TYPE_CHECKING:
    from pem.export.precision.registry import PrecisionRequest

@dataclass(frozen=True)
class RunSpec:
    """One configuration to measure: backend and precision (``--compare onnxruntime`` or ``torch:fp16``)."""

    backend: str
    precision: str

    @classmethod
    def parse(cls, text: str, default_precision: str) -> RunSpec:
        backend, _, precision = text.partition(":")
        if backend not in backend_names():
            raise BenchError(f"unknown backend {backend!r}; expected one of {', '.join(backend_names())}")
        return cls(backend, precision or default_precision)


MAX_BATCH = 256  # a 512x512 batch of 256 is 192 MiB of uint8 pixels before any activation


class BenchError(PemError, ValueError):
    """A configuration that cannot be measured; the message says why."""


def photo_bytes(source: str | None, size: tuple[int, int]) -> bytes:
    """JPEG bytes (quality 95) of a real photograph resized to ``size`` (default: scikit-image's astronaut)."""
    from pem.runtime.images import read_image, resolve_image_source
    from pem.runtime.preprocess import resize_to

    path = resolve_image_source("skimage:astronaut.png" if source is None else source)
    rgb = resize_to(read_image(path).image, size)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> [H, W, 3] uint8 RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def open_predictor(target: str, spec: RunSpec, args: argparse.Namespace, cache: Path) -> Any:
    """A runtime Predictor for ``target`` (ONNX file, checkpoint or preset name) on ``spec``'s backend."""
    from pem.runtime import Predictor

    size = args.imgsz
    if spec.backend == "tensorrt":
        return _engine_predictor(target, spec, args)
    if spec.backend == "torch":
        from pem.export.torch_backend import TorchBackend

        artifact = args.weights or (target if target.endswith((".pth", ".pt")) else f"preset:{target}")
        if target.endswith(".onnx"):
            raise BenchError("the torch backend takes a preset name or a checkpoint, not an ONNX file")
        try:
            backend = TorchBackend(artifact, head=args.head, device=args.device, precision=spec.precision,
                                   channels_last=args.device.startswith("cuda"))
        except ValueError as error:  # the backend's argument checks (precision, device)
            raise BenchError(str(error)) from None
        return Predictor(backend, input_size=size)
    if spec.backend != "onnxruntime":  # any other registered backend opens the artifact itself
        if spec.precision != FP32:
            raise BenchError(f"the {spec.backend} backend runs its artifact as it is: drop :{spec.precision}")
        return Predictor(target, backend=spec.backend, input_size=size)
    from pem.runtime.backends.onnxruntime import OnnxRuntimeBackend

    if target.endswith(".onnx") and not Path(target).is_file():
        raise BenchError(f"ONNX file not found: {target}")
    graph = Path(target) if target.endswith(".onnx") else export_cached(target, args, cache)
    graph = precision_graph(graph, spec.precision, args, cache)
    backend = OnnxRuntimeBackend(graph, providers=_providers(args.device), threads=args.threads)
    return Predictor(backend, input_size=size)


def precision_graph(graph: Path, precision: str, args: argparse.Namespace, cache: Path) -> Path:
    """``graph`` in ``precision``: itself when it already is, else made from it (FP16 pass, or INT8 calibrated on
    ``--calib-data``) and cached."""
    import onnx

    from pem.export.precision.apply import PrecisionRequest, apply_precision
    from pem.export.precision.registry import FP32, precision_mode
    from pem.runtime.contract import META_PRECISION
    from pem.runtime.metadata import read_metadata

    have = read_metadata(onnx.load(str(graph), load_external_data=False)).get(META_PRECISION, FP32)
    if have == precision:
        return graph
    if have != FP32 and precision == FP32:
        raise BenchError(f"{graph} is a {have} graph: pass --precision {have}")
    mode = precision_mode(precision)
    if have != FP32 or mode.graph_pass is None:
        raise BenchError(f"{graph} is a {have} graph; onnxruntime:{precision} needs an FP32 graph to convert "
                         f"(or a {precision} graph from pem-export --precision {precision})")
    request = _calibrated_request(args, precision) if mode.needs_calibration else PrecisionRequest(precision)
    derived = cache / f"{graph.stem}_{precision}{_calibration_tag(request)}.onnx"
    if derived.is_file() and derived.stat().st_mtime >= graph.stat().st_mtime:
        return derived
    with tempfile.TemporaryDirectory(prefix="pem-bench-") as work:
        model, _ = apply_precision(onnx.load(str(graph)), request, Path(work), None, progress=_quiet)
    onnx.save(model, str(derived))
    return derived


def _calibration_tag(request: PrecisionRequest) -> str:
    """A short digest of the calibration images (paths), so graphs calibrated on other images are not reused."""
    if not request.calibration_images:
        return ""
    listing = "\n".join(str(Path(p).resolve()) for p in request.calibration_images)
    return "_" + hashlib.sha256(listing.encode()).hexdigest()[:8]


def _calibrated_request(args: argparse.Namespace, precision: str) -> PrecisionRequest:
    """A calibrated precision (INT8) with its default recipe (min-max, the first --calib-images images of
    --calib-data)."""
    from pem.calibration.images import list_images, require_disjoint
    from pem.export.precision.registry import PrecisionRequest

    if args.calib_data is None:
        raise BenchError(f"onnxruntime:{precision} from an FP32 graph needs --calib-data DIR (calibration images)")
    images = tuple(list_images(args.calib_data, args.calib_images))
    if args.accuracy is not None:
        require_disjoint([("calibration", images), ("--accuracy", list_images(args.accuracy, args.accuracy_images))])
    return PrecisionRequest(precision, calibration_images=images)


def _quiet(line: str) -> None:
    """Progress lines of the precision passes are not shown during a benchmark."""


def _engine_predictor(target: str, spec: RunSpec, args: argparse.Namespace) -> Any:
    """A Predictor on a TensorRT engine file; its precision is the one it was built with (its manifest)."""
    from pem.runtime import Predictor

    if not target.endswith((".engine", ".plan")):
        raise BenchError("the tensorrt backend takes an engine from pem-export --format engine (.engine/.plan)")
    device = int(args.device.partition(":")[2] or 0)
    predictor = Predictor(target, backend="tensorrt", providers=[("tensorrt", {"device_id": device})],
                          input_size=args.imgsz)
    from pem.runtime.contract import META_PRECISION

    built = predictor.backend.metadata.get(META_PRECISION, FP32)
    if built != spec.precision:
        predictor.close()
        raise BenchError(f"{target} was built as {built}, not {spec.precision}: pass --precision {built}")
    return predictor


def _providers(device: str) -> list[str]:
    return ["cuda"] if device.startswith("cuda") else ["cpu"]


def export_cached(target: str, args: argparse.Namespace, cache: Path) -> Path:
    """Export ``target`` (preset name or checkpoint) to a static ONNX graph at ``--imgsz``, once per setting."""
    import pem
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx

    height, width = args.imgsz
    if target.endswith((".pth", ".pt")):
        from pem.export.torch_backend import load_model

        model = load_model(target)
    else:
        model = pem.build_model(target, args.weights).eval()
    dynamic = args.batch > 1  # the runtime's Predictor takes batch-1 static graphs; batches need a dynamic one
    path = cache / f"{model.config.name}_{args.head}_{height}x{width}{'_dynamic' if dynamic else ''}.onnx"
    if not path.is_file() or args.weights:
        options = ExportOptions(head=args.head, imgsz=(height, width), dynamic=dynamic)
        save_onnx(export_onnx(model, options), path)
    return path


def measure(step: Callable[[], dict[str, float]], warmup_ms: float, duration_s: float | None,
            iterations: int | None, min_iterations: int = 10) -> dict[str, list[float]]:
    """Warm up for ``warmup_ms`` (at least one call), then call ``step`` for ``duration_s`` or ``iterations``
    (at least ``min_iterations``); returns every stage's samples in ms."""
    started = time.perf_counter()
    step()
    while (time.perf_counter() - started) * 1e3 < warmup_ms:
        step()
    samples: dict[str, list[float]] = {}
    started = time.perf_counter()
    count = 0
    while True:
        for name, value in step().items():
            samples.setdefault(name, []).append(value)
        count += 1
        if iterations is not None:
            if count >= iterations:
                break
        elif count >= min_iterations and time.perf_counter() - started >= (duration_s or 0.0):
            break
    return samples


def predictor_step(predictor: Any, data: bytes) -> Callable[[], dict[str, float]]:
    """One end-to-end iteration: decode the photo bytes, run the predictor, read the stage timings."""

    def step() -> dict[str, float]:
        start = time.perf_counter()
        image = decode(data)
        decoded = time.perf_counter()
        result = predictor(image)
        end = time.perf_counter()
        t = result.timings
        return {"decode": (decoded - start) * 1e3, "preprocess": t["preprocess_ms"], "h2d": t["h2d_ms"],
                "compute": t["compute_ms"], "d2h": t["d2h_ms"], "postprocess": t["postprocess_ms"],
                "end_to_end": (end - start) * 1e3}

    return step


def batch_step(predictor: Any, data: bytes, batch: int) -> Callable[[], dict[str, float]]:
    """One iteration at batch N: decode and preprocess N copies of the photo, one backend call on the stacked
    feed, post-process each image. Stage times cover the whole batch."""
    from pem.runtime.contract import INPUT_ORIG_SIZE
    from pem.runtime.postprocess import postprocess

    def step() -> dict[str, float]:
        start = time.perf_counter()
        images = [decode(data) for _ in range(batch)]
        decoded = time.perf_counter()
        prepared = [predictor.preprocess(image) for image in images]
        feed = {name: value if name == INPUT_ORIG_SIZE else np.concatenate([f[name] for f, _ in prepared])
                for name, value in prepared[0][0].items()}
        preprocessed = time.perf_counter()
        outputs = predictor.backend.infer(feed)
        inferred = time.perf_counter()
        for index, (_, geometry) in enumerate(prepared):
            postprocess({k: v[index:index + 1] for k, v in outputs.items()}, predictor.metadata, geometry)
        end = time.perf_counter()
        t = predictor.backend.last_timings
        return {"decode": (decoded - start) * 1e3, "preprocess": (preprocessed - decoded) * 1e3,
                "h2d": t["h2d_ms"], "compute": t["compute_ms"], "d2h": t["d2h_ms"],
                "postprocess": (end - inferred) * 1e3, "end_to_end": (end - start) * 1e3}

    return step


def model_summary(target: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Parameters and GMACs (``pem-info``) of the measured preset at ``--imgsz``, when the preset is known."""
    from pem.config import list_presets
    from pem.info import model_info

    preset = target if target in list_presets() else None
    if preset is None and target.endswith((".pth", ".pt")):
        from pem.checkpoint import read_checkpoint

        preset = read_checkpoint(target).get("preset")
    if preset is None:
        return None
    info = model_info(preset, *args.imgsz)
    return {"preset": preset, "parameters": info.parameters, "gmacs": info.gmacs,
            "deformable_gmacs": info.deformable_gmacs}


def _peak_device_mib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20


def _reset_peak_device_memory(device: str) -> None:
    """Start a run's peak from zero (``--compare`` runs share the process and its CUDA allocator)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats(device)


def run_one(target: str, spec: RunSpec, args: argparse.Namespace, data: bytes, cache: Path) -> BenchRun:
    """Measure ``spec`` (and its accuracy with ``--accuracy``)."""
    _reset_peak_device_memory(args.device)
    predictor = open_predictor(target, spec, args, cache)
    with predictor:
        _check_batch(predictor, args.batch, target)
        step = predictor_step(predictor, data) if args.batch == 1 else batch_step(predictor, data, args.batch)
        samples = measure(step, args.warmup_ms, args.duration, args.iters)
        accuracy = None
        if args.accuracy is not None:
            from pem.metrics.predictor_accuracy import panoptic_folder_accuracy

            accuracy = panoptic_folder_accuracy(predictor, args.accuracy, args.accuracy_images)
            accuracy.pop("images")
        stages = {name: summarize(values) for name, values in samples.items()}
        label = f"{spec.backend} {spec.precision} {args.imgsz[0]}x{args.imgsz[1]} b{args.batch}"
        run = BenchRun(label, spec.backend, spec.precision, args.device, args.imgsz[0], args.imgsz[1], args.batch,
                       stages, peak_host_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       peak_device_mib=_peak_device_mib(args.device), accuracy=accuracy)
    warning = spread_warning(stages["end_to_end"])
    if warning:
        run.warnings.append(warning)
    return run


def _check_batch(predictor: Any, batch: int, target: str) -> None:
    """Refuse ``batch`` before any batch is built when the graph's image input fixes another batch size."""
    from pem.runtime.contract import IMAGE_INPUTS

    for tensor in predictor.backend.inputs:
        fixed = tensor.fixed(0) if tensor.name in IMAGE_INPUTS.values() else None
        if fixed is not None and fixed != batch:
            raise BenchError(f"--batch {batch}: {target} takes batch {fixed} only (export with --dynamic for others)")


def _check_batch_memory(batch: int, size: tuple[int, int]) -> None:
    """Refuse a batch whose host images alone exceed the memory budget (``PEM_MEMORY_BUDGET_MB``, shared with the
    runtime's fusion budget): per image the decoded and preprocessed uint8 RGB copies and a float32 feed (6 bytes
    a pixel and channel), before any activation."""
    from pem.runtime.resolution import MEMORY_BUDGET_ENV, memory_budget_mb

    budget = memory_budget_mb()
    needed = batch * size[0] * size[1] * 3 * (1 + 1 + 4)
    if needed > budget * 2**20:
        raise BenchError(f"--batch {batch} at {size[0]}x{size[1]} needs about {needed / 2**20:,.0f} MiB of host "
                         f"images, over the memory budget of {budget:,.0f} MiB ({MEMORY_BUDGET_ENV})")


def _check_target(target: str) -> None:
    """An ONNX target must be a readable PEM graph; an engine file needs ``--backend tensorrt``."""
    if target.endswith((".engine", ".plan")):
        raise BenchError(f"{target} is a TensorRT engine: measure it with --backend tensorrt")
    if target.endswith(".onnx"):
        from pem.export.onnx_input import read_pem_onnx

        read_pem_onnx(target, external_data=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pem-bench", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="ONNX artifact, checkpoint (.pth) or preset name")
    parser.add_argument("--backend", default="onnxruntime", choices=backend_names())
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default=FP32, choices=list(precision_modes()),
                        help="fp32 (default); torch backend: " + ", ".join(torch_precisions()) + "; onnxruntime: "
                        "the graph's own, or made from an FP32 graph: " + ", ".join(graph_precisions()))
    parser.add_argument("--imgsz", type=size_in(MIN_MODEL_SIDE, MAX_IMAGE_SIDE), default=(512, 512),
                        help=f"model input HxW, each side {MIN_MODEL_SIDE}..{MAX_IMAGE_SIDE} (default 512x512)")
    parser.add_argument("--batch", type=int_in(1, MAX_BATCH), default=1,
                        help=f"images per call, 1..{MAX_BATCH}; a static graph takes only its own batch (default 1)")
    parser.add_argument("--head", default="panoptic", choices=["raw", "semantic", "panoptic"])
    parser.add_argument("--weights", help="checkpoint for a preset target")
    parser.add_argument("--image", help="photograph to use (default: scikit-image's astronaut)")
    parser.add_argument("--warmup-ms", type=float_in(0.0, 600_000.0), default=500.0,
                        help="warm-up before timing, 0..600000 ms (at least one call; default 500)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--duration", type=float_in(0.0, 3600.0, low_open=True), default=3.0,
                       help="seconds of timed iterations, over 0 and up to 3600 (at least 10 iterations; default 3)")
    group.add_argument("--iters", type=int_in(1, 10**6), help="timed iterations instead of --duration, 1..1000000")
    parser.add_argument("--threads", type=int_in(1, 1024),
                        help="intra-op threads for torch and ONNX Runtime on the CPU, 1..1024")
    parser.add_argument("--compare", nargs="+", default=[], metavar="BACKEND[:PRECISION]",
                        help="more configurations measured in the same run; ratios are against the first")
    parser.add_argument("--accuracy", type=Path, help="COCO-panoptic folder: PQ/mIoU of every configuration")
    parser.add_argument("--accuracy-images", type=int_in(1, 10**6), help="use only the first N images of --accuracy")
    parser.add_argument("--calib-data", type=Path,
                        help="calibration images for onnxruntime:int8 made from an FP32 graph (disjoint from "
                             "--accuracy)")
    parser.add_argument("--calib-images", type=int_in(1, 10**5), default=32,
                        help="use the first N calibration images (1..100000; fewer than 16 warns)")
    parser.add_argument("--cache", type=Path, default=Path("outputs/bench_cache"), help="exported graphs")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--plot", type=Path)
    return parser


@command("pem-bench")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_batch_memory(args.batch, args.imgsz)
    for output in (args.json, args.csv, args.plot):
        if output is not None:
            check_destination(output, [args.target, args.weights, args.image])
    if args.backend != "tensorrt":
        _check_target(args.target)
    if args.threads:
        import os

        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if "torch" in sys.modules or args.backend == "torch" or any(c.startswith("torch") for c in args.compare):
            import torch

            torch.set_num_threads(args.threads)
    try:
        specs = [RunSpec(args.backend, args.precision)] + [RunSpec.parse(c, args.precision) for c in args.compare]
        data = photo_bytes(args.image, args.imgsz)
        args.cache.mkdir(parents=True, exist_ok=True)
        runs = []
        for spec in specs:
            runs.append(run_one(args.target, spec, args, data, args.cache))
            print(f"measured {runs[-1].label}", file=sys.stderr)
    except (PemError, ImportError) as error:  # expected failures and missing optional packages; bugs keep a trace
        print(f"pem-bench: error: {error}", file=sys.stderr)
        return error.exit_code if isinstance(error, PemError) else 2
    print(table(runs))
    command = "pem-bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.json:
        write_json(args.json, runs, {**environment(), "model": model_summary(args.target, args)}, command)
    if args.csv:
        write_csv(args.csv, runs)
    if args.plot:
        write_plot(args.plot, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
