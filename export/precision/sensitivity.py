"""Per-block INT8 sensitivity and the search for the smallest set of blocks kept in FP32 within an accuracy budget.

Sensitivity of a block: the metric drop (PQ for panoptic graphs, mIoU otherwise; percentage points, against the FP32
graph on the search set) when only that block runs in INT8. Search: if the fully quantized graph drops more than the
budget, blocks go back to FP32 from the most sensitive down until the drop fits; then each chosen block is tried
in INT8 again, least sensitive first, and stays there if the drop still fits.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pem.export.precision.quantize import Int8Quantizer

if TYPE_CHECKING:
    import onnx

DEFAULT_BUDGET = 1.0


@dataclass(frozen=True)
class BlockSensitivity:
    """The metric and its drop (FP32 minus this, in points) when only ``block`` (``nodes`` quantizable nodes) is
    INT8."""

    block: str
    nodes: int
    metric: float
    drop: float


@dataclass
class SearchResult:
    """What the search measured and chose; ``fp32_blocks`` is the answer (empty when everything fits)."""

    metric: str
    budget: float
    search_images: int
    fp32_metric: float
    all_int8_metric: float
    fp32_blocks: list[str] = field(default_factory=list)
    final_metric: float = 0.0
    sensitivities: list[BlockSensitivity] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)

    @property
    def final_drop(self) -> float:
        """FP32 minus the chosen graph's metric, in points."""
        return self.fp32_metric - self.final_metric

    def to_json(self) -> dict[str, object]:
        """JSON-ready, with the final drop."""
        data = asdict(self)
        data["final_drop"] = self.final_drop
        return data

    def table(self) -> str:
        """The report table: one row per block (sensitivity, and whether it stays FP32), then the outcome."""
        rows = [f"{'block':<52} {'nodes':>5} {self.metric + ' alone':>11} {'drop':>7}  precision"]
        chosen = set(self.fp32_blocks)
        for item in sorted(self.sensitivities, key=lambda s: -s.drop):
            precision = "FP32" if item.block in chosen else "INT8"
            rows.append(f"{item.block:<52} {item.nodes:>5} {item.metric:>11.2f} {item.drop:>+7.2f}  {precision}")
        rows.append(f"FP32 graph {self.metric} {self.fp32_metric:.2f}; all INT8 {self.all_int8_metric:.2f} "
                    f"(drop {self.fp32_metric - self.all_int8_metric:+.2f}); chosen {self.final_metric:.2f} "
                    f"(drop {self.final_drop:+.2f}, budget {self.budget:.2f}) with {len(self.fp32_blocks)} block(s) "
                    f"in FP32 on {self.search_images} search images")
        return "\n".join(rows)


Evaluator = Callable[["onnx.ModelProto"], dict[str, float]]


def folder_evaluator(dataset: str | Path, max_images: int | None = None) -> Evaluator:
    """An evaluator: ONNX graph -> PQ/mIoU (percent) of the runtime's Predictor on a COCO-panoptic folder."""
    from pem.metrics.predictor_accuracy import panoptic_folder_accuracy
    from pem.runtime.predictor import Predictor

    def evaluate(model: onnx.ModelProto) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="pem-search-") as work:
            path = Path(work) / "candidate.onnx"
            path.write_bytes(model.SerializeToString())
            with Predictor(path, providers=["cpu"]) as predictor:
                return panoptic_folder_accuracy(predictor, dataset, max_images)

    return evaluate


def metric_name(model: onnx.ModelProto) -> str:
    """``PQ`` for a panoptic-head graph, else ``mIoU``."""
    from pem.runtime.contract import META_HEAD
    from pem.runtime.metadata import read_metadata

    return "PQ" if read_metadata(model).get(META_HEAD) == "panoptic" else "mIoU"


def search_fp32_blocks(
    quantizer: Int8Quantizer,
    evaluate: Evaluator,
    budget: float = DEFAULT_BUDGET,
    progress: Callable[[str], None] = print,
) -> SearchResult:
    """Measure each block's sensitivity and choose the smallest FP32 set whose drop is within ``budget`` points."""
    metric = metric_name(quantizer.model)
    fp32_scores = evaluate(quantizer.model)
    fp32 = fp32_scores[metric]
    score = _scorer(quantizer, evaluate, metric)
    all_int8 = score(())
    result = SearchResult(metric, budget, int(fp32_scores.get("images", 0)), fp32, all_int8, final_metric=all_int8)
    progress(f"FP32 {metric} {fp32:.2f}; all INT8 {all_int8:.2f} (drop {fp32 - all_int8:+.2f}, budget {budget:.2f})")
    blocks = quantizer.blocks
    for index, block in enumerate(blocks, 1):
        others = [b for b in blocks if b != block]
        value = score(others)
        result.sensitivities.append(BlockSensitivity(block, len(quantizer.nodes_of([block])), value, fp32 - value))
        progress(f"sensitivity {index}/{len(blocks)}: {block} alone in INT8 -> {metric} {value:.2f}")
    if fp32 - all_int8 <= budget:
        return result
    ranked = [s.block for s in sorted(result.sensitivities, key=lambda s: -s.drop)]
    chosen: list[str] = []
    for block in ranked:
        chosen.append(block)
        value = score(chosen)
        result.steps.append({"fp32_blocks": list(chosen), metric: value})
        if fp32 - value <= budget:
            result.final_metric = value
            break
    else:
        result.final_metric = value
    for block in reversed(list(chosen)):
        trial = [b for b in chosen if b != block]
        value = score(trial)
        result.steps.append({"fp32_blocks": list(trial), metric: value})
        if fp32 - value <= budget:
            chosen, result.final_metric = trial, value
    result.fp32_blocks = chosen
    progress(f"chosen: {len(chosen)} block(s) in FP32 -> {metric} {result.final_metric:.2f} "
             f"(drop {result.final_drop:+.2f})")
    return result


def _scorer(quantizer: Int8Quantizer, evaluate: Evaluator, metric: str) -> Callable[[Sequence[str]], float]:
    """fp32 blocks -> metric of that Q/DQ graph (memoized: the search revisits sets)."""
    cache: dict[frozenset[str], float] = {}

    def score(fp32_blocks: Sequence[str]) -> float:
        key = frozenset(fp32_blocks)
        if key not in cache:
            cache[key] = evaluate(quantizer.quantize(key))[metric]
        return cache[key]

    return score
