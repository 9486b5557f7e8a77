"""The ONNX definition of ``pem::PrototypeGather``: a model-local function of standard ops.

ONNX Runtime (and TensorRT when no plugin of that name is registered) runs the body; a TensorRT plugin registered
as ``pem::PrototypeGather`` replaces it. The body reproduces ``pem.ops.prototype_gather.prototype_gather``:

* similarity [B, h, Q, N] = per-head MatMul of the (not re-normalized) d-dim slices;
* a token is excluded for a query where its mask logit is < 0, unless every entry of the image is excluded;
* excluded entries get the lowest finite float added instead of the reference's -inf (same argmax wherever a
  similarity is above it, i.e. always for L2-normalized inputs, whose similarities lie in [-1, 1]), so a query
  with every token excluded selects token 0, like the reference;
* ArgMax over N (the last, contiguous axis) takes the first index on ties; GatherElements picks the d-dim slices.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pem.export._deps import require
from pem.runtime.contract import (
    PROTOTYPE_GATHER_DOMAIN,
    PROTOTYPE_GATHER_NUM_HEADS,
    PROTOTYPE_GATHER_OP,
    PROTOTYPE_GATHER_VERSION,
)

if TYPE_CHECKING:
    import onnx

MASKED_SIMILARITY = float(np.finfo(np.float32).min)


def prototype_gather_function(opset: int) -> onnx.FunctionProto:
    """The FunctionProto of ``pem::PrototypeGather`` for models importing the default domain at ``opset`` (>= 18).

    Inputs memory [B, N, C], queries [B, Q, C], mask_logits [B, Q, N] (one float dtype); output [B, Q, C];
    attribute ``num_heads`` (int, divides C).
    """
    onnx = require("onnx")
    helper, TensorProto = onnx.helper, onnx.TensorProto

    def const(name: str, values: list[int] | float) -> onnx.NodeProto:
        if isinstance(values, float):
            tensor = helper.make_tensor(name, TensorProto.FLOAT, [], [values])
        else:
            tensor = helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
        return helper.make_node("Constant", [], [name], value=tensor)

    heads = helper.make_node("Constant", [], ["heads"])
    heads.attribute.append(
        helper.make_attribute_ref("value_int", onnx.AttributeProto.INT, ref_attr_name=PROTOTYPE_GATHER_NUM_HEADS)
    )
    nodes = [
        heads,
        const("axis0", [0]),
        const("axis1", [1]),
        const("keep_two", [0, 0]),
        const("rest", [-1]),
        const("reduce_axes", [1, 2]),
        const("zero", 0.0),
        const("lowest", MASKED_SIMILARITY),
        helper.make_node("Unsqueeze", ["heads", "axis0"], ["heads_1d"]),
        helper.make_node("Concat", ["keep_two", "heads_1d", "rest"], ["split_shape"], axis=0),
        helper.make_node("Concat", ["keep_two", "rest"], ["merge_shape"], axis=0),
        # per-head slices: queries [B, h, Q, d], memory [B, h, d, N]; similarity [B, h, Q, N] (argmax on the last axis)
        helper.make_node("Reshape", ["queries", "split_shape"], ["queries_split"]),
        helper.make_node("Transpose", ["queries_split"], ["queries_heads"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["memory", "split_shape"], ["memory_split"]),
        helper.make_node("Transpose", ["memory_split"], ["memory_heads"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["queries_heads", "memory_heads"], ["similarity"]),
        # exclusion: logit < 0, switched off for an image where everything is excluded; applied as an additive
        # penalty [B, 1, Q, N] (lowest + s rounds to lowest for any |s| < 1e31)
        helper.make_node("CastLike", ["zero", "mask_logits"], ["zero_like"]),
        helper.make_node("Less", ["mask_logits", "zero_like"], ["excluded"]),
        helper.make_node("Not", ["excluded"], ["included"]),
        helper.make_node("Cast", ["included"], ["included_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["included_float", "reduce_axes"], ["any_float"], keepdims=1),
        helper.make_node("Cast", ["any_float"], ["any_included"], to=TensorProto.BOOL),
        helper.make_node("And", ["excluded", "any_included"], ["effective"]),
        helper.make_node("CastLike", ["lowest", "similarity"], ["lowest_like"]),
        helper.make_node("CastLike", ["zero", "similarity"], ["zero_sim"]),
        helper.make_node("Where", ["effective", "lowest_like", "zero_sim"], ["penalty_bqn"]),
        helper.make_node("Unsqueeze", ["penalty_bqn", "axis1"], ["penalty"]),
        helper.make_node("Add", ["similarity", "penalty"], ["masked"]),
        # selection and gather: index [B, h, Q, 1] -> [B, h, 1, Q] -> picked [B, h, d, Q] -> [B, Q, h, d]
        helper.make_node("ArgMax", ["masked"], ["index"], axis=3, keepdims=1, select_last_index=0),
        helper.make_node("Transpose", ["index"], ["index_q"], perm=[0, 1, 3, 2]),
        helper.make_node("Shape", ["memory_heads"], ["head_shape"], end=3),
        helper.make_node("Shape", ["index_q"], ["query_count"], start=3),
        helper.make_node("Concat", ["head_shape", "query_count"], ["gather_shape"], axis=0),
        helper.make_node("Expand", ["index_q", "gather_shape"], ["gather_index"]),
        helper.make_node("GatherElements", ["memory_heads", "gather_index"], ["picked"], axis=3),
        helper.make_node("Transpose", ["picked"], ["picked_q"], perm=[0, 3, 1, 2]),
        helper.make_node("Reshape", ["picked_q", "merge_shape"], ["prototypes"]),
    ]
    for node in nodes:  # named, so that profiles of the inlined body say where time goes
        node.name = f"{PROTOTYPE_GATHER_OP}/{node.output[0]}"
    return helper.make_function(
        PROTOTYPE_GATHER_DOMAIN,
        PROTOTYPE_GATHER_OP,
        ["memory", "queries", "mask_logits"],
        ["prototypes"],
        nodes,
        [helper.make_opsetid("", opset)],
        attributes=[PROTOTYPE_GATHER_NUM_HEADS],
        doc_string=__doc__,
    )


def attach_local_functions(model: onnx.ModelProto) -> None:
    """Add the ``pem::PrototypeGather`` function (and its domain import) to ``model`` if it uses the op; idempotent."""
    uses_op = any(
        n.domain == PROTOTYPE_GATHER_DOMAIN and n.op_type == PROTOTYPE_GATHER_OP for n in model.graph.node
    )
    if not uses_op:
        return
    imports = {entry.domain: entry for entry in model.opset_import}
    if PROTOTYPE_GATHER_DOMAIN not in imports:
        entry = model.opset_import.add()
        entry.domain, entry.version = PROTOTYPE_GATHER_DOMAIN, PROTOTYPE_GATHER_VERSION
    has_function = any(
        f.domain == PROTOTYPE_GATHER_DOMAIN and f.name == PROTOTYPE_GATHER_OP for f in model.functions
    )
    if not has_function:
        model.functions.append(prototype_gather_function(imports[""].version))
