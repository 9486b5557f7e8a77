"""How much of a graph's multiply-adds run in INT8: per-node MACs from real tensor shapes, Q/DQ classification.

Shapes come from one ONNX Runtime run of the FP32 graph on a real feed (the graph's sizes depend on the image),
so every conv/matmul-like node is counted, the FP32 islands included. A node of the Q/DQ graph runs in INT8 when
its data input and its weight input (where it has one) both come out of a ``DequantizeLinear``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING

import numpy as np

from pem.export._deps import require
from pem.runtime.contract import PROTOTYPE_GATHER_OP

if TYPE_CHECKING:
    import onnx

MAC_OP_TYPES = ("Conv", "ConvTranspose", "DeformConv", "MatMul", "Gemm", "Einsum", PROTOTYPE_GATHER_OP)


@dataclass(frozen=True)
class MacCoverage:
    """Multiply-adds of the conv/matmul-like nodes: ``total``, the ``int8`` part, and per op type (int8, total)."""

    total: int
    int8: int
    by_op_type: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def int8_share(self) -> float:
        """Fraction of the multiply-adds in INT8, 0..1."""
        return self.int8 / self.total if self.total else 0.0

    def to_json(self) -> dict[str, object]:
        """JSON-ready: GMACs and the share."""
        return {
            "total_gmacs": self.total / 1e9, "int8_gmacs": self.int8 / 1e9, "int8_share": self.int8_share,
            "by_op_type": {op: {"int8_gmacs": i / 1e9, "total_gmacs": t / 1e9} for op, (i, t) in
                           self.by_op_type.items()},
        }


def node_macs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, tuple[str, int]]:
    """Node name -> (op type, multiply-adds) of every conv/matmul-like node of ``model`` run on ``feed``."""
    shapes = _tensor_shapes(model, feed)
    macs: dict[str, tuple[str, int]] = {}
    for node in model.graph.node:
        if node.op_type in MAC_OP_TYPES:
            macs[node.name] = (node.op_type, _macs(node, shapes))
    return macs


def int8_node_names(qdq_model: onnx.ModelProto) -> set[str]:
    """Names of the nodes whose data and weight inputs are dequantized INT8 tensors."""
    dequantized = {out for node in qdq_model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    names = set()
    for node in qdq_model.graph.node:
        if node.op_type not in MAC_OP_TYPES:
            continue
        operands = [name for name in node.input[:2] if name]
        if operands and all(name in dequantized for name in operands):
            names.add(node.name)
    return names


def mac_coverage(macs: Mapping[str, tuple[str, int]], int8_nodes: set[str]) -> MacCoverage:
    """Sum ``macs`` (from :func:`node_macs` on the FP32 graph) into INT8 and total, per op type too."""
    by_op: dict[str, list[int]] = {}
    for name, (op_type, count) in macs.items():
        entry = by_op.setdefault(op_type, [0, 0])
        entry[0] += count if name in int8_nodes else 0
        entry[1] += count
    total = sum(entry[1] for entry in by_op.values())
    int8 = sum(entry[0] for entry in by_op.values())
    return MacCoverage(total, int8, {op: (i, t) for op, (i, t) in sorted(by_op.items())})


def _tensor_shapes(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Shapes of every input/output of the MAC nodes, by running ``model`` with them added as graph outputs."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    initializers = {init.name: tuple(init.dims) for init in model.graph.initializer}
    wanted = []
    for node in model.graph.node:
        if node.op_type in MAC_OP_TYPES:
            wanted.extend(n for n in (*node.input, *node.output) if n and n not in initializers)
    existing = {output.name for output in probe.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing and name not in feed:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, dict(feed))
    shapes = dict(initializers)
    shapes.update({name: tuple(value.shape) for name, value in zip(names, values)})
    shapes.update({name: tuple(value.shape) for name, value in feed.items()})
    return shapes


def _macs(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int:
    inputs = [shapes.get(name, ()) for name in node.input]
    output = shapes.get(node.output[0], ())
    if node.op_type in ("Conv", "DeformConv"):
        return prod(output) * prod(inputs[1][1:])
    if node.op_type == "ConvTranspose":
        return prod(inputs[0]) * prod(inputs[1][1:])
    if node.op_type == "MatMul":
        return prod(output) * inputs[0][-1]
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return prod(output) * inputs[0][0 if trans_a else 1]
    if node.op_type == "Einsum":
        return _einsum_macs(node, inputs)
    memory, queries = inputs[0], inputs[1]  # PrototypeGather: similarity [B, Q, N] over C channels
    return memory[0] * queries[1] * memory[1] * memory[2]


def _einsum_macs(node: onnx.NodeProto, inputs: list[tuple[int, ...]]) -> int:
    """The product of the sizes of every index letter of the equation (one multiply-add per combination)."""
    equation = next(a.s.decode() for a in node.attribute if a.name == "equation")
    operands = equation.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, shape in zip(operands, inputs):
        for letter, size in zip(re.sub(r"[^a-zA-Z]", "", letters), shape):
            sizes[letter] = size
    return prod(sizes.values())
