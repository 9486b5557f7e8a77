"""Bake a precision into an FP32 PEM graph (``pem-export --precision``): FP16 casts or INT8 Q/DQ, then compare the
result with its FP32 source on a check image. Torch-free: works on any FP32 graph from ``pem-export``."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pem.export.precision.compare import compare_with_fp32
from pem.export.precision.fp16 import Fp32Islands, convert_to_fp16
from pem.runtime.contract import META_PRECISION, META_PRECISION_DETAILS
from pem.runtime.errors import PemError
from pem.runtime.metadata import read_metadata, write_metadata

if TYPE_CHECKING:
    import onnx

    from pem.calibration.recipe import QuantRecipe

PRECISIONS = ("fp32", "fp16", "int8")


class PrecisionError(PemError, ValueError):
    """A precision request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class PrecisionRequest:
    """``precision`` and what it needs: the FP32 islands (FP16 and INT8), and for INT8 the calibration image files,
    the recipe, and optionally a COCO-panoptic ``search_data`` folder with the accuracy ``budget`` (points)."""

    precision: str = "fp32"
    islands: Fp32Islands = field(default_factory=Fp32Islands)
    calibration_images: tuple[Path, ...] = ()
    recipe: QuantRecipe | None = None
    search_data: Path | None = None
    budget: float = 1.0
    search_images: int | None = None


def apply_precision(
    fp32: onnx.ModelProto, request: PrecisionRequest, work: Path, check_image: np.ndarray | None,
    progress: Callable[[str], None] = print,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph in ``request.precision`` and a JSON-ready report (details and, given ``check_image``, the
    comparison with FP32). ``work`` is an existing scratch folder."""
    if request.precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {request.precision!r}; known: {', '.join(PRECISIONS)}")
    source = read_metadata(fp32).get(META_PRECISION, "fp32")
    if source != "fp32":
        raise PrecisionError(f"the graph is already {source}; give the FP32 export to make {request.precision}")
    if request.precision == "fp32":
        return fp32, {"precision": "fp32"}
    fp32_path = work / "fp32.onnx"  # the quantizer and the comparison read the FP32 graph from a file
    if request.precision == "int8" or check_image is not None:
        fp32_path.write_bytes(fp32.SerializeToString())
    if request.precision == "fp16":
        model, details = _to_fp16(fp32, request.islands)
    else:
        model, details = _to_int8(fp32_path, request, progress)
    report: dict[str, Any] = {"precision": request.precision, **details}
    if check_image is not None:
        reduced_path = work / f"{request.precision}.onnx"
        reduced_path.write_bytes(model.SerializeToString())
        comparison = compare_with_fp32(fp32_path, reduced_path, check_image)
        progress(f"{request.precision} graph vs FP32 graph on the check image:\n" + "\n".join(comparison.lines()))
        report["check_image"] = {"float_rel_l2": comparison.float_rel_l2,
                                 "integer_agreement": comparison.integer_agreement}
    return model, report


def _to_fp16(fp32: onnx.ModelProto, islands: Fp32Islands) -> tuple[onnx.ModelProto, dict[str, Any]]:
    model, summary = convert_to_fp16(fp32, islands)
    details = {
        "islands": {"op_types": list(islands.op_types), "scope_patterns": list(islands.scope_patterns)},
        "fp16_nodes": summary.fp16_nodes, "fp32_nodes": summary.fp32_nodes,
        "fp32_compute_nodes": summary.fp32_compute, "casts_added": summary.casts_added,
    }
    write_metadata(model, {META_PRECISION: "fp16", META_PRECISION_DETAILS: json.dumps(details)})
    return model, details


def _to_int8(fp32_path: Path, request: PrecisionRequest, progress: Callable[[str], None]) -> tuple[
        onnx.ModelProto, dict[str, Any]]:
    from pem.calibration.int8_export import quantize_to_int8
    from pem.calibration.recipe import QuantRecipe

    if not request.calibration_images:
        raise PrecisionError("INT8 needs calibration images (--calib-data DIR)")
    recipe = request.recipe or QuantRecipe(islands=request.islands)
    outcome = quantize_to_int8(fp32_path, request.calibration_images, recipe, request.search_data, request.budget,
                               request.search_images, progress)
    if outcome.search is not None:
        progress(outcome.search.table())
    return outcome.model, outcome.details
