"""Module paths ("scopes") of the nodes of an exported PEM graph, and the blocks they group into.

``pem.export.onnx_export`` names nodes ``<module path>/<exporter's name>`` (wrapper nodes: ``/<name>``). Nodes the
simplifier made later (fused Gemm, reshapes around it) carry no separator: their scope comes from the module
path in the name of a weight they read (``model.x.linear1.weight`` -> ``model.x.linear1``), else from the node
that produces their first input.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pem.runtime.contract import SCOPE_SEPARATOR

if TYPE_CHECKING:
    import onnx

PARAMETER_SUFFIXES = ("weight", "bias", "weight_bias")


def node_scopes(graph: onnx.GraphProto) -> list[str]:
    """The scope of every node of ``graph`` (same order as ``graph.node``); '' for the export wrapper's own nodes."""
    initializers = {init.name for init in graph.initializer}
    scopes: list[str | None] = []
    producer_scope: dict[str, str | None] = {}
    for node in graph.node:
        scope = _named_scope(node.name)
        if scope is None:
            scope = _parameter_scope(node, initializers)
        if scope is None:
            scope = next((producer_scope[i] for i in node.input if producer_scope.get(i) is not None), None)
        scopes.append(scope)
        for output in node.output:
            producer_scope[output] = scope
    return [scope or "" for scope in scopes]


def block_of(scope: str) -> str:
    """The block a scope belongs to: the path up to its first index after the top two levels
    (``model.backbone.stages.0.0.branches.1`` -> ``model.backbone.stages.0``), else its first three levels."""
    if not scope:
        return ""
    parts = scope.split(".")
    for index in range(2, len(parts)):
        if parts[index].isdigit():
            return ".".join(parts[: index + 1])
    return ".".join(parts[:3])


def node_blocks(graph: onnx.GraphProto) -> list[str]:
    """The block of every node of ``graph`` (same order as ``graph.node``)."""
    return [block_of(scope) for scope in node_scopes(graph)]


def _named_scope(name: str) -> str | None:
    if SCOPE_SEPARATOR not in name:
        return None
    return name.rsplit(SCOPE_SEPARATOR, 1)[0]


def _parameter_scope(node: onnx.NodeProto, initializers: set[str]) -> str | None:
    for name in node.input:
        if name in initializers and "." in name:
            path, leaf = name.rsplit(".", 1)
            if leaf in PARAMETER_SUFFIXES:
                return path
    return None
