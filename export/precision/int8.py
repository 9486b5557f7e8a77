"""FP32 graph -> INT8 Q/DQ graph: calibrate, optionally search the blocks kept in FP32, measure the INT8 share of
multiply-adds, and record all of it in the graph's metadata (``pem.precision_details``)."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pem.calibration.images import list_images, load_rgb, require_disjoint
from pem.export.precision.coverage import MacCoverage, int8_node_names, mac_coverage, node_macs
from pem.export.precision.quantize import Int8Quantizer
from pem.export.precision.recipe import QuantRecipe
from pem.export.precision.sensitivity import DEFAULT_BUDGET, SearchResult, folder_evaluator, search_fp32_blocks
from pem.runtime.contract import META_PRECISION, META_PRECISION_DETAILS
from pem.runtime.metadata import write_metadata

if TYPE_CHECKING:
    import onnx

    from pem.export.precision.registry import PrecisionRequest

# Below this many calibration images the activation ranges rest on too few scenes: one image gave 66.6% pixel
# agreement with FP32 on the tiny model. Fewer are accepted with a warning (progress line and the report).
MIN_CALIBRATION_IMAGES = 16


@dataclass
class Int8Outcome:
    """The Q/DQ graph, its INT8 share of multiply-adds, the search (None without search data) and the report."""

    model: onnx.ModelProto
    coverage: MacCoverage
    search: SearchResult | None
    details: dict[str, Any]


def quantize_to_int8(
    fp32_model: str | Path,
    calibration_images: Sequence[str | Path],
    recipe: QuantRecipe,
    search_data: str | Path | None = None,
    budget: float = DEFAULT_BUDGET,
    search_images: int | None = None,
    progress: Callable[[str], None] = print,
) -> Int8Outcome:
    """Quantize the FP32 graph at ``fp32_model``.

    ``calibration_images``: image files (the recipe's first N are used); ``search_data``: a COCO-panoptic folder for
    the sensitivity search (its first ``search_images`` images; must not share an image with the calibration set),
    ``budget``: the largest PQ/mIoU drop in points. Raises CalibrationDataError, RecipeError.
    """
    recipe.validate()
    images = [Path(p) for p in calibration_images][: recipe.calibration_images]
    search_paths = list_images(search_data, search_images) if search_data is not None else []
    require_disjoint([("calibration", images), ("search", search_paths)])
    warnings = []
    if len(images) < MIN_CALIBRATION_IMAGES:
        warnings.append(f"only {len(images)} calibration image(s), fewer than {MIN_CALIBRATION_IMAGES}: the INT8 "
                        "ranges may not cover other scenes; check accuracy (--search-data) or give more images")
        progress(f"warning: {warnings[-1]}")
    with Int8Quantizer(fp32_model, images, recipe) as quantizer:
        progress(f"calibrating on {len(images)} images ({recipe.method}, {recipe.activation_type} activations, "
                 f"target {recipe.target})")
        search = None
        if search_data is not None:
            search = search_fp32_blocks(quantizer, folder_evaluator(search_data, search_images), budget, progress)
        fp32_blocks = search.fp32_blocks if search is not None else []
        model = quantizer.quantize(fp32_blocks)
        coverage = _coverage(quantizer, model, images[0])
    details = {
        "recipe": recipe.to_json(),
        "calibration_images": len(images),
        "fp32_blocks": fp32_blocks,
        "int8_mac_share": coverage.int8_share,
        "macs": coverage.to_json(),
        "search": search.to_json() if search is not None else None,
        "warnings": warnings,
    }
    write_metadata(model, {META_PRECISION: "int8", META_PRECISION_DETAILS: json.dumps(details)})
    progress(f"INT8 share of conv/matmul multiply-adds: {100 * coverage.int8_share:.1f}%")
    return Int8Outcome(model, coverage, search, details)


def _coverage(quantizer: Int8Quantizer, model: onnx.ModelProto, image: Path) -> MacCoverage:
    from pem.runtime.predictor import Predictor

    with Predictor(quantizer.source, providers=["cpu"]) as predictor:
        feed, _ = predictor.preprocess(load_rgb(image))
    return mac_coverage(node_macs(quantizer.model, feed), int8_node_names(model))


def int8_pass(fp32: onnx.ModelProto, request: PrecisionRequest, work: Path,
              progress: Callable[[str], None]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The registry's INT8 pass: ``request``'s calibration images, recipe (default: its FP32 islands) and optional
    sensitivity search; the FP32 graph is written to ``work`` (``FP32_SCRATCH``) for the quantizer.
    PrecisionError without images."""
    from pem.export.precision.registry import FP32_SCRATCH, PrecisionError

    if not request.calibration_images:
        raise PrecisionError("INT8 needs calibration images (--calib-data DIR)")
    fp32_path = work / FP32_SCRATCH
    fp32_path.write_bytes(fp32.SerializeToString())
    recipe = request.recipe or QuantRecipe(islands=request.islands)
    outcome = quantize_to_int8(fp32_path, request.calibration_images, recipe, request.search_data, request.budget,
                               request.search_images, progress)
    if outcome.search is not None:
        progress(outcome.search.table())
    return outcome.model, outcome.details
