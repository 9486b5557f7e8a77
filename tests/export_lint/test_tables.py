"""The stored operator tables and parser facts: every file loads, names its source, resolves versions."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pem.export.trt_support.tables import DATA_DIR, choose_table, load_parser_facts, load_table, stored_versions
from pem.export.trt_support.versions import parse_version

TABLE_FILES = sorted(DATA_DIR.glob("operators_*.json"))


def test_expected_releases_are_stored() -> None:
    assert {(10, 3), (10, 8), (10, 12), (10, 13), (10, 15)} <= set(stored_versions())


@pytest.mark.parametrize("path", TABLE_FILES, ids=lambda path: path.stem)
def test_table_loads_and_names_its_source(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert path.stem == f"operators_{data['tensorrt']}"
    source = data["source"]
    assert source["repository"] == "onnx/onnx-tensorrt" and source["path"] == "docs/operators.md"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", source["read_on"])
    # docs/operators.md kept the heading 'TensorRT 10.0' up to 10.7; the 10.3 table was read at 10.1-GA
    heading_release = "10.0" if data["tensorrt"] == "10.3" else data["tensorrt"]
    assert source["heading"].startswith(f"TensorRT {heading_release} supports operators")
    table = load_table(parse_version(data["tensorrt"]))
    assert len(table.operators) > 150 and table.opset_range[0] == 9
    assert table.operators["Conv"].supported and "FP32" in table.operators["Conv"].types
    # Det is 'N' in every stored table; the lint tests use it as the unsupported standard op.
    assert not table.operators["Det"].supported
    deform = table.operators["DeformConv"]
    assert deform.types == ("FP32", "FP16") and "symmetric_pads" in deform.checks


def test_parser_facts_have_sources() -> None:
    facts = load_parser_facts()
    assert facts.ops_added["DeformConv"] == (10, 1)
    assert facts.plugin_over_local_function == (10, 7)
    assert facts.plugin_namespace_from_domain == (10, 10)
    assert all(facts.op_sources[op] for op in facts.ops_added)


@pytest.mark.parametrize(("requested", "used", "how"), [
    ("10.15", (10, 15), "exact"),
    ("10.14", (10, 13), "nearest_below"),
    ("11.2", (10, 15), "newer"),
    ("10.16", (10, 15), "newer"),
    ("10.3.0.26", (10, 3), "exact"),
    ("10.7", (10, 3), "nearest_below"),
    ("10.2", (10, 3), "oldest_above"),
])
def test_version_maps_to_nearest_stored_table(requested: str, used: tuple[int, int], how: str) -> None:
    choice = choose_table(parse_version(requested))
    assert (choice.table.version, choice.how) == (used, how)
    assert choice.table.label in choice.note


@pytest.mark.parametrize("text", ["ten", "10", "10.x", "", "v10.3"])
def test_bad_version_format(text: str) -> None:
    with pytest.raises(ValueError, match="unknown TensorRT version format"):
        parse_version(text)


SUPPORTED = [(10, minor) for minor in range(3, stored_versions()[-1][1] + 1)]


@pytest.mark.parametrize("version", SUPPORTED, ids=lambda version: f"{version[0]}.{version[1]}")
def test_supported_releases_never_use_a_newer_table(version: tuple[int, int]) -> None:
    """Every release from JetPack 6.2's 10.3 to the newest table is judged by its own table or an older one."""
    choice = choose_table(version)
    assert choice.how in ("exact", "nearest_below") and choice.table.version <= version
    assert (choice.how == "exact") == (version in stored_versions())
    if version == (10, 3):
        assert choice.how == "exact"
