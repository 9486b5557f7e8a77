"""Small real ONNX graphs for the TensorRT lint tests, built with ``onnx.helper`` and checked."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 19


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: Sequence[onnx.TensorProto] = ()) -> onnx.ModelProto:
    """An opset-19 model of ``nodes``, validated by the ONNX checker (with shape inference)."""
    graph = helper.make_graph(nodes, "lint_test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_relu_matmul() -> onnx.ModelProto:
    """Conv -> Relu -> MatMul in FP32: supported by every TensorRT 10 table."""
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    matrix = numpy_helper.from_array(np.ones((8, 5), np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "m"], ["y"], name="matmul")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 5])], [weight, matrix])


def deform_conv(pads: tuple[int, int, int, int] = (1, 1, 1, 1), dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """One opset-19 ``DeformConv`` (3x3, with mask) with the given pads and element type."""
    numpy_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    out_h = 8 + pads[0] + pads[2] - 2
    out_w = 8 + pads[1] + pads[3] - 2
    weight = numpy_helper.from_array(np.ones((4, 4, 3, 3), numpy_dtype), "w")
    node = helper.make_node("DeformConv", ["x", "w", "offset", "", "mask"], ["y"], name="dcn",
                            kernel_shape=[3, 3], pads=list(pads))
    inputs = [helper.make_tensor_value_info("x", dtype, [1, 4, 8, 8]),
              helper.make_tensor_value_info("offset", dtype, [1, 18, out_h, out_w]),
              helper.make_tensor_value_info("mask", dtype, [1, 9, out_h, out_w])]
    return _model([node], inputs, [helper.make_tensor_value_info("y", dtype, [1, 4, out_h, out_w])], [weight])


def det() -> onnx.ModelProto:
    """``Det``: marked N in onnx-tensorrt docs/operators.md for every stored TensorRT 10 release."""
    node = helper.make_node("Det", ["x"], ["y"], name="det")
    return _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])


def argmax(dtype: int = TensorProto.FLOAT16) -> onnx.ModelProto:
    """``ArgMax`` over the last axis of a [2, 5] tensor."""
    node = helper.make_node("ArgMax", ["x"], ["y"], name="argmax", axis=1, keepdims=1)
    return _model([node], [helper.make_tensor_value_info("x", dtype, [2, 5])],
                  [helper.make_tensor_value_info("y", TensorProto.INT64, [2, 1])])


def prototype_gather(dtype: int = TensorProto.FLOAT, with_function: bool = True) -> onnx.ModelProto:
    """``pem::PrototypeGather`` (argmax similarity + gather) with its standard-op body as a local function."""
    body = [
        helper.make_node("Transpose", ["features"], ["features_t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["queries", "features_t"], ["similarity"], name="similarity"),
        helper.make_node("ArgMax", ["similarity"], ["index"], name="argmax", keepdims=1),
        helper.make_node("Shape", ["queries"], ["query_shape"], name="shape"),
        helper.make_node("Expand", ["index", "query_shape"], ["index_full"], name="expand"),
        helper.make_node("GatherElements", ["features", "index_full"], ["gathered"], name="gather", axis=1),
    ]
    body[2].attribute.append(helper.make_attribute_ref("axis", onnx.AttributeProto.INT))
    function = helper.make_function("pem", "PrototypeGather", ["features", "queries"], ["gathered"], body,
                                    [helper.make_opsetid("", OPSET)], attributes=["axis"])
    node = helper.make_node("PrototypeGather", ["features", "queries"], ["out"], name="proto_gather", domain="pem",
                            axis=2)
    inputs = [helper.make_tensor_value_info("features", dtype, [1, 6, 4]),
              helper.make_tensor_value_info("queries", dtype, [1, 3, 4])]
    outputs = [helper.make_tensor_value_info("out", dtype, [1, 3, 4])]
    functions = [function] if with_function else []
    graph = helper.make_graph([node], "lint_test", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("pem", 1)],
                              functions=functions)
    if with_function:
        onnx.checker.check_model(model, full_check=True)
    return model


def matmul(dtype: int = TensorProto.INT64) -> onnx.ModelProto:
    """``MatMul`` of two [2, 2] tensors of ``dtype`` (TensorRT lists FP32/FP16/BF16 only)."""
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="matmul")
    inputs = [helper.make_tensor_value_info(name, dtype, [2, 2]) for name in ("a", "b")]
    return _model([node], inputs, [helper.make_tensor_value_info("y", dtype, [2, 2])])
