"""Bake a precision into an FP32 PEM graph (``pem-export --precision``): the registry's pass for that precision,
then the comparison with the FP32 source on a check image. Torch-free: works on any FP32 graph from ``pem-export``."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pem.export.precision.compare import compare_with_fp32
from pem.export.precision.registry import (
    FP32,
    FP32_SCRATCH,
    PrecisionError,
    PrecisionRequest,
    graph_precisions,
    precision_mode,
)
from pem.runtime.contract import META_PRECISION, META_PRECISION_DETAILS
from pem.runtime.metadata import read_metadata, write_metadata

if TYPE_CHECKING:
    import onnx

__all__ = ["PrecisionError", "PrecisionRequest", "apply_precision"]


def apply_precision(
    fp32: onnx.ModelProto, request: PrecisionRequest, work: Path, check_image: np.ndarray | None,
    progress: Callable[[str], None] = print,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph in ``request.precision`` with ``pem.precision`` and ``pem.precision_details`` written, and a
    JSON-ready report (the pass's details and, given ``check_image``, the comparison with FP32). ``work`` is an
    existing scratch folder."""
    mode = precision_mode(request.precision)
    if mode.graph_pass is None:
        raise PrecisionError(f"{mode.name} has no ONNX form ({mode.summary}); graph precisions: "
                             f"{', '.join(graph_precisions())}")
    source = read_metadata(fp32).get(META_PRECISION, FP32)
    if source != FP32:
        raise PrecisionError(f"the graph is already {source}; give the FP32 export to make {mode.name}")
    if mode.name == FP32:
        return fp32, {"precision": FP32}
    model, details = mode.graph_pass(fp32, request, work, progress)
    write_metadata(model, {META_PRECISION: mode.name, META_PRECISION_DETAILS: json.dumps(details)})
    report: dict[str, Any] = {"precision": mode.name, **details}
    if check_image is not None:
        fp32_path, reduced_path = work / FP32_SCRATCH, work / f"{mode.name}.onnx"
        if not fp32_path.exists():  # a pass may have written it (INT8's quantizer reads it)
            fp32_path.write_bytes(fp32.SerializeToString())
        reduced_path.write_bytes(model.SerializeToString())
        comparison = compare_with_fp32(fp32_path, reduced_path, check_image)
        progress(f"{mode.name} graph vs FP32 graph on the check image:\n" + "\n".join(comparison.lines()))
        report["check_image"] = {"float_rel_l2": comparison.float_rel_l2,
                                 "integer_agreement": comparison.integer_agreement}
    return model, report
