"""FP16 graph pass: cast an FP32 ONNX graph to FP16 and keep its sensitive parts ("FP32 islands") in FP32.

Every node gets a precision. Compute nodes run in FP16 unless :class:`Fp32Islands` keeps them in FP32 (by op type
or by module path); data-movement and comparison nodes take the precision of their inputs (FP16 only when all
their float inputs already are), so no cast is made for a Reshape. Inputs whose type variable must match get a
``Cast`` where the producer's precision differs (one cast per tensor and precision, shared by its consumers);
FP32 weights and constants read in FP16 are stored converted, with infinities and values beyond the FP16 range
replaced by +-65504. Graph inputs and outputs keep their types. Custom-domain nodes (``pem::PrototypeGather``) and
model-local functions stay FP32.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pem.export._deps import require
from pem.export.precision.scopes import node_scopes

if TYPE_CHECKING:
    import onnx

FP16_MAX = float(np.finfo(np.float16).max)  # 65504

# ops kept in FP32 by default: deformable sampling, similarity + argmax (PrototypeGather and any ArgMax/TopK),
# softmax, LayerNorm, L2 normalisation (a sum of squares overflows FP16 beyond |x| ~ 16 over 256 channels)
DEFAULT_FP32_OPS = (
    "DeformConv", "DeformConv2d", "PrototypeGather", "ArgMax", "ArgMin", "TopK", "Softmax", "LogSoftmax",
    "LayerNormalization", "ReduceL2", "ReduceSumSquare",
)
# module paths kept in FP32 by default: the export wrapper's pre/post-processing ('') and the prediction head (class
# and mask logits, the masks PrototypeGather selects with). The convs predicting deformable offsets are ordinary
# convs; the sampling coordinates made from them are computed inside DeformConv, which stays FP32.
DEFAULT_FP32_SCOPES = (r"^$", r"^model\.transformer_decoder\.head(\.|$)")
# nodes that only move or pick values: no arithmetic, so they follow their inputs' precision
PRECISION_NEUTRAL_OPS = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "GatherElements", "GatherND",
    "Expand", "Identity", "Concat", "Split", "Tile", "Where", "Shape", "Size", "Pad", "DepthToSpace", "SpaceToDepth",
})


@dataclass(frozen=True)
class Fp32Islands:
    """Which nodes stay FP32: ``op_types`` (ONNX op type names) and ``scope_patterns`` (regular expressions searched
    in a node's module path, '' for the export wrapper's nodes)."""

    op_types: tuple[str, ...] = DEFAULT_FP32_OPS
    scope_patterns: tuple[str, ...] = DEFAULT_FP32_SCOPES
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = tuple(re.compile(pattern) for pattern in self.scope_patterns)
        except re.error as error:
            raise ValueError(f"bad FP32 scope pattern: {error}") from None
        object.__setattr__(self, "_compiled", compiled)

    def keeps(self, op_type: str, scope: str) -> bool:
        """True when a node of ``op_type`` at module path ``scope`` stays FP32."""
        return op_type in self.op_types or any(pattern.search(scope) for pattern in self._compiled)


@dataclass(frozen=True)
class Fp16Summary:
    """What the pass did: node counts per precision, the FP32 compute nodes (op type -> count) and added casts."""

    fp16_nodes: int
    fp32_nodes: int
    fp32_compute: dict[str, int]
    casts_added: int


def convert_to_fp16(model: onnx.ModelProto, islands: Fp32Islands | None = None) -> tuple[onnx.ModelProto, Fp16Summary]:
    """The FP16 version of ``model`` (not modified) and a summary; the result passes ``onnx.checker``."""
    onnx = require("onnx")
    islands = islands or Fp32Islands()
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    pass_ = _Fp16Pass(converted, islands)
    pass_.run()
    del converted.graph.value_info[:]
    converted = onnx.shape_inference.infer_shapes(converted, check_type=True, strict_mode=True)
    onnx.checker.check_model(converted)
    return converted, pass_.summary()


def fp16_pass(fp32: onnx.ModelProto, islands: Fp32Islands) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The registry's FP16 pass: the converted graph and JSON-ready details (islands, node and cast counts)."""
    model, summary = convert_to_fp16(fp32, islands)
    details = {
        "islands": {"op_types": list(islands.op_types), "scope_patterns": list(islands.scope_patterns)},
        "fp16_nodes": summary.fp16_nodes, "fp32_nodes": summary.fp32_nodes,
        "fp32_compute_nodes": summary.fp32_compute, "casts_added": summary.casts_added,
    }
    return model, details


class _Fp16Pass:
    """One pass over the topologically sorted nodes; rewrites ``model.graph`` in place."""

    def __init__(self, model: onnx.ModelProto, islands: Fp32Islands) -> None:
        self.onnx = require("onnx")
        self.model = model
        self.graph = model.graph
        self.islands = islands
        self.opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
        inferred = self.onnx.shape_inference.infer_shapes(model)
        self.inferred = _element_types(inferred.graph)
        self.current = {value.name: value.type.tensor_type.elem_type for value in self.graph.input}
        self.current.update({init.name: init.data_type for init in self.graph.initializer})
        self.constants = {init.name: init for init in self.graph.initializer}
        self.cast_cache: dict[tuple[str, int], str] = {}
        self.new_nodes: list[onnx.NodeProto] = []
        self.new_initializers: list[onnx.TensorProto] = []
        self.precisions: list[tuple[str, int]] = []
        self.casts_added = 0

    def run(self) -> None:
        scopes = node_scopes(self.graph)
        for node, scope in zip(list(self.graph.node), scopes):
            self._convert_node(node, scope)
        self._restore_output_types()
        del self.graph.node[:]
        self.graph.node.extend(self.new_nodes)
        self.graph.initializer.extend(self.new_initializers)
        self._drop_unused()

    def summary(self) -> Fp16Summary:
        float16 = self.onnx.TensorProto.FLOAT16
        fp32_compute: dict[str, int] = {}
        for op_type, precision in self.precisions:
            if precision != float16 and op_type not in PRECISION_NEUTRAL_OPS:
                fp32_compute[op_type] = fp32_compute.get(op_type, 0) + 1
        fp16 = sum(precision == float16 for _, precision in self.precisions)
        return Fp16Summary(fp16, len(self.precisions) - fp16, dict(sorted(fp32_compute.items())), self.casts_added)

    def _convert_node(self, node: onnx.NodeProto, scope: str) -> None:
        TensorProto = self.onnx.TensorProto
        if node.op_type == "Constant":
            self._keep_constant(node)
            return
        schema = self._schema(node)
        floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
        has_float = any(self.current.get(name) in floats for name in node.input if name)
        if schema is None or not has_float:
            target = TensorProto.FLOAT
        elif self.islands.keeps(node.op_type, scope):
            target = TensorProto.FLOAT
        elif node.op_type in PRECISION_NEUTRAL_OPS or not self._has_float_output(node):
            target = self._follow_inputs(node, schema)
        else:
            target = TensorProto.FLOAT16
        if target == TensorProto.FLOAT16 and not _allows_fp16(schema, node):
            target = TensorProto.FLOAT  # e.g. Range: no float16 in its type constraint
        if schema is None:
            self._cast_float_inputs(node, TensorProto.FLOAT)
            self._record_outputs(node, None, target)
        else:
            self._cast_tied_inputs(node, schema, target)
            self._record_outputs(node, schema, target)
        self.new_nodes.append(node)
        if has_float:
            self.precisions.append((node.op_type, target))

    def _keep_constant(self, node: onnx.NodeProto) -> None:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if value is not None:
            self.constants[node.output[0]] = value
        for output in node.output:
            self.current[output] = self.inferred.get(output, 0)
        self.new_nodes.append(node)

    def _schema(self, node: onnx.NodeProto) -> onnx.defs.OpSchema | None:
        if node.domain not in ("", "ai.onnx"):
            return None
        try:
            return self.onnx.defs.get_schema(node.op_type, self.opset, "")
        except self.onnx.defs.SchemaError:
            return None

    def _has_float_output(self, node: onnx.NodeProto) -> bool:
        return any(self.inferred.get(name) == self.onnx.TensorProto.FLOAT for name in node.output)

    def _follow_inputs(self, node: onnx.NodeProto, schema: onnx.defs.OpSchema) -> int:
        """FP16 when every float input bound to a shared type variable already is FP16, else FP32."""
        TensorProto = self.onnx.TensorProto
        shared = _shared_type_vars(schema, node)
        types = [self.current.get(name) for name, type_str in _bound_inputs(schema, node) if type_str in shared]
        float_types = [t for t in types if t in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if float_types and all(t == TensorProto.FLOAT16 for t in float_types):
            return TensorProto.FLOAT16
        return TensorProto.FLOAT

    def _cast_float_inputs(self, node: onnx.NodeProto, precision: int) -> None:
        float16 = self.onnx.TensorProto.FLOAT16
        for index, name in enumerate(node.input):
            if name and self.current.get(name) == float16:
                node.input[index] = self._converted(name, precision)

    def _cast_tied_inputs(self, node: onnx.NodeProto, schema: onnx.defs.OpSchema, target: int) -> None:
        TensorProto = self.onnx.TensorProto
        shared = _shared_type_vars(schema, node)
        allowed = _allowed_types(schema)
        for index, (name, type_str) in enumerate(_bound_inputs(schema, node)):
            current = self.current.get(name)
            if not name or current not in (TensorProto.FLOAT, TensorProto.FLOAT16):
                continue
            if type_str in shared:
                wanted = target if target in allowed.get(type_str, ()) else TensorProto.FLOAT
            elif current in allowed.get(type_str, _literal_types(type_str, TensorProto)):
                continue
            else:
                wanted = TensorProto.FLOAT
            if wanted != current:
                node.input[index] = self._converted(name, wanted)

    def _record_outputs(self, node: onnx.NodeProto, schema: onnx.defs.OpSchema | None, target: int) -> None:
        TensorProto = self.onnx.TensorProto
        tied = _shared_type_vars(schema, node) if schema is not None else set()
        output_types = _output_type_strs(schema, node) if schema is not None else [""] * len(node.output)
        for name, type_str in zip(node.output, output_types):
            inferred = self.inferred.get(name, 0)
            if inferred == TensorProto.FLOAT and type_str in tied:
                self.current[name] = target
            else:
                self.current[name] = inferred

    def _converted(self, name: str, precision: int) -> str:
        """The name of ``name`` in ``precision``: a converted constant or a (shared) Cast node's output."""
        key = (name, precision)
        if key in self.cast_cache:
            return self.cast_cache[key]
        suffix = "fp16" if precision == self.onnx.TensorProto.FLOAT16 else "fp32"
        new_name = f"{name}__{suffix}"
        constant = self.constants.get(name)
        if constant is not None:
            self.new_initializers.append(self._convert_constant(constant, new_name, precision))
        else:
            self.new_nodes.append(self.onnx.helper.make_node("Cast", [name], [new_name], to=precision,
                                                             name=f"{name}__cast_{suffix}"))
            self.casts_added += 1
        self.current[new_name] = precision
        self.cast_cache[key] = new_name
        return new_name

    def _convert_constant(self, tensor: onnx.TensorProto, name: str, precision: int) -> onnx.TensorProto:
        numpy_helper = self.onnx.numpy_helper
        values = numpy_helper.to_array(tensor)
        if precision == self.onnx.TensorProto.FLOAT16:
            values = to_finite_fp16(values)
        else:
            values = values.astype(np.float32)
        return numpy_helper.from_array(values, name)

    def _restore_output_types(self) -> None:
        """Graph outputs produced in FP16 get a Cast back to their declared type."""
        for output in self.graph.output:
            declared = output.type.tensor_type.elem_type
            if self.current.get(output.name) in (None, declared):
                continue
            internal = f"{output.name}__internal"
            for node in self.new_nodes:
                _rename(node.output, output.name, internal)
                _rename(node.input, output.name, internal)
            self.new_nodes.append(self.onnx.helper.make_node(
                "Cast", [internal], [output.name], to=declared, name=f"{output.name}__cast_output"))
            self.casts_added += 1

    def _drop_unused(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        used.update(output.name for output in self.graph.output)
        kept = [init for init in self.graph.initializer if init.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        nodes = [n for n in self.graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
        del self.graph.node[:]
        self.graph.node.extend(nodes)


def to_finite_fp16(values: np.ndarray) -> np.ndarray:
    """``values`` as float16 with NaN kept, +-inf and out-of-range values clamped to +-65504."""
    return np.clip(np.nan_to_num(values, nan=np.nan, posinf=FP16_MAX, neginf=-FP16_MAX), -FP16_MAX, FP16_MAX).astype(
        np.float16)


def _allows_fp16(schema: onnx.defs.OpSchema, node: onnx.NodeProto) -> bool:
    """Whether every type variable tying this node's arguments admits float16."""
    from onnx import TensorProto

    allowed = _allowed_types(schema)
    return all(TensorProto.FLOAT16 in allowed.get(var, ()) for var in _shared_type_vars(schema, node))


def _element_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {init.name: init.data_type for init in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    return types


def _formal_type_strs(params: Iterable[onnx.defs.OpSchema.FormalParameter], count: int) -> list[str]:
    """The type string of each of ``count`` actual arguments (a variadic last parameter repeats)."""
    params = list(params)
    strs: list[str] = []
    for index in range(count):
        param = params[min(index, len(params) - 1)] if params else None
        strs.append(param.type_str if param is not None else "")
    return strs


def _bound_inputs(schema: onnx.defs.OpSchema, node: onnx.NodeProto) -> list[tuple[str, str]]:
    return list(zip(node.input, _formal_type_strs(schema.inputs, len(node.input))))


def _output_type_strs(schema: onnx.defs.OpSchema, node: onnx.NodeProto) -> list[str]:
    return _formal_type_strs(schema.outputs, len(node.output))


def _shared_type_vars(schema: onnx.defs.OpSchema, node: onnx.NodeProto) -> set[str]:
    """Type variables that tie several arguments: used by an output, or by two or more inputs."""
    variables = {constraint.type_param_str for constraint in schema.type_constraints}
    input_strs = [t for name, t in _bound_inputs(schema, node) if name and t in variables]
    output_strs = {t for t in _output_type_strs(schema, node) if t in variables}
    return output_strs | {t for t in input_strs if input_strs.count(t) > 1}


def _allowed_types(schema: onnx.defs.OpSchema) -> dict[str, tuple[int, ...]]:
    """Element types each type variable allows (only the plain ``tensor(...)`` entries)."""
    from onnx import TensorProto

    allowed: dict[str, tuple[int, ...]] = {}
    for constraint in schema.type_constraints:
        types = [_literal_types(t, TensorProto) for t in constraint.allowed_type_strs]
        allowed[constraint.type_param_str] = tuple(t for group in types for t in group)
    return allowed


def _literal_types(type_str: str, tensor_proto: type) -> tuple[int, ...]:
    match = re.fullmatch(r"tensor\((\w+)\)", type_str)
    if not match:
        return ()
    code = getattr(tensor_proto, match.group(1).upper(), None)
    return (code,) if isinstance(code, int) else ()


def _rename(names: onnx.RepeatedScalarContainer, old: str, new: str) -> None:
    for index, name in enumerate(names):
        if name == old:
            names[index] = new
