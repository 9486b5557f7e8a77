"""``pem-export-check MODEL.onnx --trt-version X.Y [--json OUT]``: the TensorRT operator lint from a shell."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pem.export.trt_support.lint import lint_model
from pem.export.trt_support.onnx_graph import ModelLoadError, load_model
from pem.export.trt_support.versions import parse_version

PROG = "pem-export-check"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = _Parser(prog=PROG, description="Lint every node of an ONNX model against the TensorRT ONNX "
                     "operator table of a TensorRT release, plus FP16 precision rules.")
    parser.add_argument("model", help="the ONNX model to check")
    parser.add_argument("--trt-version", required=True, help="TensorRT release, X.Y (e.g. 10.3 for JetPack 6.2)")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    parser.add_argument("--plugin", action="append", default=[], metavar="NS::NAME",
                        help="a TensorRT plugin registered at build time (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; exit 0 without errors, 1 with errors, 2 for bad input."""
    args = build_parser().parse_args(argv)
    try:
        parse_version(args.trt_version)
        model, _ = load_model(args.model)
    except (ValueError, FileNotFoundError, ModelLoadError, ImportError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    report = lint_model(model, args.trt_version, plugins=args.plugin)
    report.model = args.model
    print(report.to_text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
