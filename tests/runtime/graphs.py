"""Small ONNX graphs that follow ``pem.runtime.contract`` exactly, built with ``onnx.helper``, for testing the
runtime's own logic (geometry, fusion glue, savers, CLI) without a trained model.

``raw`` graph: image -> pad to 32 -> 4x4 average pool -> (x - 127.5) / 32 -> 1x1 conv (with bias) to Q mask-logit
maps; the class logits are a constant. :func:`raw_reference` computes the same in numpy.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pem.runtime import contract

CLASSES = [
    {"id": 0, "name": "grass", "isthing": False, "color": [70, 140, 60], "dataset_id": 1},
    {"id": 1, "name": "sky", "isthing": False, "color": [150, 200, 240], "dataset_id": 4},
    {"id": 2, "name": "disk", "isthing": True, "color": [220, 40, 40], "dataset_id": 5},
    {"id": 3, "name": "box", "isthing": True, "color": [240, 160, 20], "dataset_id": 6},
]
NUM_QUERIES = 6


def default_logits() -> np.ndarray:
    """[Q, K+1] class logits: two confident stuff queries, three confident things, one void."""
    labels = [0, 1, 2, 3, 2, len(CLASSES)]
    logits = np.zeros((NUM_QUERIES, len(CLASSES) + 1), dtype=np.float32)
    logits[np.arange(NUM_QUERIES), labels] = 8.0
    return logits


def default_weights() -> np.ndarray:
    """[Q, 4] weights and bias of the 1x1 conv: queries 0, 1, 2 fire on red, green and blue, query 3 nowhere,
    query 4 copies query 2 (it loses every tie, so the overlap rule drops it), query 5 is void."""
    return np.array([[1, -1, -1, -2], [-1, 1, -1, -2], [-1, -1, 1, -2], [0.5, 0.5, -1, -6], [-1, -1, 1, -2],
                     [1, 1, 1, 0]], dtype=np.float32)


def metadata(head: str, layout: str = "uint8_nhwc", preset: str = "toy_panoptic", panoptic_on: bool = True,
             min_size: int = 64, max_size: int = 128, static_size: tuple[int, int] | None = None,
             classes: Sequence[dict[str, Any]] = CLASSES) -> dict[str, str]:
    """The metadata_props of a contract-conforming artifact."""
    shapes = {"batch": 1, "height": static_size[0] if static_size else "dynamic",
              "width": static_size[1] if static_size else "dynamic"}
    return {
        contract.META_FORMAT: contract.FORMAT,
        contract.META_PRESET: preset,
        contract.META_HEAD: head,
        contract.META_INPUT_LAYOUT: layout,
        contract.META_CLASSES: json.dumps(list(classes)),
        contract.META_TEST: json.dumps({"min_size": min_size, "max_size": max_size, "object_mask_threshold": 0.8,
                                        "overlap_threshold": 0.8, "panoptic_on": panoptic_on}),
        contract.META_NORMALIZATION: json.dumps({"mean": [0, 0, 0], "std": [1, 1, 1], "size_divisibility": 32}),
        contract.META_PRECISION: "fp32",
        contract.META_SHAPES: json.dumps(shapes),
    }


def _image_input(layout: str, static_size: tuple[int, int] | None,
                 batch: int = 1) -> tuple[onnx.ValueInfoProto, list, str]:
    """The image input and nodes that turn it into float [batch, 3, h, w] called ``x``."""
    h, w = static_size if static_size else ("h", "w")
    if layout == "uint8_nhwc":
        value = helper.make_tensor_value_info(contract.INPUT_IMAGE, TensorProto.UINT8, [batch, h, w, 3])
        nodes = [helper.make_node("Cast", [contract.INPUT_IMAGE], ["nhwc"], to=TensorProto.FLOAT),
                 helper.make_node("Transpose", ["nhwc"], ["x"], perm=[0, 3, 1, 2])]
    else:
        value = helper.make_tensor_value_info(contract.INPUT_IMAGE_FLOAT, TensorProto.FLOAT, [batch, 3, h, w])
        nodes = [helper.make_node("Identity", [contract.INPUT_IMAGE_FLOAT], ["x"])]
    return value, nodes, "x"


def _save(path: Path, graph: onnx.GraphProto, props: dict[str, str]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def raw_graph(path: Path, layout: str = "uint8_nhwc", static_size: tuple[int, int] | None = None,
              logits: np.ndarray | None = None, weights: np.ndarray | None = None,
              props: dict[str, str] | None = None, with_orig_size: bool = False, batch: int = 1) -> Path:
    """A ``raw``-head graph (module docstring) written to ``path``."""
    logits = default_logits() if logits is None else logits
    weights = default_weights() if weights is None else weights
    image, nodes, x = _image_input(layout, static_size, batch)
    inputs = [image]
    if with_orig_size:
        inputs.append(helper.make_tensor_value_info(contract.INPUT_ORIG_SIZE, TensorProto.INT64, [2]))
    init = [
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([4], dtype=np.int64), "four"),
        numpy_helper.from_array(np.array(32, dtype=np.int64), "d32"),
        numpy_helper.from_array(np.zeros(6, dtype=np.int64), "zeros6"),
        numpy_helper.from_array(np.array(127.5, dtype=np.float32), "mid"),
        numpy_helper.from_array(np.array(32.0, dtype=np.float32), "scale"),
        numpy_helper.from_array(weights[:, :3].reshape(len(weights), 3, 1, 1).astype(np.float32), "conv_w"),
        numpy_helper.from_array(weights[:, 3].astype(np.float32), "conv_b"),
        numpy_helper.from_array(logits[None].astype(np.float32), "logits_const"),
    ]
    nodes += [
        helper.make_node("Shape", [x], ["shape"]),
        helper.make_node("Slice", ["shape", "two", "four"], ["hw"]),
        helper.make_node("Mod", ["hw", "d32"], ["rem"]),
        helper.make_node("Sub", ["d32", "rem"], ["gap"]),
        helper.make_node("Mod", ["gap", "d32"], ["pad_hw"]),
        helper.make_node("Concat", ["zeros6", "pad_hw"], ["pads"], axis=0),
        helper.make_node("Pad", [x, "pads"], ["padded"], mode="constant"),
        helper.make_node("AveragePool", ["padded"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Sub", ["pooled", "mid"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["features"]),
        helper.make_node("Conv", ["features", "conv_w", "conv_b"], ["pred_masks"]),
        helper.make_node("Identity", ["logits_const"], ["pred_logits"]),
    ]
    outputs = [
        helper.make_tensor_value_info("pred_logits", TensorProto.FLOAT, [None, len(logits), logits.shape[1]]),
        helper.make_tensor_value_info("pred_masks", TensorProto.FLOAT, [None, len(weights), None, None]),
    ]
    graph = helper.make_graph(nodes, "raw_toy", inputs, outputs, init)
    return _save(path, graph, props if props is not None else metadata("raw", layout, static_size=static_size))


def raw_reference(resized: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The raw graph's ``pred_masks`` [Q, h'/4, w'/4] for a resized [h, w, 3] uint8 image, in numpy."""
    weights = default_weights() if weights is None else weights
    h, w = resized.shape[:2]
    x = np.zeros((3, -(-h // 32) * 32, -(-w // 32) * 32), dtype=np.float32)
    x[:, :h, :w] = resized.transpose(2, 0, 1)
    pooled = x.reshape(3, x.shape[1] // 4, 4, x.shape[2] // 4, 4).mean(axis=(2, 4))
    masks = np.tensordot(weights[:, :3], (pooled - 127.5) / 32.0, axes=(1, 0)) + weights[:, 3, None, None]
    return masks.astype(np.float32)


def _size_resize_nodes(source: str, out: str) -> list[onnx.NodeProto]:
    """Nearest resize of float [1, C, h, w] ``source`` to [1, C, H0, W0] given by the ``orig_size`` input."""
    return [
        helper.make_node("Slice", ["shape", "zero1", "two"], ["nc"]),
        helper.make_node("Concat", ["nc", contract.INPUT_ORIG_SIZE], ["sizes"], axis=0),
        helper.make_node("Resize", [source, "", "", "sizes"], [out], mode="nearest"),
    ]


def _class_map_nodes(x: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``cls`` int64 [1, H0, W0]: the strongest colour channel (0 red, 1 green, 2 blue) at the original size."""
    init = [numpy_helper.from_array(np.array([0], dtype=np.int64), "zero1"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "two")]
    nodes = [helper.make_node("Shape", [x], ["shape"]), *_size_resize_nodes(x, "big"),
             helper.make_node("ArgMax", ["big"], ["cls"], axis=1, keepdims=0)]
    return nodes, init


def semantic_graph(path: Path, props: dict[str, str] | None = None) -> Path:
    """A ``semantic``-head graph: class = strongest colour channel, at the original size."""
    image, nodes, x = _image_input("uint8_nhwc", None)
    size = helper.make_tensor_value_info(contract.INPUT_ORIG_SIZE, TensorProto.INT64, [2])
    class_nodes, init = _class_map_nodes(x)
    nodes += [*class_nodes, helper.make_node("Identity", ["cls"], ["semantic"])]
    output = helper.make_tensor_value_info("semantic", TensorProto.INT64, [1, None, None])
    graph = helper.make_graph(nodes, "semantic_toy", [image, size], [output], init)
    return _save(path, graph, props if props is not None else metadata("semantic", panoptic_on=False))


PANOPTIC_SCORES = np.array([0.95, 0.9, 0.99, 0.5], dtype=np.float32)
PANOPTIC_LABELS = np.array([2, 0, 1, 3], dtype=np.int64)
PANOPTIC_AREAS = {"winner_area": [10, 10, 20, 0], "mask_area": [10, 11, 40, 0], "visible_area": [9, 10, 20, 0]}


def panoptic_graph(path: Path, props: dict[str, str] | None = None) -> Path:
    """A ``panoptic``-head graph: winner = strongest colour channel (query 0 red, 1 green, 2 blue) at the original
    size; constant scores, labels and areas. Query 2 fails the overlap rule (20 / 40), query 3 is not kept."""
    image, nodes, x = _image_input("uint8_nhwc", None)
    size = helper.make_tensor_value_info(contract.INPUT_ORIG_SIZE, TensorProto.INT64, [2])
    class_nodes, init = _class_map_nodes(x)
    init += [numpy_helper.from_array(PANOPTIC_SCORES[None], "scores_c"),
             numpy_helper.from_array(PANOPTIC_LABELS[None], "labels_c")]
    init += [numpy_helper.from_array(np.array([v], dtype=np.int64), f"{k}_c") for k, v in PANOPTIC_AREAS.items()]
    nodes += [*class_nodes, helper.make_node("Cast", ["cls"], ["winner"], to=TensorProto.INT32),
              helper.make_node("Identity", ["scores_c"], ["query_scores"]),
              helper.make_node("Identity", ["labels_c"], ["query_labels"])]
    nodes += [helper.make_node("Identity", [f"{k}_c"], [k]) for k in PANOPTIC_AREAS]
    q = len(PANOPTIC_SCORES)
    outputs = [helper.make_tensor_value_info("query_scores", TensorProto.FLOAT, [1, q]),
               helper.make_tensor_value_info("query_labels", TensorProto.INT64, [1, q]),
               helper.make_tensor_value_info("winner", TensorProto.INT32, [1, None, None])]
    outputs += [helper.make_tensor_value_info(k, TensorProto.INT64, [1, q]) for k in PANOPTIC_AREAS]
    graph = helper.make_graph(nodes, "panoptic_toy", [image, size], outputs, init)
    return _save(path, graph, props if props is not None else metadata("panoptic"))
