"""``lint_model``: every node of an ONNX model against a TensorRT operator table, plus precision rules."""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pem.export.trt_support.onnx_graph import (
    STANDARD_DOMAINS,
    constant_values,
    default_opset,
    load_model,
    local_functions,
    subgraphs,
    tensor_types,
    typed_function_body,
)
from pem.export.trt_support.parser_rules import GraphView, check_parser_rules
from pem.export.trt_support.report import Finding, LintReport, worst
from pem.export.trt_support.rules import CHECKS, NodeView, checked_dtypes, precision_warnings
from pem.export.trt_support.tables import ParserFacts, TableChoice, choose_table, load_parser_facts
from pem.export.trt_support.versions import Version, format_version, parse_version

if TYPE_CHECKING:
    import numpy as np
    import onnx

MODEL = "(model)"


def lint_model(model: str | os.PathLike[str] | onnx.ModelProto, trt_version: str,
               plugins: Iterable[str] = ()) -> LintReport:
    """Lint ``model`` (path or ``ModelProto``) for TensorRT ``trt_version`` ("X.Y").

    ``plugins`` names TensorRT plugins known to be registered at build time (``"pem::PrototypeGather"``);
    custom-domain nodes whose plugin is not named here are judged by their local-function fallback.
    Raises ``ValueError`` for a bad version string, ``FileNotFoundError``/``ModelLoadError`` for bad input.
    """
    requested = parse_version(trt_version)
    proto, name = load_model(model)
    choice = choose_table(requested)
    report = LintReport(name, format_version(requested), choice.table.label, dict(choice.table.source), choice.note)
    linter = _Linter(proto, choice, load_parser_facts(), frozenset(plugins), report.findings)
    linter.check_model()
    types, constants = tensor_types(proto), constant_values(proto.graph)
    linter.lint_nodes(list(proto.graph.node), types, constants, "", ())
    if choice.how == "newer":
        _soften_table_findings(report.findings, choice.table.label)
    for rule, violation in check_parser_rules(GraphView(proto, types, constants), requested):
        report.findings.append(Finding(violation.node, violation.op_type, violation.domain, "parser",
                                       violation.severity, [f"{rule.name}: {violation.message}"],
                                       restriction=rule.source))
    return report


def _soften_table_findings(findings: list[Finding], table: str) -> None:
    """Operator-list errors become warnings for a TensorRT newer than the newest table (it may parse more)."""
    for finding in findings:
        if finding.severity == "error" and finding.status in ("unsupported", "restricted"):
            finding.severity = "warning"
            finding.messages.append(f"a warning only: this TensorRT is newer than the {table} table")


class _Linter:
    """Walks the graph, function bodies and subgraphs, appending one finding per node."""

    def __init__(self, model: onnx.ModelProto, choice: TableChoice, facts: ParserFacts, plugins: frozenset[str],
                 findings: list[Finding]) -> None:
        self.model = model
        self.choice = choice
        self.table = choice.table
        self.requested: Version = choice.requested
        self.facts = facts
        self.plugins = plugins
        self.functions = local_functions(model)
        self.findings = findings

    def check_model(self) -> None:
        """Model-level findings: a table older than requested was unavailable, opset outside the table."""
        if self.choice.how == "oldest_above":
            self.findings.append(Finding(MODEL, "", "", "model", "warning", [self.choice.note]))
        opset = default_opset(self.model)
        low, high = self.table.opset_range
        if opset is not None and not low <= opset <= high:
            message = f"model opset {opset} is outside opsets {low}..{high} of the TensorRT {self.table.label} table"
            self.findings.append(Finding(MODEL, "", "", "model", "warning", [message]))

    def lint_nodes(self, nodes: list[onnx.NodeProto], types: dict[str, onnx.TypeProto],
                   constants: dict[str, np.ndarray], scope: str,
                   stack: tuple[tuple[str, str], ...]) -> None:
        """Lint ``nodes`` and, recursively, the local functions and subgraphs they use."""
        for index, node in enumerate(nodes):
            name = node.name or f"{node.op_type}#{index}"
            view = NodeView(node, types, constants)
            if node.domain in STANDARD_DOMAINS:
                self.findings.append(self._standard(view, name, scope))
            else:
                self._custom(view, name, scope, stack)
            for attribute, graph in subgraphs(node):
                inner = {**constants, **constant_values(graph)}
                self.lint_nodes(list(graph.node), types, inner, _join(scope, f"{attribute} of '{name}'"), stack)

    def _standard(self, view: NodeView, name: str, scope: str) -> Finding:
        """A standard-domain node against the table, the parser facts, its checks and the precision rules."""
        node = view.node
        op_type, label = node.op_type, self.table.label
        finding = Finding(name, op_type, "", "supported", "ok", scope=scope)
        spec = self.table.operators.get(op_type)
        since = self.facts.ops_added.get(op_type)
        if since is not None and self.requested < since:
            return _set(finding, "unsupported", "error",
                        f"{op_type} is parsed only from TensorRT {format_version(since)} "
                        f"(requested {format_version(self.requested)}; {self.facts.op_sources[op_type]})")
        if spec is None:
            if since is not None:
                return _set(finding, "supported", "ok", f"not in the {label} table; parsed from TensorRT "
                            f"{format_version(since)} ({self.facts.op_sources[op_type]}); types not checked")
            return _set(finding, "unsupported", "error", f"{op_type} is not listed in the TensorRT {label} table")
        finding.restriction = spec.restrictions
        if not spec.supported:
            return _set(finding, "unsupported", "error", f"{op_type} is marked not supported in the {label} table")
        problems: list[tuple[str, str]] = []
        for dtype in checked_dtypes(view):
            if spec.types and dtype not in spec.types:
                if dtype in self.table.limited_types:
                    problems.append(("warning", f"{dtype} has limited support ({self.table.limited_types[dtype]})"))
                else:
                    problems.append(("error", f"{dtype} is not among its supported types {', '.join(spec.types)}"))
        problems += [("error", message) for message in (CHECKS[check](view) for check in spec.checks) if message]
        if problems:
            finding.status = "restricted"
        finding.messages = [message for _, message in problems]
        warnings = precision_warnings(view)
        finding.messages += warnings
        finding.severity = worst([severity for severity, _ in problems] + ["warning"] * len(warnings))
        return finding

    def _custom(self, view: NodeView, name: str, scope: str, stack: tuple[tuple[str, str], ...]) -> None:
        """A custom-domain node: the plugin it needs, its local-function fallback, and that body's nodes."""
        node, facts = view.node, self.facts
        key = (node.domain, node.op_type)
        function = self.functions.get(key)
        version = str(view.attr(facts.plugin_version_attribute, facts.plugin_default_version))
        namespace = view.attr(facts.plugin_namespace_attribute)
        notes = []
        if namespace is None:
            if self.requested >= facts.plugin_namespace_from_domain:
                namespace = node.domain
            else:
                namespace = ""
                notes.append(f"TensorRT {format_version(self.requested)} looks the plugin up in the default "
                             f"namespace (the node domain is read as namespace only from "
                             f"{format_version(facts.plugin_namespace_from_domain)}); add attribute "
                             f"{facts.plugin_namespace_attribute}='{node.domain}' if the plugin is registered there")
        plugin = f"{namespace}::{node.op_type}" if namespace else node.op_type
        known = plugin in self.plugins
        described = f"{plugin} (version {version})"
        preferred = format_version(facts.plugin_over_local_function)
        lint_body = False
        if function is None and known:
            severity, message = "ok", f"uses TensorRT plugin {described} (declared available)"
        elif function is None:
            severity, message = "warning", (f"needs TensorRT plugin {described} registered before parsing; "
                                            "no local function fallback")
        elif self.requested < facts.plugin_over_local_function:
            severity, lint_body = "ok", True
            message = (f"local function is inlined: TensorRT {format_version(self.requested)} prefers plugins "
                       f"over local functions only from {preferred}; body linted")
        elif known:
            severity, message = "ok", (f"TensorRT plugin {described} replaces the local function (plugins are "
                                       f"preferred from {preferred}); body not linted")
        else:
            severity, lint_body = "ok", True
            message = (f"plugin or function fallback: TensorRT plugin {described} if registered, "
                       "else the local function body (linted)")
        inlined_anyway = function is not None and self.requested < facts.plugin_over_local_function
        messages = [message] if inlined_anyway else [message, *notes]
        self.findings.append(Finding(name, node.op_type, node.domain, "plugin", severity, messages, scope, plugin,
                                     function is not None))
        if lint_body and key in stack:
            self.findings.append(Finding(name, node.op_type, node.domain, "unsupported", "error",
                                         ["local function calls itself; TensorRT cannot inline it"], scope))
        elif lint_body:
            body, body_types = typed_function_body(self.model, node, function, view.types)
            body_scope = _join(scope, f"{node.domain}::{node.op_type} body via '{name}'")
            self.lint_nodes(body, body_types, constant_values(None, body), body_scope, (*stack, key))


def _set(finding: Finding, status: str, severity: str, message: str) -> Finding:
    finding.status, finding.severity = status, severity
    finding.messages.append(message)
    return finding


def _join(scope: str, part: str) -> str:
    return f"{scope} / {part}" if scope else part
