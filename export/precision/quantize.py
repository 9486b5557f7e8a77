"""Post-training INT8 quantization of an exported FP32 PEM graph to explicit Q/DQ ONNX (ONNX Runtime's tools).

:class:`Int8Quantizer` calibrates once (activation ranges from the calibration images, fed through the runtime's
own pre-processing) and then writes Q/DQ graphs with any set of blocks left in FP32, which the sensitivity search
needs many of. The FP32 islands of the recipe are never quantized.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pem.calibration.ranges import calibrate_ranges
from pem.export._deps import require
from pem.export.precision.phase_convs import rewrite_conv_transposes
from pem.export.precision.recipe import QUANTIZED_OP_TYPES, QuantRecipe
from pem.export.precision.scopes import block_of, node_scopes

if TYPE_CHECKING:
    import onnx


class Int8Quantizer:
    """``Int8Quantizer(fp32_model, images, recipe)``; ``quantize(fp32_blocks) -> onnx.ModelProto``.

    ``fp32_model``: path of an FP32 ONNX file from ``pem-export``; ``images``: calibration image files (the
    recipe's first ``calibration_images`` are used). For the ONNX Runtime target, transposed convolutions become
    phase convolutions first (``phase_convs``: same result, INT8 kernels); ``model``/``source`` are that graph.
    Call :meth:`close` (or use ``with``) to delete the work folder.
    """

    def __init__(self, fp32_model: str | Path, images: Sequence[str | Path], recipe: QuantRecipe) -> None:
        recipe.validate()
        self.onnx = require("onnx")
        require("onnxruntime")
        self.recipe = recipe
        self.images = [Path(p) for p in images][: recipe.calibration_images]
        self._work = tempfile.TemporaryDirectory(prefix="pem-int8-")
        self._ranges = Path(self._work.name) / "ranges.json"
        self.model = self.onnx.load(str(fp32_model))
        self.source = Path(fp32_model)
        if recipe.target == "onnxruntime" and rewrite_conv_transposes(self.model):
            self.source = Path(self._work.name) / "prepared.onnx"
            self.onnx.save(self.model, str(self.source))
        scopes = node_scopes(self.model.graph)
        self._blocks = {node.name: block_of(scope) for node, scope in zip(self.model.graph.node, scopes)}
        self.island_nodes = frozenset(
            node.name for node, scope in zip(self.model.graph.node, scopes)
            if recipe.islands.keeps(node.op_type, scope)
        )
        self.quantizable = [
            node.name for node in self.model.graph.node
            if node.op_type in QUANTIZED_OP_TYPES and node.name not in self.island_nodes
        ]

    @property
    def blocks(self) -> list[str]:
        """The blocks holding quantizable nodes, in graph order."""
        return list(dict.fromkeys(self._blocks[name] for name in self.quantizable))

    def nodes_of(self, blocks: Iterable[str]) -> list[str]:
        """The quantizable nodes of ``blocks``."""
        chosen = set(blocks)
        return [name for name in self.quantizable if self._blocks[name] in chosen]

    def quantize(self, fp32_blocks: Iterable[str] = ()) -> onnx.ModelProto:
        """The Q/DQ graph with the nodes of ``fp32_blocks`` (and the FP32 islands) left unquantized.

        The first call calibrates (runs the calibration images through the FP32 graph); later calls reuse the
        ranges. Raises CalibrationDataError for an unreadable calibration image.
        """
        from onnxruntime.quantization import quantize_static

        excluded = sorted(self.island_nodes | set(self.nodes_of(fp32_blocks)))
        output = Path(self._work.name) / "quantized.onnx"
        with _quiet_quantizer():
            if not self._ranges.exists():
                calibrate_ranges(self.source, self.images, QUANTIZED_OP_TYPES,
                                 self.recipe.ort_arguments()["calibrate_method"], self.recipe.calibrator_options(),
                                 self._ranges, Path(self._work.name))
            quantize_static(
                str(self.source), str(output), None, nodes_to_exclude=excluded,
                calibration_cache_path=str(self._ranges), **self.recipe.ort_arguments(),
            )
        return self.onnx.load(str(output))

    def close(self) -> None:
        """Delete the work folder (calibration ranges, intermediate graphs)."""
        self._work.cleanup()

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Hide ONNX Runtime's quantizer advice (root-logger warnings, progress prints); errors still raise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
