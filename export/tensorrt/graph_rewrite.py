"""Prepare an exported PEM graph for our TensorRT plugins, keeping it runnable by ONNX Runtime.

* Standard ``DeformConv`` nodes (one group, one offset group, a mask, 2-D, symmetric pads) become
  ``pem::DeformConv2d(input, offset, mask, weight_taps, bias)``: inputs in the order of the Triton kernel, the
  weight transposed to taps-first float32 [kh, kw, Cout, Cin] and the bias float32 [Cout] (zeros when absent).
  A model-local function whose body transposes the weight back and calls the standard ``DeformConv`` defines it,
  so ONNX Runtime runs the rewritten graph, and TensorRT without our plugin inlines the body (its own
  ``DeformConv`` import). TensorRT's ONNX importer owns the name ``DeformConv``, hence the own op name.
* ``pem::PrototypeGather(memory, queries, mask_logits)`` gets a fourth input ``skip_mask`` float32 [B], 1 where
  the image's mask excludes every (query, token) pair (the kernel ignores the mask of such an image), computed by
  standard ops. The local function takes the extra input and ignores it: its body recomputes the same rule.

Rewritten nodes carry ``plugin_namespace="pem"`` and ``plugin_version="1"`` (how the TensorRT ONNX parser picks a
registered plugin over a local function of the same name) and ``aot=1`` (the plugin's ahead-of-time kernel).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pem.export._deps import require
from pem.export.custom_ops import prototype_gather_function
from pem.export.tensorrt.plugins import DEFORM_CONV2D_OP, PLUGIN_VERSION
from pem.runtime.contract import PROTOTYPE_GATHER_DOMAIN, PROTOTYPE_GATHER_OP, PROTOTYPE_GATHER_VERSION

if TYPE_CHECKING:
    import onnx

__all__ = ["PLUGIN_ATTRIBUTES", "RewriteReport", "deform_conv2d_function", "rewrite_for_plugins"]

SKIP_MASK_INPUT = "skip_mask"
DEFORM_ATTRIBUTES = ("strides", "pads", "dilations")
# attributes the TensorRT ONNX parser reads to import a node as a plugin (not passed to the plugin itself)
PLUGIN_ATTRIBUTES = ("plugin_namespace", "plugin_version", "aot")
TAPS_FIRST = [2, 3, 0, 1]  # [Cout, Cin, kh, kw] <-> [kh, kw, Cout, Cin] (the permutation is its own inverse)


@dataclass
class RewriteReport:
    """What :func:`rewrite_for_plugins` did: node names rewritten per op, and DeformConv nodes kept with the reason."""

    rewritten: dict[str, list[str]] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def plugin_ops(self) -> list[str]:
        """``pem::Op`` of every op with at least one rewritten node."""
        return sorted(f"{PROTOTYPE_GATHER_DOMAIN}::{op}" for op, nodes in self.rewritten.items() if nodes)


def rewrite_for_plugins(model: onnx.ModelProto) -> RewriteReport:
    """Rewrite ``model`` in place for the ``pem`` TensorRT plugins (see the module docstring) -> what changed."""
    opset = {entry.domain: entry.version for entry in model.opset_import}.get("", 0)
    if opset < 19:
        raise ValueError(f"the graph imports the default ONNX domain at opset {opset}; DeformConv needs >= 19")
    report = RewriteReport(rewritten={DEFORM_CONV2D_OP: [], PROTOTYPE_GATHER_OP: []})
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type == "DeformConv":
            reason = _unsupported_deform_conv(node, initializers)
            if reason:
                report.kept[node.name] = reason
                nodes.append(node)
                continue
            nodes.extend(_deform_conv2d_nodes(node, initializers, graph))
            report.rewritten[DEFORM_CONV2D_OP].append(node.name)
        elif node.domain == PROTOTYPE_GATHER_DOMAIN and node.op_type == PROTOTYPE_GATHER_OP and len(node.input) == 3:
            nodes.extend(_prototype_gather_nodes(node))
            report.rewritten[PROTOTYPE_GATHER_OP].append(node.name)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _update_functions(model, opset, report)
    return report


def deform_conv2d_function(opset: int) -> onnx.FunctionProto:
    """``pem::DeformConv2d``: input [B, Cin, H, W], offset [B, 2*kh*kw, Ho, Wo], mask [B, kh*kw, Ho, Wo] (one float
    dtype), weight_taps float32 [kh, kw, Cout, Cin], bias float32 [Cout] -> output [B, Cout, Ho, Wo] in the input
    dtype; attributes strides, pads, dilations as for ``DeformConv``."""
    onnx = require("onnx")
    helper = onnx.helper
    conv = helper.make_node("DeformConv", ["input", "weight", "offset", "bias_like", "mask"], ["output"])
    for name in DEFORM_ATTRIBUTES:
        conv.attribute.append(helper.make_attribute_ref(name, onnx.AttributeProto.INTS))
    nodes = [
        helper.make_node("Transpose", ["weight_taps"], ["weight_float"], perm=TAPS_FIRST),
        helper.make_node("CastLike", ["weight_float", "input"], ["weight"]),
        helper.make_node("CastLike", ["bias", "input"], ["bias_like"]),
        conv,
    ]
    return helper.make_function(
        PROTOTYPE_GATHER_DOMAIN, DEFORM_CONV2D_OP, ["input", "offset", "mask", "weight_taps", "bias"], ["output"],
        nodes, [helper.make_opsetid("", opset)], attributes=[*DEFORM_ATTRIBUTES, *PLUGIN_ATTRIBUTES],
        doc_string=deform_conv2d_function.__doc__,
    )


def _unsupported_deform_conv(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> str | None:
    """Why the plugin cannot run this DeformConv node (None when it can)."""
    onnx = require("onnx")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("group", 1) != 1 or attrs.get("offset_group", 1) != 1:
        return "groups or offset groups other than 1"
    if len(node.input) < 5 or not node.input[4]:
        return "no modulation mask"
    if node.input[1] in initializers and len(initializers[node.input[1]].dims) != 4:
        return "not a 2-D convolution"
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[:2] != pads[2:]:
        return f"asymmetric or non 2-D pads {pads}"
    return None


def _deform_conv2d_nodes(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto],
                         graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The ``pem::DeformConv2d`` node replacing ``node``, after the nodes preparing its weight and bias."""
    onnx = require("onnx")
    helper = onnx.helper
    x, weight, offset = node.input[:3]
    bias = node.input[3] if len(node.input) > 3 else ""
    prefix = node.name or node.output[0]
    taps, taps_float, bias_float = f"{prefix}/weight_taps", f"{prefix}/weight_taps_float", f"{prefix}/bias_float"
    nodes = [
        helper.make_node("Transpose", [weight], [taps], name=f"{prefix}/weight_taps", perm=TAPS_FIRST),
        helper.make_node("Cast", [taps], [taps_float], name=f"{prefix}/weight_float", to=onnx.TensorProto.FLOAT),
    ]
    if bias:
        nodes.append(helper.make_node("Cast", [bias], [bias_float], name=f"{prefix}/bias_float",
                                      to=onnx.TensorProto.FLOAT))
    else:
        out_channels = int(initializers[weight].dims[0]) if weight in initializers else None
        if out_channels is None:
            raise ValueError(f"DeformConv node {node.name!r} has neither a bias nor a constant weight")
        graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(out_channels, np.float32), bias_float))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    plugin = helper.make_node(
        DEFORM_CONV2D_OP, [x, offset, node.input[4], taps_float, bias_float], list(node.output), name=node.name,
        domain=PROTOTYPE_GATHER_DOMAIN, strides=list(attrs.get("strides", [1, 1])),
        pads=list(attrs.get("pads", [0, 0, 0, 0])), dilations=list(attrs.get("dilations", [1, 1])),
        **_plugin_attributes(),
    )
    return [*nodes, plugin]


def _prototype_gather_nodes(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Standard ops computing the node's skip flag, then the node with it as fourth input."""
    onnx = require("onnx")
    helper = onnx.helper
    mask = node.input[2]
    prefix = node.name or node.output[0]
    zero, excluded, excluded_float, axes, skip = (f"{prefix}/{s}" for s in
                                                  ("zero", "excluded", "excluded_float", "axes", SKIP_MASK_INPUT))
    nodes = [
        helper.make_node("Constant", [], [zero], name=zero, value=helper.make_tensor(zero, onnx.TensorProto.FLOAT,
                                                                                      [], [0.0])),
        helper.make_node("Constant", [], [axes], name=axes, value=helper.make_tensor(axes, onnx.TensorProto.INT64,
                                                                                      [2], [1, 2])),
        helper.make_node("CastLike", [zero, mask], [f"{zero}_like"], name=f"{zero}_like"),
        helper.make_node("Less", [mask, f"{zero}_like"], [excluded], name=excluded),
        helper.make_node("Cast", [excluded], [excluded_float], name=excluded_float, to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceMin", [excluded_float, axes], [skip], name=skip, keepdims=0),
    ]
    gather = onnx.NodeProto()
    gather.CopyFrom(node)
    gather.input.append(skip)
    gather.attribute.extend(helper.make_attribute(k, v) for k, v in _plugin_attributes().items())
    return [*nodes, gather]


def _plugin_attributes() -> dict[str, str | int]:
    return {"plugin_namespace": PROTOTYPE_GATHER_DOMAIN, "plugin_version": PLUGIN_VERSION, "aot": 1}


def _update_functions(model: onnx.ModelProto, opset: int, report: RewriteReport) -> None:
    """Replace the local functions of the rewritten ops (and import the ``pem`` domain)."""
    ops = {op for op, nodes in report.rewritten.items() if nodes}
    if not ops:
        return
    functions = [f for f in model.functions if not (f.domain == PROTOTYPE_GATHER_DOMAIN and f.name in ops)]
    if PROTOTYPE_GATHER_OP in ops:
        gather = prototype_gather_function(opset)
        gather.input.append(SKIP_MASK_INPUT)
        gather.attribute.extend(PLUGIN_ATTRIBUTES)
        functions.append(gather)
    if DEFORM_CONV2D_OP in ops:
        functions.append(deform_conv2d_function(opset))
    del model.functions[:]
    model.functions.extend(functions)
    if all(entry.domain != PROTOTYPE_GATHER_DOMAIN for entry in model.opset_import):
        entry = model.opset_import.add()
        entry.domain, entry.version = PROTOTYPE_GATHER_DOMAIN, PROTOTYPE_GATHER_VERSION
