"""``pem-export``: export a PEM preset to ONNX, check it against PyTorch, write it atomically.

    pem-export --config NAME [--weights W] [--format onnx] [--head raw|semantic|panoptic] --imgsz HxW [--dynamic]
               [--batch N] [--input uint8|float] [--opset 19] [--no-simplify] --output PATH
               [--check-image PATH|skimage:NAME] [--skip-check] [--object-mask-threshold T] [--overlap-threshold T]

Exit status: 0 written (and checked), 2 bad arguments or inputs, a failed export or a failed parity check; then one
line on stderr says why and nothing is written to the output path.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pem.runtime.contract import HEADS
from pem.runtime.sizes import parse_size

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from pem.modeling.pem_model import PEM

INPUT_CHOICES = {"uint8": "uint8_nhwc", "float": "float_nchw"}
DEFAULT_CHECK_IMAGE = "skimage:astronaut.png"


class CliError(Exception):
    """A problem reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``pem-export``."""
    parser = _Parser(prog="pem-export", description="Export a PEM model to ONNX and check it against PyTorch.")
    parser.add_argument("--config", required=True, help="preset, e.g. cityscapes_panoptic_r50 (a bad name lists all)")
    parser.add_argument("--weights", help="checkpoint from pem-convert or pem-train (default: random weights)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="output format")
    parser.add_argument("--head", default="raw", choices=HEADS, help="graph outputs (default raw)")
    parser.add_argument("--imgsz", required=True, type=parse_size,
                        help="HxW input size of a static graph, example size of a dynamic one")
    parser.add_argument("--dynamic", action="store_true", help="free batch, height and width")
    parser.add_argument("--batch", type=int, default=1, help="batch size of a static graph (default 1)")
    parser.add_argument("--input", default="uint8", choices=sorted(INPUT_CHOICES),
                        help="uint8: image uint8 [B,h,w,3] RGB (default); float: float32 [B,3,h,w] in 0..255")
    parser.add_argument("--opset", type=int, default=19, help="ONNX opset (>= 19, default 19)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--output", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--check-image", default=DEFAULT_CHECK_IMAGE,
                        help=f"photograph for the parity check: a path or skimage:NAME (default {DEFAULT_CHECK_IMAGE})")
    parser.add_argument("--skip-check", action="store_true", help="write without the parity check")
    parser.add_argument("--object-mask-threshold", type=float,
                        help="override the preset's panoptic keep threshold (stored in the metadata)")
    parser.add_argument("--overlap-threshold", type=float,
                        help="override the preset's panoptic overlap threshold (stored in the metadata)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pem-export``; returns the exit status (also for --help and argument errors).

    ``pem-export --check MODEL.onnx --trt-version X.Y [--json OUT] [--plugin NS::NAME]`` lints an ONNX model against
    the TensorRT operator support of that release instead (``pem.export.trt_support``; exit 1 when it finds errors).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--check" in arguments:
        from pem.export.trt_support.cli import main as check_main

        return check_main([a for a in arguments if a != "--check"])
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as done:
        return int(done.code or 0)
    try:
        _run(args)
    except CliError as error:
        print(f"pem-export: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> None:
    from pem.export._deps import MissingDependencyError

    try:
        from pem.export.onnx_export import ExportError, ExportOptions, export_onnx
    except ModuleNotFoundError as error:
        raise CliError(f"{error.name} is needed to export: pip install 'pem-edge[train,export]'") from None

    _check_preset(args.config)
    _check_output(args.output)
    if args.weights is not None and not Path(args.weights).is_file():
        raise CliError(f"weights not found: {args.weights}")
    options = ExportOptions(
        head=args.head, imgsz=args.imgsz, dynamic=args.dynamic, batch=args.batch,
        input_layout=INPUT_CHOICES[args.input], opset=args.opset, simplify=not args.no_simplify,
        object_mask_threshold=args.object_mask_threshold, overlap_threshold=args.overlap_threshold,
    )
    try:
        options.validate()
        image = None if args.skip_check else _load_image(args.check_image)
        model = _build_model(args.config, args.weights)
        start = time.perf_counter()
        proto = export_onnx(model, options)
        print(f"exported {args.config} ({args.head} head) in {time.perf_counter() - start:.1f} s")
        data = proto.SerializeToString()
        if image is not None:
            _check(model, data, image, args.output)
        _save(proto, args.output)
    except (ExportError, MissingDependencyError) as error:
        raise CliError(str(error)) from None
    print(f"wrote {args.output} ({len(data) / 2**20:.1f} MiB)")


def _check_preset(name: str) -> None:
    from pem.config import get_preset

    try:
        get_preset(name)
    except KeyError as error:
        raise CliError(error.args[0]) from None


def _check_output(path: Path) -> None:
    """Refuse an output that is a folder or whose nearest existing folder is not writable."""
    if path.is_dir():
        raise CliError(f"output {path} is a folder; give a file name such as {path / 'model.onnx'}")
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {path}: {folder} is not a writable folder")


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
