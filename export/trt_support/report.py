"""Lint findings and the report: counts, a text table and a JSON-ready dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("ok", "warning", "error")


def worst(severities: list[str]) -> str:
    """The most severe of ``ok`` < ``warning`` < ``error`` (``ok`` for none)."""
    return max(severities, key=SEVERITIES.index, default="ok")


@dataclass
class Finding:
    """What the lint says about one node (or, with ``status == "model"``, the model as a whole)."""

    node: str
    op_type: str
    domain: str
    status: str
    severity: str
    messages: list[str] = field(default_factory=list)
    scope: str = ""
    plugin: str | None = None
    function_fallback: bool | None = None
    restriction: str = ""

    @property
    def op(self) -> str:
        """``Conv`` for standard ops, ``domain::Op`` for custom ones."""
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type

    @property
    def where(self) -> str:
        """Node name, prefixed with its scope (function body or subgraph) when it has one."""
        return f"{self.scope} / {self.node}" if self.scope else self.node


@dataclass
class LintReport:
    """Per-node findings for one model against one TensorRT operator table."""

    model: str
    requested_version: str
    table_version: str
    table_source: dict[str, str]
    table_note: str
    findings: list[Finding] = field(default_factory=list)

    def _count(self, severity: str) -> int:
        return sum(finding.severity == severity for finding in self.findings)

    @property
    def errors(self) -> int:
        """Number of findings with severity ``error``."""
        return self._count("error")

    @property
    def warnings(self) -> int:
        """Number of findings with severity ``warning``."""
        return self._count("warning")

    @property
    def ok(self) -> int:
        """Number of findings with severity ``ok``."""
        return self._count("ok")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``--json`` writes)."""
        findings = []
        for finding in self.findings:
            row = asdict(finding)
            row["op"] = finding.op
            findings.append(row)
        return {
            "model": self.model,
            "trt_version_requested": self.requested_version,
            "table": {"version": self.table_version, "note": self.table_note, "source": dict(self.table_source)},
            "counts": {"errors": self.errors, "warnings": self.warnings, "ok": self.ok},
            "findings": findings,
        }

    def to_text(self) -> str:
        """A table of every finding, headed by the table choice and closed by the counts."""
        header = ("node", "op", "status", "severity", "message")
        rows = [(f.where, f.op, f.status, f.severity, "; ".join(f.messages)) for f in self.findings]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

        def line(row: tuple[str, ...]) -> str:
            cells = [cell.ljust(width) for cell, width in zip(row[:4], widths)]
            return "  ".join([*cells, row[4]]).rstrip()

        rule = tuple("-" * width for width in widths) + ("",)
        lines = [f"model: {self.model}", self.table_note, "", line(header), line(rule)]
        lines += [line(row) for row in rows]
        lines += ["", f"{self.errors} errors, {self.warnings} warnings, {self.ok} ok"]
        return "\n".join(lines)
