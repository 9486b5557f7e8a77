"""The stored TensorRT ONNX operator tables and parser facts (JSON beside this module).

``operators_X.Y.json`` transcribes onnx/onnx-tensorrt ``docs/operators.md`` as published for TensorRT X.Y:
``tensorrt``, ``opset_range``, the type notes of its header, ``source`` (repository, path, commit, heading,
date read), ``transcription_notes`` and ``operators``: ``{op: {supported, types, restrictions[, checks]}}``,
where ``checks`` names the restrictions ``rules.CHECKS`` verifies. ``parser_facts.json`` holds version-gated
parser behaviour (first release parsing an op, plugin/local-function rules), each entry with its source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pem.export.trt_support.versions import Version, format_version, parse_version

DATA_DIR = Path(__file__).resolve().parent
TABLE_PREFIX = "operators_"


@dataclass(frozen=True)
class OperatorSpec:
    """One row of a table: supported flag, listed types, restriction text, checks this lint runs."""

    name: str
    supported: bool
    types: tuple[str, ...]
    restrictions: str
    checks: tuple[str, ...]


@dataclass(frozen=True)
class OperatorTable:
    """The operator support matrix of one TensorRT release."""

    version: Version
    opset_range: tuple[int, int]
    operators: dict[str, OperatorSpec]
    limited_types: dict[str, str]
    source: dict[str, str]

    @property
    def label(self) -> str:
        """Release as text, e.g. ``"10.8"``."""
        return format_version(self.version)

    def source_text(self) -> str:
        """``repository path @commit`` of the file the table was transcribed from."""
        source = self.source
        return f"{source['repository']} {source['path']} @{source['commit'][:8]}"


@dataclass(frozen=True)
class TableChoice:
    """Which stored table answers a requested TensorRT version, and how it was chosen."""

    requested: Version
    table: OperatorTable
    how: str

    @property
    def note(self) -> str:
        """One sentence saying which table is used for the requested version."""
        requested, used = format_version(self.requested), self.table.label
        if self.how == "exact":
            return f"TensorRT {requested}: table {used} ({self.table.source_text()})"
        if self.how == "nearest_below":
            return (f"TensorRT {requested}: no stored table for {requested}; using {used}, the nearest stored "
                    f"release below it ({self.table.source_text()})")
        if self.how == "newer":
            return (f"TensorRT {requested}: newer than the newest stored table; using {used} "
                    f"({self.table.source_text()}); operator-list findings are warnings, parser rules stay errors")
        return (f"TensorRT {requested}: no stored table at or below {requested}; using {used}, the oldest stored "
                f"release ({self.table.source_text()}); operators added after {requested} are judged by "
                "parser_facts.json only")


@dataclass(frozen=True)
class ParserFacts:
    """Version-gated parser behaviour: first release parsing an op, local-function and plugin rules."""

    ops_added: dict[str, Version]
    op_sources: dict[str, str]
    plugin_over_local_function: Version
    plugin_namespace_from_domain: Version
    plugin_version_attribute: str
    plugin_default_version: str
    plugin_namespace_attribute: str


def stored_versions() -> list[Version]:
    """Releases with a stored table, oldest first."""
    names = (path.stem[len(TABLE_PREFIX):] for path in DATA_DIR.glob(f"{TABLE_PREFIX}*.json"))
    return sorted(parse_version(name) for name in names)


@cache
def load_table(version: Version) -> OperatorTable:
    """The stored table of exactly ``version`` (``FileNotFoundError`` when not stored)."""
    path = DATA_DIR / f"{TABLE_PREFIX}{format_version(version)}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    operators = {
        name: OperatorSpec(name, bool(row["supported"]), tuple(row["types"]), row.get("restrictions", ""),
                           tuple(row.get("checks", ())))
        for name, row in data["operators"].items()
    }
    low, high = data["opset_range"]
    return OperatorTable(parse_version(data["tensorrt"]), (int(low), int(high)), operators,
                         dict(data.get("limited_types", {})), dict(data["source"]))


def choose_table(requested: Version) -> TableChoice:
    """The nearest stored table at or below ``requested``, else the oldest stored one.

    ``how``: ``exact``; ``nearest_below`` (a release between two stored tables); ``newer`` (a minor release past
    the newest table: its operator list is not known); ``oldest_above`` (older than every table: not supported).
    """
    versions = stored_versions()
    if not versions:
        raise FileNotFoundError(f"no operator tables stored in {DATA_DIR}")
    below = [version for version in versions if version <= requested]
    if not below:
        return TableChoice(requested, load_table(versions[0]), "oldest_above")
    if requested > versions[-1]:
        return TableChoice(requested, load_table(versions[-1]), "newer")
    how = "exact" if below[-1] == requested else "nearest_below"
    return TableChoice(requested, load_table(below[-1]), how)


@cache
def load_parser_facts() -> ParserFacts:
    """``parser_facts.json`` as typed values."""
    data = json.loads((DATA_DIR / "parser_facts.json").read_text(encoding="utf-8"))
    added = data["ops_added"]
    fallback = data["fallback_plugin"]
    return ParserFacts(
        ops_added={op: parse_version(entry["since"]) for op, entry in added.items()},
        op_sources={op: entry["source"] for op, entry in added.items()},
        plugin_over_local_function=parse_version(data["plugin_over_local_function"]["since"]),
        plugin_namespace_from_domain=parse_version(data["plugin_namespace_from_domain"]["since"]),
        plugin_version_attribute=fallback["version_attribute"],
        plugin_default_version=fallback["default_version"],
        plugin_namespace_attribute=fallback["namespace_attribute"],
    )
