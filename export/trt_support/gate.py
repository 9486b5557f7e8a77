"""The lint as a gate before TensorRT parses a graph (``pem-export --format engine``), testable without TensorRT.

The caller passes the TensorRT version (``tensorrt.__version__`` on the build machine); nothing here imports
TensorRT.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

from pem.export.trt_support.lint import lint_model
from pem.export.trt_support.report import LintReport

if TYPE_CHECKING:
    import onnx


class LintRefusal(ValueError):
    """The lint found errors that TensorRT's parser or builder would hit; ``report`` holds every finding."""

    def __init__(self, report: LintReport) -> None:
        super().__init__(f"the TensorRT {report.requested_version} lint found {report.errors} error"
                         f"{'s' if report.errors != 1 else ''} in {report.model}; no engine built "
                         "(the table above lists them; --skip-lint builds anyway)")
        self.report = report


def lint_before_build(model: str | os.PathLike[str] | onnx.ModelProto, trt_version: str, plugins: Iterable[str] = (),
                      skip: bool = False, stream: TextIO | None = None) -> LintReport | None:
    """Lint ``model`` for TensorRT ``trt_version`` ("10.3.0.26" or "10.3") before it is parsed.

    Returns the report (warnings only), or ``None`` when ``skip`` (a warning goes to ``stream``, default stderr).
    Raises :class:`LintRefusal` when the report has errors, ``ValueError`` for a bad version string.
    """
    stream = sys.stderr if stream is None else stream
    if skip:
        print(f"pem-export: warning: --skip-lint: the graph goes to TensorRT {trt_version} without the lint",
              file=stream)
        return None
    report = lint_model(model, trt_version, plugins=plugins)
    if report.errors:
        raise LintRefusal(report)
    print(f"TensorRT {report.requested_version} lint (table {report.table_version}): 0 errors, "
          f"{report.warnings} warnings", file=stream)
    return report
