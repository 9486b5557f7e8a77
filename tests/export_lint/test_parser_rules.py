"""TensorRT ONNX-importer rules (``parser_rules.RULES``): one planted graph per rule is flagged, its repair is not."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pem.export.trt_support import LintReport, lint_model
from pem.export.trt_support.parser_rules import RULES

OPSET = 19
U8, F32, F16 = TensorProto.UINT8, TensorProto.FLOAT, TensorProto.FLOAT16
VERSIONS = ("10.3", "10.15")


def _value(name: str, dtype: int, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: Sequence[onnx.TensorProto] = (), check: bool = True) -> onnx.ModelProto:
    """A model of ``nodes``; ``check`` runs the ONNX checker (off for graphs ONNX itself would refuse)."""
    graph = helper.make_graph(nodes, "planted", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("pem", 1)])
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def uint8_intermediate(bad: bool) -> onnx.ModelProto:
    """The old uint8 export prefix: Transpose on the uint8 image, then Cast (bad), or Cast first (good)."""
    order = ([helper.make_node("Transpose", ["image"], ["nchw"], name="permute", perm=[0, 3, 1, 2]),
              helper.make_node("Cast", ["nchw"], ["y"], name="cast", to=F32)] if bad else
             [helper.make_node("Cast", ["image"], ["f"], name="cast", to=F32),
              helper.make_node("Transpose", ["f"], ["y"], name="permute", perm=[0, 3, 1, 2])])
    return _model(order, [_value("image", U8, [1, 4, 4, 3])], [_value("y", F32, [1, 3, 4, 4])])


def unconvertible_io_dtype(bad: bool) -> onnx.ModelProto:
    """A UINT16 graph input (convertDtype has no TensorRT type for it) or an INT32 one."""
    dtype = TensorProto.UINT16 if bad else TensorProto.INT32
    node = helper.make_node("Cast", ["x"], ["y"], name="cast", to=F32)
    return _model([node], [_value("x", dtype, [2])], [_value("y", F32, [2])])


def refused_input_type(bad: bool) -> onnx.ModelProto:
    """Resize of a UINT8 image straight to a graph output (notInvalidType refuses UINT8 data), or of FP32."""
    dtype = U8 if bad else F32
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="nearest")
    return _model([node], [_value("x", dtype, [1, 1, 2, 2])], [_value("y", dtype, [1, 1, 4, 4])], [scales])


def deform_conv_uniform_float(bad: bool) -> onnx.ModelProto:
    """DeformConv with an FP16 input and FP32 weights (bad; ONNX itself types them alike) or all FP16."""
    weight = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32 if bad else np.float16), "w")
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn", kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1])
    inputs = [_value("x", F16, [1, 2, 4, 4]), _value("offset", F16, [1, 18, 4, 4])]
    return _model([node], inputs, [_value("y", F16, [1, 2, 4, 4])], [weight], check=not bad)


def resize_coordinate_transform(bad: bool) -> onnx.ModelProto:
    """Resize with ``half_pixel_symmetric`` (not imported) or ``half_pixel``."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear",
                            coordinate_transformation_mode="half_pixel_symmetric" if bad else "half_pixel")
    return _model([node], [_value("x", F32, [1, 1, 2, 2])], [_value("y", F32, [1, 1, 4, 4])], [scales])


def resize_linear_dims(bad: bool) -> onnx.ModelProto:
    """Linear Resize scaling the first of 4 dimensions (bad) or the middle two of a channels-last tensor."""
    values = [2, 1, 2, 2] if bad else [1, 2, 2, 1]
    scales = numpy_helper.from_array(np.array(values, np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear")
    output = [size * int(scale) for size, scale in zip((1, 2, 2, 3), values)]
    return _model([node], [_value("x", F32, [1, 2, 2, 3])], [_value("y", F32, output)], [scales])


def reduce_axes_initializer(bad: bool) -> onnx.ModelProto:
    """ReduceMax whose axes come from a graph input (bad) or from an initializer."""
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="reduce", keepdims=1)
    inputs = [_value("x", F32, [2, 3])]
    initializers = []
    if bad:
        inputs.append(_value("axes", TensorProto.INT64, [1]))
    else:
        initializers.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    return _model([node], inputs, [_value("y", F32, ["a", "b"])], initializers)


def squeeze_axes_constant(bad: bool, op: str = "Unsqueeze") -> onnx.ModelProto:
    """Unsqueeze (or Squeeze) whose axes come from a graph input (bad before 10.7) or from a Constant node."""
    nodes = [helper.make_node(op, ["x", "axes"], ["y"], name="squeeze")]
    inputs = [_value("x", F32, [1, 3])]
    if bad:
        inputs.append(_value("axes", TensorProto.INT64, [1]))
    else:
        value = numpy_helper.from_array(np.array([0], np.int64))
        nodes.insert(0, helper.make_node("Constant", [], ["axes"], name="axes", value=value))
    rank = ["a", "b", "c"] if op == "Unsqueeze" else ["a"]
    return _model(nodes, inputs, [_value("y", F32, rank)])


def range_types(bad: bool) -> onnx.ModelProto:
    """Range over FP16 scalars (not imported; ONNX's schema has no float16 either) or over FP32 ones."""
    dtype = F16 if bad else F32
    node = helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="range")
    inputs = [_value(name, dtype, []) for name in ("start", "limit", "delta")]
    return _model([node], inputs, [_value("y", dtype, ["n"])], check=not bad)


def plugin_attribute_types(bad: bool) -> onnx.ModelProto:
    """A ``pem::Scale`` plugin node whose plugin_version is an INT attribute (bad) or the string '1'."""
    node = helper.make_node("Scale", ["x"], ["y"], name="plugin", domain="pem", plugin_namespace="pem",
                            plugin_version=1 if bad else "1")
    return _model([node], [_value("x", F32, [2])], [_value("y", F32, [2])], check=False)


PLANTED: dict[str, Callable[[bool], onnx.ModelProto]] = {
    "uint8_intermediate": uint8_intermediate,
    "unconvertible_io_dtype": unconvertible_io_dtype,
    "refused_input_type": refused_input_type,
    "deform_conv_uniform_float": deform_conv_uniform_float,
    "resize_coordinate_transform": resize_coordinate_transform,
    "resize_linear_dims": resize_linear_dims,
    "reduce_axes_initializer": reduce_axes_initializer,
    "squeeze_axes_constant": squeeze_axes_constant,
    "range_types": range_types,
    "plugin_attribute_types": plugin_attribute_types,
}
EXPECTED_NODE = {"uint8_intermediate": "permute", "unconvertible_io_dtype": "x", "refused_input_type": "resize",
                 "deform_conv_uniform_float": "dcn", "resize_coordinate_transform": "resize",
                 "resize_linear_dims": "resize",
                 "reduce_axes_initializer": "reduce", "squeeze_axes_constant": "squeeze", "range_types": "range",
                 "plugin_attribute_types": "plugin"}


def _parser_findings(report: LintReport, rule: str) -> list[tuple[str, str]]:
    return [(f.node, f.severity) for f in report.findings
            if f.status == "parser" and f.messages[0].startswith(f"{rule}:")]


def test_every_rule_has_a_planted_graph_and_a_source() -> None:
    assert set(PLANTED) == set(EXPECTED_NODE) == {rule.name for rule in RULES}
    for rule in RULES:
        assert rule.source.startswith("onnx/onnx-tensorrt @96e7811 (release/10.1-GA)")
        assert "L" in rule.source and ".cpp" in rule.source


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("rule", [name for name in PLANTED if name != "squeeze_axes_constant"])
def test_planted_graph_is_flagged_and_its_repair_is_not(rule: str, version: str) -> None:
    bad = lint_model(PLANTED[rule](True), version)
    assert _parser_findings(bad, rule) == [(EXPECTED_NODE[rule], "error")]
    assert bad.errors >= 1
    source = next(f.restriction for f in bad.findings if f.status == "parser")
    assert source == next(r.source for r in RULES if r.name == rule)
    good = lint_model(PLANTED[rule](False), version)
    assert not [f for f in good.findings if f.status == "parser"]


@pytest.mark.parametrize("op", ["Squeeze", "Unsqueeze"])
@pytest.mark.parametrize(("version", "flagged"), [("10.3", True), ("10.6", True), ("10.7", False), ("10.15", False)])
def test_squeeze_axes_must_be_constant_before_10_7(op: str, version: str, flagged: bool) -> None:
    report = lint_model(squeeze_axes_constant(True, op), version)
    assert _parser_findings(report, "squeeze_axes_constant") == ([("squeeze", "error")] if flagged else [])
    assert not _parser_findings(lint_model(squeeze_axes_constant(False, op), "10.3"), "squeeze_axes_constant")


def test_range_of_mixed_types_is_flagged() -> None:
    node = helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="range")
    inputs = [_value("start", F32, []), _value("limit", TensorProto.INT64, []), _value("delta", F32, [])]
    report = lint_model(_model([node], inputs, [_value("y", F32, ["n"])], check=False), "10.3")
    assert _parser_findings(report, "range_types") == [("range", "error")]


def test_uint8_constant_is_a_warning() -> None:
    value = numpy_helper.from_array(np.array([3], np.uint8))
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=value),
             helper.make_node("Cast", ["c"], ["y"], name="cast", to=F32)]
    report = lint_model(_model(nodes, [], [_value("y", F32, [1])]), "10.3")
    assert _parser_findings(report, "uint8_intermediate") == [("const", "warning")]


def test_scatter_elements_reduction_uses_the_plugin_path() -> None:
    """UINT8 data is refused by the ScatterElements layer path (reduction 'none') only."""
    def scatter(reduction: str) -> onnx.ModelProto:
        node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], name="scatter", axis=0,
                                reduction=reduction)
        inputs = [_value("x", U8, [4]), _value("i", TensorProto.INT64, [2]), _value("u", U8, [2])]
        return _model([node], inputs, [_value("y", U8, [4])])

    assert _parser_findings(lint_model(scatter("none"), "10.3"), "refused_input_type") == [("scatter", "error")]
    assert _parser_findings(lint_model(scatter("add"), "10.3"), "refused_input_type") == []


def test_newer_tensorrt_keeps_parser_errors() -> None:
    report = lint_model(uint8_intermediate(True), "11.4")
    assert _parser_findings(report, "uint8_intermediate") == [("permute", "error")] and report.errors == 1
