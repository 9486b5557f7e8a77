"""ONNX access for the lint: lazy import, loading, tensor types, constants, typed function bodies."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pem.runtime.errors import PemError

if TYPE_CHECKING:
    import numpy as np
    import onnx

STANDARD_DOMAINS = ("", "ai.onnx")

_TABLE_DTYPES = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "FLOAT8E4M3FN": "FP8", "FLOAT4E2M1": "FP4"}


class ModelLoadError(PemError, ValueError):
    """The input is not a readable ONNX model."""


def require_onnx() -> ModuleType:
    """``import onnx``, with an install hint when it is missing."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("the TensorRT lint needs the 'onnx' package: pip install 'pem-edge[export]'") from exc
    return onnx


def load_model(source: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """``(ModelProto, display name)`` from a path or a ``ModelProto`` (external weights are not loaded)."""
    onnx = require_onnx()
    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "<ModelProto>"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelLoadError(f"{path}: not an ONNX model")
    return model, str(path)


def default_opset(model: onnx.ModelProto) -> int | None:
    """The model's opset of the standard ONNX domain."""
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            return int(entry.version)
    return None


def dtype_name(type_proto: onnx.TypeProto | None) -> str | None:
    """Element type in the tables' spelling (``FP32``, ``FP16``, ``INT64`` ...), ``None`` when unknown."""
    onnx = require_onnx()
    if type_proto is None or not type_proto.HasField("tensor_type") or type_proto.tensor_type.elem_type == 0:
        return None
    name = onnx.TensorProto.DataType.Name(type_proto.tensor_type.elem_type)
    return _TABLE_DTYPES.get(name, name)


def rank(type_proto: onnx.TypeProto | None) -> int | None:
    """Tensor rank, ``None`` when the shape is unknown."""
    if type_proto is None or not type_proto.HasField("tensor_type"):
        return None
    tensor_type = type_proto.tensor_type
    return len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None


def subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """``(attribute name, GraphProto)`` for every graph-valued attribute of ``node`` (If, Loop, Scan)."""
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.name, attribute.g
        for index, graph in enumerate(attribute.graphs):
            yield f"{attribute.name}[{index}]", graph


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for _, sub in subgraphs(node):
            yield from _all_graphs(sub)


def tensor_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Name -> ``TypeProto`` for every tensor ONNX shape inference (or the model itself) can type."""
    onnx = require_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    types: dict[str, onnx.TypeProto] = {}
    for graph in _all_graphs(inferred.graph):
        for initializer in graph.initializer:
            types[initializer.name] = onnx.helper.make_tensor_type_proto(initializer.data_type, initializer.dims)
        for value in (*graph.input, *graph.value_info, *graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                types[value.name] = value.type
    return types


def constant_values(graph: onnx.GraphProto | None,
                    nodes: Iterable[onnx.NodeProto] | None = None) -> dict[str, np.ndarray]:
    """Name -> numpy array for initializers and ``Constant`` outputs (those that can be read here)."""
    onnx = require_onnx()
    values: dict[str, np.ndarray] = {}
    for initializer in graph.initializer if graph is not None else ():
        try:
            values[initializer.name] = onnx.numpy_helper.to_array(initializer)
        except Exception:
            continue
    for node in nodes if nodes is not None else graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = onnx.numpy_helper.to_array(attribute.t)
    return values


def local_functions(model: onnx.ModelProto) -> dict[tuple[str, str], onnx.FunctionProto]:
    """``(domain, name)`` -> ``FunctionProto`` for the model-local functions."""
    return {(function.domain, function.name): function for function in model.functions}


def _bind_attributes(function: onnx.FunctionProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Copies of the body nodes with attribute references resolved against the call site."""
    onnx = require_onnx()
    given = {attribute.name: attribute for attribute in node.attribute}
    defaults = {attribute.name: attribute for attribute in getattr(function, "attribute_proto", ())}
    body = []
    for original in function.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(original)
        del copy.attribute[:]
        for attribute in original.attribute:
            if not attribute.ref_attr_name:
                copy.attribute.append(attribute)
                continue
            bound = given.get(attribute.ref_attr_name) or defaults.get(attribute.ref_attr_name)
            if bound is not None:
                resolved = onnx.AttributeProto()
                resolved.CopyFrom(bound)
                resolved.name = attribute.name
                copy.attribute.append(resolved)
        body.append(copy)
    return body


def typed_function_body(
    model: onnx.ModelProto, node: onnx.NodeProto, function: onnx.FunctionProto, outer_types: dict[str, onnx.TypeProto]
) -> tuple[list[onnx.NodeProto], dict[str, onnx.TypeProto]]:
    """Body nodes of ``function`` as called by ``node``, and the tensor types inferred for that call."""
    onnx = require_onnx()
    helper = onnx.helper
    body = _bind_attributes(function, node)
    inputs = []
    for formal, actual in zip(function.input, node.input):
        value = onnx.ValueInfoProto(name=formal)
        if actual in outer_types:
            value.type.CopyFrom(outer_types[actual])
        inputs.append(value)
    outputs = [helper.make_empty_tensor_value_info(name) for name in function.output]
    graph = helper.make_graph(body, f"{function.domain}::{function.name}", inputs, outputs)
    call = helper.make_model(graph, opset_imports=list(function.opset_import), functions=list(model.functions),
                             ir_version=model.ir_version)
    return body, tensor_types(call)
