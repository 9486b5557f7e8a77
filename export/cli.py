"""``pem-export``: export a PEM preset to ONNX (FP32, FP16 or INT8), check it against PyTorch, write it atomically.

    pem-export --config NAME [--weights W] [--format onnx] [--head raw|semantic|panoptic] --imgsz HxW
               [--dynamic | --dynamic-batch] [--batch N] [--input uint8|float] [--opset 19] [--no-simplify]
               --output PATH
               [--check-image PATH|skimage:NAME] [--skip-check] [--object-mask-threshold T] [--overlap-threshold T]
               [--precision fp32|fp16|int8|...] [--fp32-ops A,B] [--fp32-scope REGEX ...]
               [--calib-data DIR] [--calib-method minmax|percentile|entropy] [--calib-images N] [--int8-target T]
               [--search-data DIR] [--accuracy-budget POINTS] [--search-images N] [--report OUT.json]
    pem-export --onnx FP32.onnx --precision fp16|int8 ... --output PATH      (torch-free: from an FP32 export)
    pem-export ... --format engine [--verify] [--trt-verbose]   (--verify: the engine against ONNX Runtime first)
    pem-export --trt-doctor      (TensorRT, CUDA, cuda-python, Triton, GPU, plugins, a tiny engine; exit 1 on a failure)

Exit status: 0 written (and checked), 2 bad arguments or inputs, a failed export or a failed parity check; then one
line on stderr says why and nothing is written to the output path.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pem.export.precision.fp16 import DEFAULT_FP32_OPS, DEFAULT_FP32_SCOPES
from pem.export.precision.recipe import CALIBRATION_METHODS, INT8_TARGETS
from pem.export.precision.registry import FP32, graph_precisions, precision_mode, precision_modes
from pem.export.tensorrt.verify import TOLERANCE_HELP
from pem.runtime.contract import DEFAULT_FUSION_SIZE, FUSION_SIZES, HEADS
from pem.runtime.destinations import check_destination
from pem.runtime.entry import command
from pem.runtime.errors import PemError
from pem.runtime.limits import MAX_IMAGE_SIDE, MIN_MODEL_SIDE, int_in, size_in

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from pem.export.precision.registry import PrecisionRequest
    from pem.export.tensorrt.engine_builder import EngineOptions
    from pem.modeling.pem_model import PEM
    from pem.runtime.engine_manifest import EngineManifest

INPUT_CHOICES = {"uint8": "uint8_nhwc", "float": "float_nchw"}
DEFAULT_CHECK_IMAGE = "skimage:astronaut.png"


class CliError(PemError):
    """A problem reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``pem-export``."""
    parser = _Parser(prog="pem-export", description="Export a PEM model to ONNX and check it against PyTorch.")
    source = parser.add_argument_group("source")
    source.add_argument("--config", help="preset, e.g. cityscapes_panoptic_r50 (a bad name lists all)")
    source.add_argument("--weights", help="checkpoint from pem-convert or pem-train (default: random weights)")
    source.add_argument("--onnx", type=Path, help="start from this FP32 ONNX export instead of a preset (no torch)")
    graph = parser.add_argument_group("graph")
    graph.add_argument("--format", default="onnx", choices=["onnx", "engine"],
                       help="onnx, or a TensorRT engine built on this machine's GPU (needs TensorRT)")
    graph.add_argument("--head", default="raw", choices=HEADS, help="graph outputs (default raw)")
    graph.add_argument("--imgsz", type=size_in(MIN_MODEL_SIDE, MAX_IMAGE_SIDE),
                       help=f"HxW input size of a static graph, example size of a dynamic one; each side "
                            f"{MIN_MODEL_SIDE}..{MAX_IMAGE_SIDE} px ({MIN_MODEL_SIDE}: the backbone's deepest stride)")
    graph.add_argument("--fusion-size", default=DEFAULT_FUSION_SIZE, choices=FUSION_SIZES,
                       help="resolution of the semantic/panoptic fusion: original (the official chain, exact, memory "
                            "grows with the camera), input (the network's input, default), mask (1/4 of it)")
    free = graph.add_mutually_exclusive_group()
    free.add_argument("--dynamic", action="store_true", help="free batch, height and width")
    free.add_argument("--dynamic-batch", action="store_true", help="free batch only, height and width fixed at "
                      "--imgsz (what a server's dynamic batching and TensorRT batch profiles need)")
    graph.add_argument("--batch", type=int_in(1, 256), default=1,
                       help="batch size of a static graph, 1..256 (default 1)")
    graph.add_argument("--input", default="uint8", choices=sorted(INPUT_CHOICES),
                       help="uint8: image uint8 [B,h,w,3] RGB (default); float: float32 [B,3,h,w] in 0..255")
    graph.add_argument("--opset", type=int, default=19, help="ONNX opset (>= 19, default 19)")
    graph.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    graph.add_argument("--object-mask-threshold", type=float,
                       help="override the preset's panoptic keep threshold (stored in the metadata)")
    graph.add_argument("--overlap-threshold", type=float,
                       help="override the preset's panoptic overlap threshold (stored in the metadata)")
    parser.add_argument("--output", required=True, type=Path, help="the file to write")
    parser.add_argument("--check-image", default=DEFAULT_CHECK_IMAGE,
                        help=f"photograph for the parity check: a path or skimage:NAME (default {DEFAULT_CHECK_IMAGE})")
    parser.add_argument("--skip-check", action="store_true", help="write without the parity check")
    precision = parser.add_argument_group("precision")
    modes = precision_modes()
    precision.add_argument("--precision", default=FP32, choices=graph_precisions(),
                           help="baked into the graph (default fp32): " + "; ".join(
                               f"{name}: {modes[name].summary}" for name in graph_precisions()))
    precision.add_argument("--fp32-ops", help=f"op types kept in FP32 (default {','.join(DEFAULT_FP32_OPS)})")
    precision.add_argument("--fp32-scope", action="append",
                           help="regular expression of module paths kept in FP32 (repeatable; replaces the defaults "
                                f"{' '.join(repr(p) for p in DEFAULT_FP32_SCOPES)})")
    int8 = parser.add_argument_group("int8")
    int8.add_argument("--calib-data", type=Path, help="folder of calibration images (or a COCO-panoptic dataset)")
    int8.add_argument("--calib-method", default="minmax", choices=CALIBRATION_METHODS, help="default minmax")
    int8.add_argument("--calib-images", type=int, default=32, help="use the first N images by name (default 32)")
    int8.add_argument("--calib-percentile", type=float, default=99.999, help="for --calib-method percentile")
    int8.add_argument("--int8-target", choices=INT8_TARGETS,
                      help="onnxruntime: uint8 activations; tensorrt: symmetric int8 activations (default: tensorrt "
                           "for --format engine, else onnxruntime)")
    int8.add_argument("--search-data", type=Path,
                      help="COCO-panoptic folder for the per-block sensitivity search (disjoint from --calib-data)")
    int8.add_argument("--accuracy-budget", type=float, default=1.0,
                      help="largest PQ (panoptic) or mIoU drop in points the search accepts (default 1.0)")
    int8.add_argument("--search-images", type=int, help="use the first N search images (default all)")
    parser.add_argument("--report", type=Path, help="write the precision report (JSON) here")
    engine = parser.add_argument_group("engine (--format engine)")
    engine.add_argument("--shapes", help="optimization profile min,opt,max, each BxHxW or HxW (dynamic graphs)")
    engine.add_argument("--orig-sizes", help="range min,opt,max (HxW) of original image sizes the engine accepts")
    engine.add_argument("--workspace", type=int, help="TensorRT workspace limit in MiB")
    engine.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file, read and updated")
    engine.add_argument("--no-plugins", action="store_true",
                        help="TensorRT's own DeformConv and the PrototypeGather ONNX function instead of our plugins")
    engine.add_argument("--skip-lint", action="store_true",
                        help="build without first linting the graph for the installed TensorRT (a warning says so; "
                             "by default lint errors stop the build with exit 2)")
    engine.add_argument("--verify", action="store_true",
                        help="compare the engine with ONNX Runtime on the check image through Polygraphy before "
                             f"writing it (exit 2 and nothing written when it fails). {TOLERANCE_HELP}")
    engine.add_argument("--trt-verbose", action="store_true",
                        help="keep TensorRT's verbose log and print it when parsing or building fails")
    parser.add_argument("--trt-doctor", action="store_true",
                        help="print TensorRT, CUDA driver/runtime, cuda-python, Triton, GPU, whether PEM's plugins "
                             "register, then build and verify a tiny engine: one block for a bug report (exit 0: all "
                             "passed, 1: a probe failed; needs no other option)")
    return parser


@command("pem-export")
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pem-export``; returns the exit status (also for --help and argument errors).

    ``pem-export --check MODEL.onnx --trt-version X.Y [--json OUT] [--plugin NS::NAME]`` lints an ONNX model against
    the TensorRT operator support of that release instead (``pem.export.trt_support``; exit 1 when it finds errors).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--trt-doctor" in arguments and "--help" not in arguments and "-h" not in arguments:
        from pem.export.tensorrt.doctor import main as doctor_main

        return doctor_main()
    if "--check" in arguments:
        from pem.export.trt_support.cli import main as check_main

        return check_main([a for a in arguments if a != "--check"])
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as done:
        return int(done.code or 0)
    args.argv = arguments
    try:
        _run(args)
    except CliError as error:
        print(f"pem-export: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> None:
    from pem.calibration.images import CalibrationDataError
    from pem.export._deps import MissingDependencyError
    from pem.export.errors import ExportError
    from pem.export.precision.apply import PrecisionError, apply_precision
    from pem.export.precision.recipe import RecipeError

    _check_arguments(args)
    check_destination(args.output, [args.onnx, args.weights])
    if args.report is not None:
        check_destination(args.report, [args.onnx, args.weights, args.output], what="--report")
    engine_options = _engine_options(args) if args.format == "engine" else None
    try:
        image = None if args.skip_check else _load_image(args.check_image)
        fp32 = _fp32_graph(args, image)
        request = _precision_request(args)
        with tempfile.TemporaryDirectory(prefix="pem-export-") as work:
            proto, report = apply_precision(fp32, request, Path(work), image)
            if args.format == "engine":
                _lint_for_engine(proto, args.skip_lint)
                onnx_path = Path(work) / "model.onnx"
                onnx_path.write_bytes(proto.SerializeToString())
                _build_engine(onnx_path, args, engine_options)
            else:
                _save(proto, args.output)
        if args.report is not None:
            from pem.runtime.coco_panoptic import write_json_atomic

            write_json_atomic(args.report, report)
    except (ExportError, PrecisionError, CalibrationDataError, RecipeError, MissingDependencyError) as error:
        raise CliError(str(error)) from None
    size = args.output.stat().st_size / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB, {args.precision})")


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse contradictory or incomplete combinations before any work is done."""
    if (args.config is None) == (args.onnx is None):
        raise CliError("give either --config NAME (export from PyTorch) or --onnx FP32.onnx")
    if args.onnx is not None:
        if not args.onnx.is_file():
            raise CliError(f"ONNX model not found: {args.onnx}")
        if args.weights is not None:
            raise CliError("--weights goes with --config, not with --onnx")
    else:
        _check_preset(args.config)
        if args.imgsz is None:
            raise CliError("--imgsz HxW is required when exporting from --config")
        if args.weights is not None and not Path(args.weights).is_file():
            raise CliError(f"weights not found: {args.weights}")
    if args.format != "engine":
        engine_given = [name for name, value in (("--shapes", args.shapes), ("--orig-sizes", args.orig_sizes),
                        ("--workspace", args.workspace), ("--timing-cache", args.timing_cache)) if value is not None]
        engine_given += [name for name, value in (("--no-plugins", args.no_plugins), ("--verify", args.verify),
                         ("--trt-verbose", args.trt_verbose)) if value]
        if engine_given:
            raise CliError(f"{', '.join(engine_given)} only apply to --format engine")
    if args.skip_lint and args.format != "engine":
        raise CliError("--skip-lint only applies to --format engine")
    int8_options = {"--calib-data": args.calib_data, "--search-data": args.search_data}
    if not precision_mode(args.precision).needs_calibration:
        given = [name for name, value in int8_options.items() if value is not None]
        if given:
            raise CliError(f"{', '.join(given)} only apply to a calibrated precision (int8), not {args.precision}")
    elif args.calib_data is None:
        raise CliError(f"--precision {args.precision} needs --calib-data DIR (calibration images)")


def _engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options, validated (and TensorRT found) before the slow export."""
    from pem.export.tensorrt.engine_builder import EngineOptions

    options = EngineOptions(
        precision=args.precision, shapes=args.shapes, orig_sizes=args.orig_sizes, workspace_mb=args.workspace,
        timing_cache=args.timing_cache, plugins=not args.no_plugins,
        command=shlex.join(["pem-export", *args.argv]), verbose=args.trt_verbose,
    )
    from pem.runtime.backends.tensorrt import import_tensorrt

    try:
        options.validate()
        import_tensorrt()  # fail before the export when TensorRT is missing
    except (ValueError, ImportError) as error:
        raise CliError(str(error)) from None
    return options


def _lint_for_engine(proto: onnx.ModelProto, skip: bool, trt_version: str | None = None) -> None:
    """Lint the graph for the installed TensorRT (``trt_version`` when given) before it parses it; errors print
    the lint's table on stderr and stop with exit 2."""
    from pem.export.trt_support.gate import LintRefusal, lint_before_build

    if trt_version is None:
        from pem.runtime.backends.tensorrt import import_tensorrt

        trt_version = import_tensorrt().__version__
    try:
        lint_before_build(proto, trt_version, skip=skip)
    except LintRefusal as refusal:
        print(refusal.report.to_text(), file=sys.stderr)
        raise CliError(str(refusal)) from None
    except ValueError as error:
        raise CliError(f"cannot lint for TensorRT {trt_version}: {error}") from None


def _build_engine(onnx_path: Path, args: argparse.Namespace, options: EngineOptions) -> None:
    """Build and write the engine and its manifest (TensorRT on this machine's GPU)."""
    from pem.export.tensorrt.engine_builder import EngineBuildError, build_engine
    from pem.runtime.metadata import ArtifactError

    start = time.perf_counter()
    staged = onnx_path.with_suffix(".engine") if args.verify else args.output  # --verify: published after the check
    try:
        manifest = build_engine(onnx_path, staged, options)
    except (EngineBuildError, ArtifactError, ValueError, ImportError) as error:
        raise CliError(str(error)) from None
    print(f"built the TensorRT {manifest.tensorrt_version} engine in {time.perf_counter() - start:.1f} s")
    if args.verify:
        _verify_and_publish(onnx_path, staged, args.output, _load_image(args.check_image), manifest)


def _verify_and_publish(onnx_path: Path, staged: Path, output: Path, image: np.ndarray, manifest: EngineManifest,
                        candidate: object | None = None) -> None:
    """Compare the engine ``staged`` (or the Polygraphy runner ``candidate``) with ``onnx_path`` on ONNX Runtime on
    ``image``; write the engine and its manifest to ``output`` only when it passes, else CliError (exit 2)."""
    from pem.export.tensorrt.engine_builder import write_engine
    from pem.export.tensorrt.verify import check_feed, onnxruntime_runner, tensorrt_runner, verify
    from pem.runtime.engine_manifest import write_manifest

    feed, geometry, metadata = check_feed(onnx_path, image, manifest)
    try:
        runner = candidate if candidate is not None else tensorrt_runner(staged, manifest)
        report = verify(onnxruntime_runner(onnx_path), runner, feed, metadata, geometry, manifest.precision)
    except Exception as error:  # Polygraphy reports a runner failure as PolygraphyException, TensorRT as RuntimeError
        raise CliError(f"--verify could not run the engine ({type(error).__name__}: {error}); nothing written to "
                       f"{output}") from None
    print("\n".join(report.lines()))
    if not report.passed:
        raise CliError(f"--verify failed ({'; '.join(report.failures)}); nothing written to {output}")
    write_engine(output, staged.read_bytes())
    write_manifest(output, manifest)


def _fp32_graph(args: argparse.Namespace, image: np.ndarray | None) -> onnx.ModelProto:
    """The FP32 graph: exported from the preset and checked against PyTorch, or read from --onnx."""
    if args.onnx is not None:
        from pem.export.onnx_input import read_pem_onnx

        return read_pem_onnx(args.onnx)
    try:
        from pem.export.onnx_export import ExportOptions, export_onnx
    except ModuleNotFoundError as error:
        raise CliError(f"{error.name} is needed to export from PyTorch: pip install 'pem-edge[train,export]'") from None
    options = ExportOptions(
        head=args.head, imgsz=args.imgsz, dynamic=args.dynamic, dynamic_batch=args.dynamic_batch,
        batch=args.batch,
        input_layout=INPUT_CHOICES[args.input], opset=args.opset, simplify=not args.no_simplify,
        object_mask_threshold=args.object_mask_threshold, overlap_threshold=args.overlap_threshold,
        fusion_size=args.fusion_size,
    )
    options.validate()
    model = _build_model(args.config, args.weights)
    start = time.perf_counter()
    proto = export_onnx(model, options)
    print(f"exported {args.config} ({args.head} head) in {time.perf_counter() - start:.1f} s")
    if image is not None:
        _check(model, proto.SerializeToString(), image, args.output)
    return proto


def _precision_request(args: argparse.Namespace) -> PrecisionRequest:
    from pem.calibration.images import list_images
    from pem.export.precision.fp16 import Fp32Islands
    from pem.export.precision.recipe import QuantRecipe
    from pem.export.precision.registry import PrecisionRequest

    islands = Fp32Islands(
        op_types=tuple(o for o in args.fp32_ops.split(",") if o) if args.fp32_ops else DEFAULT_FP32_OPS,
        scope_patterns=tuple(args.fp32_scope) if args.fp32_scope else DEFAULT_FP32_SCOPES,
    )
    if not precision_mode(args.precision).needs_calibration:
        return PrecisionRequest(args.precision, islands)
    target = args.int8_target or ("tensorrt" if args.format == "engine" else "onnxruntime")
    recipe = QuantRecipe(method=args.calib_method, percentile=args.calib_percentile, target=target,
                         calibration_images=args.calib_images, islands=islands)
    return PrecisionRequest(
        args.precision, islands, tuple(list_images(args.calib_data, args.calib_images)), recipe, args.search_data,
        args.accuracy_budget, args.search_images,
    )


def _check_preset(name: str) -> None:
    from pem.config import get_preset

    try:
        get_preset(name)
    except KeyError as error:
        raise CliError(error.args[0]) from None


def _load_image(spec: str) -> np.ndarray:
    from pem.export.parity import load_check_image

    try:
        return load_check_image(spec)
    except (FileNotFoundError, OSError, ValueError) as error:
        raise CliError(f"cannot read the check image {spec}: {error}") from None


def _build_model(name: str, weights: str | None) -> PEM:
    import pem
    from pem.checkpoint import CheckpointError

    if weights is None:
        print("pem-export: no --weights given: exporting randomly initialised weights", file=sys.stderr)
    try:
        return pem.build_model(name, weights=weights).eval()
    except CheckpointError as error:
        raise CliError(str(error)) from None


def _check(model: PEM, data: bytes, image: np.ndarray, output: Path) -> None:
    from pem.export.parity import check_parity

    report = check_parity(model, data, image)
    print("\n".join(report.lines()))
    if not report.passed:
        raise CliError(f"parity check failed ({'; '.join(report.failures)}); nothing written to {output} "
                       f"(--skip-check writes it anyway)")


def _save(proto: onnx.ModelProto, output: Path) -> None:
    from pem.export.onnx_export import save_onnx

    try:
        save_onnx(proto, output)
    except OSError as error:
        raise CliError(f"cannot write {output}: {error}") from None
