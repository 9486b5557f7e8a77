"""``lint_model`` on small real graphs: support status, restrictions, plugins, precision rules."""
from __future__ import annotations

import pytest
from onnx import TensorProto

from pem.export.trt_support import Finding, LintReport, lint_model
from pem.export.trt_support.tables import stored_versions
from pem.export.trt_support.versions import format_version
from tests.export_lint import models

STORED = [format_version(version) for version in stored_versions()]


def _by_node(report: LintReport) -> dict[str, Finding]:
    """Table findings keyed by scoped node name (parser-rule findings are tested in test_parser_rules.py)."""
    return {finding.where: finding for finding in report.findings if finding.status != "parser"}


@pytest.mark.parametrize("version", STORED)
def test_supported_graph_passes_on_every_table(version: str) -> None:
    report = lint_model(models.conv_relu_matmul(), version)
    assert (report.errors, report.warnings, report.ok) == (0, 0, 3)
    assert {f.status for f in report.findings} == {"supported"}
    assert report.table_version == version


@pytest.mark.parametrize("version", STORED)
def test_deform_conv_accepted_on_tables_from_10_1(version: str) -> None:
    finding = _by_node(lint_model(models.deform_conv(), version))["dcn"]
    assert (finding.status, finding.severity) == ("supported", "ok")


def test_deform_conv_asymmetric_pads_flagged() -> None:
    finding = _by_node(lint_model(models.deform_conv(pads=(0, 0, 1, 1)), "10.15"))["dcn"]
    assert (finding.status, finding.severity) == ("restricted", "error")
    assert "asymmetric pads" in finding.messages[0]


def test_deform_conv_fp16_precision_warning() -> None:
    report = lint_model(models.deform_conv(dtype=TensorProto.FLOAT16), "10.13")
    finding = _by_node(report)["dcn"]
    assert (finding.status, finding.severity) == ("supported", "warning")
    assert "FP32" in finding.messages[0] and "pem::DeformConv2d" in finding.messages[0]
    assert report.errors == 0


def test_deform_conv_before_10_1_is_an_error() -> None:
    report = lint_model(models.deform_conv(), "10.0")
    finding = _by_node(report)["dcn"]
    assert (finding.status, finding.severity) == ("unsupported", "error")
    assert "only from TensorRT 10.1" in finding.messages[0]


def test_jetpack_10_3_uses_its_own_table() -> None:
    report = lint_model(models.deform_conv(), "10.3.0.26")
    assert report.table_version == "10.3" and report.table_note.startswith("TensorRT 10.3: table 10.3")
    assert report.table_source["commit"].startswith("96e78110") and report.errors == report.warnings == 0


def test_below_the_oldest_table_warns_at_model_level() -> None:
    report = lint_model(models.deform_conv(), "10.2")
    assert report.table_version == "10.3" and "no stored table at or below 10.2" in report.table_note
    assert [f.status for f in report.findings if f.severity == "warning"] == ["model"]


def test_newer_than_newest_table_softens_op_list_findings_only() -> None:
    report = lint_model(models.det(), "11.2")
    finding = _by_node(report)["det"]
    assert (finding.status, finding.severity) == ("unsupported", "warning")
    assert "newer than the 10.15 table" in finding.messages[-1] and report.errors == 0
    assert "operator-list findings are warnings" in report.table_note


def test_unsupported_standard_op_is_an_error() -> None:
    report = lint_model(models.det(), "10.15")
    finding = _by_node(report)["det"]
    assert (finding.status, finding.severity, report.errors) == ("unsupported", "error", 1)


def test_type_not_in_table_is_restricted() -> None:
    finding = _by_node(lint_model(models.matmul(TensorProto.INT64), "10.13"))["matmul"]
    assert (finding.status, finding.severity) == ("restricted", "error")
    assert "INT64" in finding.messages[0]


def test_argmax_fp16_warns() -> None:
    finding = _by_node(lint_model(models.argmax(TensorProto.FLOAT16), "10.8"))["argmax"]
    assert (finding.status, finding.severity) == ("supported", "warning")
    assert "near-ties" in finding.messages[0]
    assert _by_node(lint_model(models.argmax(TensorProto.FLOAT), "10.8"))["argmax"].severity == "ok"


def test_custom_op_with_function_reports_fallback_and_lints_body() -> None:
    report = lint_model(models.prototype_gather(), "10.15")
    node = _by_node(report)["proto_gather"]
    assert (node.status, node.severity, node.op) == ("plugin", "ok", "pem::PrototypeGather")
    assert node.plugin == "pem::PrototypeGather" and node.function_fallback is True
    assert "plugin or function fallback" in node.messages[0]
    body = [f for f in report.findings if f.scope.startswith("pem::PrototypeGather body")]
    assert [f.op_type for f in body] == ["Transpose", "MatMul", "ArgMax", "Shape", "Expand", "GatherElements"]
    assert all(f.status == "supported" for f in body) and report.errors == 0


def test_function_body_gets_call_site_types() -> None:
    report = lint_model(models.prototype_gather(TensorProto.FLOAT16), "10.15")
    argmax = _by_node(report)["pem::PrototypeGather body via 'proto_gather' / argmax"]
    assert argmax.severity == "warning" and "FP16" in argmax.messages[0]


def test_declared_plugin_replaces_function_body() -> None:
    report = lint_model(models.prototype_gather(), "10.15", plugins=["pem::PrototypeGather"])
    assert len(report.findings) == 1 and "body not linted" in report.findings[0].messages[0]


def test_before_10_7_the_function_is_inlined() -> None:
    report = lint_model(models.prototype_gather(), "10.3")
    assert "inlined" in _by_node(report)["proto_gather"].messages[0]
    assert sum(f.scope.startswith("pem::PrototypeGather body") for f in report.findings) == 6


def test_before_10_10_the_domain_is_not_the_plugin_namespace() -> None:
    finding = _by_node(lint_model(models.prototype_gather(with_function=False), "10.8"))["proto_gather"]
    assert finding.plugin == "PrototypeGather" and finding.severity == "warning"
    assert any("plugin_namespace='pem'" in message for message in finding.messages)


def test_custom_op_without_function_needs_its_plugin() -> None:
    finding = _by_node(lint_model(models.prototype_gather(with_function=False), "10.15"))["proto_gather"]
    assert (finding.status, finding.severity, finding.function_fallback) == ("plugin", "warning", False)
    assert "no local function fallback" in finding.messages[0]


def test_report_dict_and_text() -> None:
    report = lint_model(models.det(), "10.14")
    data = report.to_dict()
    assert data["trt_version_requested"] == "10.14" and data["table"]["version"] == "10.13"
    assert data["table"]["source"]["commit"] and "nearest stored release below" in data["table"]["note"]
    assert data["counts"] == {"errors": 1, "warnings": 0, "ok": 0}
    assert data["findings"][0]["op"] == "Det"
    text = report.to_text()
    assert "Det" in text and "1 errors, 0 warnings, 0 ok" in text
