"""ConvTranspose -> phase convolutions: ONNX Runtime gives the same outputs, ineligible nodes stay."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pem.export.precision.phase_convs import rewrite_conv_transposes


def _graph(kernel: int, stride: int, pad: int, batch_norm: bool, **extra: object) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel * 10 + stride)
    tensors = {"w": rng.standard_normal((5, 7, kernel, kernel)), "b": rng.standard_normal(7),
               "g": rng.standard_normal(7), "beta": rng.standard_normal(7), "m": rng.standard_normal(7),
               "v": rng.uniform(0.5, 2, 7)}
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()]
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[stride, stride], pads=[pad] * 4,
                              kernel_shape=[kernel, kernel], name="model.up/convt", **extra)]
    if batch_norm:
        nodes.append(helper.make_node("BatchNormalization", ["y", "g", "beta", "m", "v"], ["z"], name="model.up/bn"))
    size = [1, 7, 6 * stride, 9 * stride]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 6, 9])],
                              [helper.make_tensor_value_info("z" if batch_norm else "y", TensorProto.FLOAT, size)],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(("kernel", "stride", "pad"), [(4, 2, 1), (2, 2, 0), (3, 3, 0), (6, 2, 2), (8, 4, 2)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_phase_convolutions_equal_the_transposed_convolution(kernel: int, stride: int, pad: int,
                                                            batch_norm: bool) -> None:
    model = _graph(kernel, stride, pad, batch_norm)
    x = np.random.default_rng(1).standard_normal((1, 5, 6, 9)).astype(np.float32)
    expected = _run(model, x)
    assert rewrite_conv_transposes(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Conv"] * stride**2 + ["Concat", "DepthToSpace"]
    assert all(node.name.startswith("model.up/convt#") for node in model.graph.node)  # same module scope
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-5, atol=2e-5)


def test_other_transposed_convolutions_are_left_alone() -> None:
    for model in (_graph(3, 2, 1, False), _graph(4, 2, 1, False, output_padding=[1, 1]),
                  _graph(4, 2, 1, False, group=1, dilations=[2, 2])):
        assert rewrite_conv_transposes(model) == 0
        assert [node.op_type for node in model.graph.node] == ["ConvTranspose"]
