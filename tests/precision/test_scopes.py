"""Module paths of exported nodes and the blocks they group into."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pem.export.precision.scopes import block_of, node_blocks, node_scopes


@pytest.mark.parametrize(("scope", "block"), [
    ("model.backbone.stages.0.0.branches.1", "model.backbone.stages.0"),
    ("model.backbone.stem.0.conv", "model.backbone.stem.0"),
    ("model.backbone.res2.1.conv3", "model.backbone.res2.1"),
    ("model.pixel_decoder.global_context.conv", "model.pixel_decoder.global_context"),
    ("model.transformer_decoder.ffn_layers.3.linear1", "model.transformer_decoder.ffn_layers.3"),
    ("model.transformer_decoder.head", "model.transformer_decoder.head"),
    ("", ""),
])
def test_blocks(scope: str, block: str) -> None:
    assert block_of(scope) == block


def test_scopes_of_named_weighted_and_derived_nodes() -> None:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "model.decoder.ffn.linear1.weight")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="model.encoder.block.0/node_relu"),  # named by the export
        helper.make_node("Reshape", ["a", "shape"], ["b"], name="val_7"),  # made by the simplifier: its producer's
        helper.make_node("Gemm", ["b", "model.decoder.ffn.linear1.weight"], ["c"], name="val_9"),  # its weight's
        helper.make_node("Neg", ["c"], ["y"], name="/node_neg"),  # the export wrapper itself
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [weight, numpy_helper.from_array(np.array([2, 4], np.int64), "shape")])
    assert node_scopes(graph) == ["model.encoder.block.0", "model.encoder.block.0", "model.decoder.ffn.linear1", ""]
    assert node_blocks(graph) == ["model.encoder.block.0", "model.encoder.block.0", "model.decoder.ffn", ""]


def test_exported_graph_nodes_carry_their_module_paths(tiny_onnx: Callable[..., Path]) -> None:
    graph = onnx.load(str(tiny_onnx("panoptic", (128, 128)))).graph
    blocks = set(node_blocks(graph))
    assert {"model.backbone.stages.0", "model.pixel_decoder.deform_layers.2", "model.transformer_decoder.head",
            "model.transformer_decoder.cross_attention_layers.5", ""} <= blocks
    assert [s for n, s in zip(graph.node, node_scopes(graph)) if n.op_type == "DeformConv"] == [
        f"model.pixel_decoder.deform_layers.{i}.deform_conv" for i in range(3)]
