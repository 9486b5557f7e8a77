"""Lint an ONNX model against the TensorRT ONNX operator tables (``pem-export --check``)."""
from __future__ import annotations

from pem.export.trt_support.lint import lint_model
from pem.export.trt_support.report import Finding, LintReport

__all__ = ["Finding", "LintReport", "lint_model"]
