"""The graph prepared for the TensorRT plugins still runs in ONNX Runtime and gives the same outputs."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pem.export.custom_ops import attach_local_functions
from pem.export.tensorrt.engine_builder import engine_plugins
from pem.export.tensorrt.graph_rewrite import rewrite_for_plugins
from pem.runtime.engine_manifest import PluginInfo


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def test_tiny_model_parity(tiny_onnx: Path, tiny_feed: dict[str, np.ndarray]) -> None:
    original = onnx.load(str(tiny_onnx))
    rewritten = copy.deepcopy(original)
    report = rewrite_for_plugins(rewritten)
    assert [len(report.rewritten[op]) for op in ("DeformConv2d", "PrototypeGather")] == [3, 6]
    assert report.kept == {} and report.plugin_ops == ["pem::DeformConv2d", "pem::PrototypeGather"]
    onnx.checker.check_model(rewritten, full_check=True)
    ops = {(n.domain, n.op_type) for n in rewritten.graph.node}
    assert ("", "DeformConv") not in ops and ("pem", "DeformConv2d") in ops
    plugin = next(n for n in rewritten.graph.node if n.op_type == "DeformConv2d")
    attrs = {a.name: helper.get_attribute_value(a) for a in plugin.attribute}
    assert attrs["plugin_namespace"] == b"pem" and attrs["plugin_version"] == b"1" and attrs["aot"] == 1
    assert attrs["pads"] == [1, 1, 1, 1] and len(plugin.input) == 5
    functions = {f.name: list(f.input) for f in rewritten.functions}
    assert functions == {"PrototypeGather": ["memory", "queries", "mask_logits", "skip_mask"],
                         "DeformConv2d": ["input", "offset", "mask", "weight_taps", "bias"]}
    for feed in (tiny_feed, {**tiny_feed, "orig_size": np.array([256, 256], np.int64)}):
        expected, actual = run(original, feed), run(rewritten, feed)
        assert expected.keys() == actual.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(actual[name], value, err_msg=name)
    assert engine_plugins(original) == (PluginInfo("ModulatedDeformConv2d", "", False),)
    assert engine_plugins(rewritten) == (PluginInfo("pem::DeformConv2d", "1", True),
                                         PluginInfo("pem::PrototypeGather", "1", True))
    again = copy.deepcopy(rewritten)
    assert rewrite_for_plugins(again).plugin_ops == [] and again == rewritten


def gather_model() -> onnx.ModelProto:
    """One ``pem::PrototypeGather`` (2 heads) whose skip flag is also a graph output."""
    node = helper.make_node("PrototypeGather", ["memory", "queries", "mask"], ["out"], domain="pem", num_heads=2,
                            name="gather")
    graph = helper.make_graph(
        [node], "gather",
        [helper.make_tensor_value_info("memory", TensorProto.FLOAT, [2, 5, 4]),
         helper.make_tensor_value_info("queries", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [2, 3, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    attach_local_functions(model)
    return model


def test_skip_mask_marks_images_whose_mask_excludes_everything() -> None:
    rng = np.random.default_rng(0)
    mask = rng.normal(size=(2, 3, 5)).astype(np.float32)
    mask[0] = -np.abs(mask[0]) - 0.1  # image 0: every token excluded for every query -> mask ignored
    feed = {"memory": rng.normal(size=(2, 5, 4)).astype(np.float32),
            "queries": rng.normal(size=(2, 3, 4)).astype(np.float32), "mask": mask}
    original = gather_model()
    rewritten = copy.deepcopy(original)
    rewrite_for_plugins(rewritten)
    rewritten.graph.output.append(helper.make_tensor_value_info("gather/skip_mask", TensorProto.FLOAT, [2]))
    actual = run(rewritten, feed)
    np.testing.assert_array_equal(actual["gather/skip_mask"], [1.0, 0.0])
    np.testing.assert_array_equal(actual["out"], run(original, feed)["out"])


def deform_model(group: int = 1, with_mask: bool = True, with_bias: bool = True,
                 pads: tuple[int, ...] = (1, 1, 1, 1)) -> onnx.ModelProto:
    """x [1, 4, 6, 6] -> DeformConv 3x3 (weight initializer [6, 4/group, 3, 3]) -> y [1, 6, 6, 6]."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 4 // group, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "b")][:2 if with_bias else 1]
    inputs = ["x", "w", "offset", "b" if with_bias else "", "mask" if with_mask else ""]
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node("DeformConv", inputs, ["y"], name="dcn", group=group, pads=list(pads), strides=[1, 1],
                            dilations=[1, 1])
    graph = helper.make_graph(
        [node], "dcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6]),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 18, 6, 6]),
         *([helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 9, 6, 6])] if with_mask else [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 6, 6])], initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("with_bias", [True, False])
def test_deform_conv_parity(with_bias: bool) -> None:
    rng = np.random.default_rng(2)
    feed = {"x": rng.normal(size=(1, 4, 6, 6)).astype(np.float32),
            "offset": rng.normal(scale=2.0, size=(1, 18, 6, 6)).astype(np.float32),
            "mask": rng.uniform(size=(1, 9, 6, 6)).astype(np.float32)}
    original = deform_model(with_bias=with_bias)
    rewritten = copy.deepcopy(original)
    assert rewrite_for_plugins(rewritten).rewritten["DeformConv2d"] == ["dcn"]
    onnx.checker.check_model(rewritten, full_check=True)
    np.testing.assert_allclose(run(rewritten, feed)["y"], run(original, feed)["y"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("model", "reason"), [
    (deform_model(group=2), "groups or offset groups other than 1"),
    (deform_model(with_mask=False), "no modulation mask"),
    (deform_model(pads=(1, 1, 0, 0)), r"asymmetric or non 2-D pads \[1, 1, 0, 0\]"),
])
def test_unsupported_deform_conv_is_kept(model: onnx.ModelProto, reason: str) -> None:
    before = copy.deepcopy(model)
    report = rewrite_for_plugins(model)
    assert report.plugin_ops == [] and list(report.kept) == ["dcn"]
    assert re.search(reason, report.kept["dcn"])
    assert model == before


def test_fp16_graph_parity(tiny_onnx: Path, tiny_feed: dict[str, np.ndarray]) -> None:
    """Engines are built from FP16 graphs too: their DeformConv (kept FP32 behind casts) is rewritten alike."""
    fp16 = pytest.importorskip("pem.export.precision.fp16")
    original, _ = fp16.convert_to_fp16(onnx.load(str(tiny_onnx)))
    rewritten = copy.deepcopy(original)
    assert rewrite_for_plugins(rewritten).plugin_ops == ["pem::DeformConv2d", "pem::PrototypeGather"]
    expected, actual = run(original, tiny_feed), run(rewritten, tiny_feed)
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)
