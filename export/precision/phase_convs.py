"""ConvTranspose -> sub-pixel phase convolutions, so that ONNX Runtime's CPU provider runs upsampling in INT8.

ONNX Runtime has no INT8 ConvTranspose kernel on the CPU, so a Q/DQ ConvTranspose runs in FP32 between a
dequantize and a quantize. A stride-s transposed convolution whose output is exactly s times its input
(kernel - 2 * pad == stride) equals s*s ordinary convolutions, one per output phase (ry, rx), each reading only the
kernel taps of its phase, whose outputs interleave into the result: Concat over channels, then DepthToSpace
(mode DCR). The multiply-adds are the same as the transposed convolution's; a BatchNormalization that only
follows the ConvTranspose is folded into the phase weights. Other ConvTranspose nodes are left as they are.
"""
from __future__ import annotations

from math import ceil, floor
from typing import TYPE_CHECKING

import numpy as np

from pem.export._deps import require

if TYPE_CHECKING:
    import onnx


def rewrite_conv_transposes(model: onnx.ModelProto) -> int:
    """Rewrite every eligible ConvTranspose of ``model`` in place; returns how many were rewritten."""
    onnx = require("onnx")
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewritten, removed, new_nodes = 0, set(), []
    for node in graph.node:
        if id(node) in removed:
            continue
        geometry = _eligible(node, initializers)
        if geometry is None:
            new_nodes.append(node)
            continue
        weight = onnx.numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
        bias = (onnx.numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
                if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[1]))
        output = node.output[0]
        norm = _following_batch_norm(node, consumers, initializers)
        if norm is not None:
            weight, bias = _fold_batch_norm(weight, bias, norm, initializers)
            output = norm.output[0]
            removed.add(id(norm))
        new_nodes.extend(_phase_nodes(node, weight, bias, geometry, output, graph))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(n for n in new_nodes if id(n) not in removed)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def _eligible(node: onnx.NodeProto, initializers: dict) -> tuple[int, int, int] | None:
    """(stride, kernel, pad) when ``node`` is a 2-D, ungrouped, exactly-s-times ConvTranspose with constant weights."""
    if node.op_type != "ConvTranspose" or node.input[1] not in initializers:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        return None
    attrs = {a.name: a for a in node.attribute}
    output_padding = list(attrs["output_padding"].ints) if "output_padding" in attrs else []
    if "output_shape" in attrs or any(output_padding):
        return None
    if attrs.get("auto_pad") is not None and attrs["auto_pad"].s not in (b"", b"NOTSET"):
        return None
    strides = list(attrs["strides"].ints) if "strides" in attrs else [1, 1]
    pads = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
    dims = list(initializers[node.input[1]].dims)
    kernels = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else dims[2:]
    dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1, 1]
    group = attrs["group"].i if "group" in attrs else 1
    if len(dims) != 4 or group != 1 or dilations != [1, 1]:
        return None
    if len(set(strides)) != 1 or len(set(kernels)) != 1 or len(set(pads)) != 1:
        return None
    stride, kernel, pad = strides[0], kernels[0], pads[0]
    if stride < 2 or kernel - 2 * pad != stride:
        return None
    for phase in range(stride):
        first, taps = _phase_taps(phase, stride, kernel, pad)
        if not taps or first > 0 or first + len(taps) - 1 < 0:
            return None  # a phase would need negative Conv padding
    return stride, kernel, pad


def _following_batch_norm(node: onnx.NodeProto, consumers: dict, initializers: dict) -> onnx.NodeProto | None:
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "BatchNormalization" and len(users[0].output) == 1:
        if all(name in initializers for name in users[0].input[1:5]):
            return users[0]
    return None


def _fold_batch_norm(weight: np.ndarray, bias: np.ndarray, norm: onnx.NodeProto, initializers: dict) -> tuple[
        np.ndarray, np.ndarray]:
    from onnx import numpy_helper

    scale, shift, mean, var = (numpy_helper.to_array(initializers[n]).astype(np.float64) for n in norm.input[1:5])
    epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
    factor = scale / np.sqrt(var + epsilon)
    return weight * factor[None, :, None, None], (bias - mean) * factor + shift


def _phase_taps(phase: int, stride: int, kernel: int, pad: int) -> tuple[int, list[int]]:
    """The first input offset of ``phase`` and the kernel tap each offset reads (offset d reads tap
    phase + pad - stride * d)."""
    first = ceil((phase + pad - kernel + 1) / stride)
    last = floor((phase + pad) / stride)
    return first, [phase + pad - stride * d for d in range(first, last + 1)]


def _phase_nodes(node: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray, geometry: tuple[int, int, int],
                 output: str, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """One Conv per output phase, the Concat of their outputs and the DepthToSpace writing ``output``."""
    from onnx import helper, numpy_helper

    stride, kernel, pad = geometry
    phase_outputs, nodes = [], []
    bias_name = f"{node.name}#phase_bias"
    graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), bias_name))
    for ry in range(stride):
        first_y, taps_y = _phase_taps(ry, stride, kernel, pad)
        for rx in range(stride):
            first_x, taps_x = _phase_taps(rx, stride, kernel, pad)
            # Conv weight [C_out, C_in, ky, kx] from the ConvTranspose weight [C_in, C_out, k, k]
            phase_weight = weight[:, :, taps_y][:, :, :, taps_x].transpose(1, 0, 2, 3)
            name = f"{node.name}#phase{ry}{rx}"
            graph.initializer.append(numpy_helper.from_array(phase_weight.astype(np.float32), f"{name}_weight"))
            pads = [-first_y, -first_x, first_y + len(taps_y) - 1, first_x + len(taps_x) - 1]
            nodes.append(helper.make_node("Conv", [node.input[0], f"{name}_weight", bias_name], [f"{name}_out"],
                                          name=name, pads=pads, kernel_shape=[len(taps_y), len(taps_x)]))
            phase_outputs.append(f"{name}_out")
    nodes.append(helper.make_node("Concat", phase_outputs, [f"{node.name}#phases"], axis=1,
                                  name=f"{node.name}#concat"))
    nodes.append(helper.make_node("DepthToSpace", [f"{node.name}#phases"], [output], blocksize=stride, mode="DCR",
                                  name=f"{node.name}#depth_to_space"))
    return nodes
