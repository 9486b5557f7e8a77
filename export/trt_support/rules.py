"""Checks of table restrictions (named by the tables' ``checks`` lists) and precision rules."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pem.export.trt_support.onnx_graph import dtype_name, rank, require_onnx

if TYPE_CHECKING:
    import numpy as np
    import onnx

K_LIMIT = 3840


@dataclass
class NodeView:
    """One node with the tensor types and constant values around it."""

    node: onnx.NodeProto
    types: dict[str, onnx.TypeProto]
    constants: dict[str, np.ndarray]

    def input_name(self, index: int) -> str:
        """Name of input ``index`` ('' when absent)."""
        return self.node.input[index] if index < len(self.node.input) else ""

    def dtype(self, name: str) -> str | None:
        """Tensor element type in table spelling."""
        return dtype_name(self.types.get(name)) if name else None

    def input_dtype(self, index: int) -> str | None:
        """Element type of input ``index``."""
        return self.dtype(self.input_name(index))

    def input_rank(self, index: int) -> int | None:
        """Rank of input ``index``."""
        name = self.input_name(index)
        return rank(self.types.get(name)) if name else None

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute value as a Python object."""
        for attribute in self.node.attribute:
            if attribute.name == name:
                value = require_onnx().helper.get_attribute_value(attribute)
                return value.decode() if isinstance(value, bytes) else value
        return default


def _spatial_rank(view: NodeView) -> int | None:
    data_rank = view.input_rank(0)
    if data_rank is not None:
        return data_rank - 2
    kernel = view.attr("kernel_shape")
    return len(kernel) if kernel else None


def _spatial_rank_1d_or_2d(view: NodeView) -> str | None:
    spatial = _spatial_rank(view)
    if spatial is not None and spatial not in (1, 2):
        return f"input has {spatial}D spatial dimensions; only 1D or 2D are parsed"
    return None


def _symmetric_pads(view: NodeView) -> str | None:
    pads = list(view.attr("pads", []))
    half = len(pads) // 2
    if pads and pads[:half] != pads[half:]:
        return f"asymmetric pads {pads} (begin {pads[:half]} != end {pads[half:]}); TensorRT needs begin == end"
    return None


def _input_rank_4(view: NodeView) -> str | None:
    data_rank = view.input_rank(0)
    if data_rank is not None and data_rank != 4:
        return f"input is {data_rank}-D; only 4-D input is parsed"
    return None


def _sorted_must_be_1(view: NodeView) -> str | None:
    return "sorted=0; TensorRT needs sorted=1" if view.attr("sorted", 1) == 0 else None


def _k_less_than_3840(view: NodeView) -> str | None:
    k = view.constants.get(view.input_name(1))
    if k is not None and k.size and int(k.reshape(-1)[0]) >= K_LIMIT:
        return f"K={int(k.reshape(-1)[0])}; TensorRT needs K < {K_LIMIT}"
    return None


def _only_first_output(view: NodeView) -> str | None:
    used = [name for name in view.node.output[1:] if name]
    return f"outputs {used} are used; only the first output is supported" if used else None


def _reduction_none(view: NodeView) -> str | None:
    reduction = view.attr("reduction", "none")
    return f"reduction={reduction!r} is not supported" if reduction != "none" else None


def _pool_2d_or_3d(view: NodeView) -> str | None:
    spatial = _spatial_rank(view)
    if spatial is not None and spatial not in (2, 3):
        return f"{spatial}D pooling; only 2D or 3D pooling is parsed"
    return None


def _no_indices_output(view: NodeView) -> str | None:
    indices = view.node.output[1] if len(view.node.output) > 1 else ""
    return "the Indices output is used; it is unsupported" if indices else None


def _dilations_all_ones(view: NodeView) -> str | None:
    dilations = list(view.attr("dilations", []))
    if any(value != 1 for value in dilations):
        return f"dilations {dilations} must be empty or all ones"
    return None


CHECKS: dict[str, Callable[[NodeView], str | None]] = {
    "spatial_rank_1d_or_2d": _spatial_rank_1d_or_2d,
    "symmetric_pads": _symmetric_pads,
    "input_rank_4": _input_rank_4,
    "sorted_must_be_1": _sorted_must_be_1,
    "k_less_than_3840": _k_less_than_3840,
    "only_first_output": _only_first_output,
    "reduction_none": _reduction_none,
    "pool_2d_or_3d": _pool_2d_or_3d,
    "no_indices_output": _no_indices_output,
    "dilations_all_ones": _dilations_all_ones,
}

_TYPED_TENSOR = {
    "Where": ("input", 1),
    "Constant": ("output", 0),
    "ConstantOfShape": ("output", 0),
    "RandomNormal": ("output", 0),
    "RandomUniform": ("output", 0),
}
_TYPED_BOTH = ("Cast", "CastLike")


def checked_dtypes(view: NodeView) -> list[str]:
    """Element types the table's 'Supported Types' column is compared with (data input, or output)."""
    op_type = view.node.op_type
    kind, index = _TYPED_TENSOR.get(op_type, ("input", 0))
    names = list(view.node.input if kind == "input" else view.node.output)
    picked = [names[index]] if index < len(names) else []
    if op_type in _TYPED_BOTH and view.node.output:
        picked.append(view.node.output[0])
    return [dtype for dtype in (view.dtype(name) for name in picked) if dtype]


def precision_warnings(view: NodeView) -> list[str]:
    """FP16 hazards from the project's TensorRT facts (sections 1.4 and 8)."""
    op_type = view.node.op_type
    if op_type == "DeformConv" and "FP16" in {view.input_dtype(i) for i in (0, 2, 4)}:
        return ["FP16 DeformConv: TensorRT's built-in ModulatedDeformConv2d plugin holds sampling coordinates in "
                "half and accumulates in half (facts 1.4); keep this node in FP32 or use pem::DeformConv2d"]
    if op_type in ("ArgMax", "ArgMin", "TopK") and view.input_dtype(0) == "FP16":
        return [f"{op_type} on FP16 input: near-ties flip against FP32 (facts 8, onnx-tensorrt#555); "
                "compute the scores and the selection in FP32"]
    return []
