"""The lint as the gate before TensorRT parses a graph: the gating function, and pem-export's use of it."""
from __future__ import annotations

import io
from pathlib import Path

import onnx
import pytest

from pem.export.cli import CliError, _lint_for_engine, main
from pem.export.trt_support.gate import LintRefusal, lint_before_build
from tests.export_lint import models
from tests.export_lint.test_parser_rules import uint8_intermediate


@pytest.mark.parametrize(("version", "release"), [("10.3.0.26", "10.3"), ("10.15.1.29", "10.15"), ("11.4", "11.4")])
def test_clean_graph_passes_the_gate(version: str, release: str) -> None:
    stream = io.StringIO()
    report = lint_before_build(models.conv_relu_matmul(), version, stream=stream)
    assert report is not None and report.errors == 0 and report.requested_version == release
    assert stream.getvalue().startswith(f"TensorRT {release} lint") and "0 errors" in stream.getvalue()


@pytest.mark.parametrize("version", ["10.3", "10.15", "11.4"])
def test_parser_error_stops_the_build_on_every_version(version: str) -> None:
    with pytest.raises(LintRefusal) as refusal:
        lint_before_build(uint8_intermediate(True), version, stream=io.StringIO())
    report = refusal.value.report
    assert "--skip-lint" in str(refusal.value)
    errors = [(f.node, f.status) for f in report.findings if f.severity == "error"]
    # the Transpose's UINT8 type is also outside the table's types, except past the newest table (a warning there)
    assert errors == ([] if version == "11.4" else [("permute", "restricted")]) + [("permute", "parser")]


def test_skip_lint_warns_and_passes_a_bad_graph() -> None:
    stream = io.StringIO()
    assert lint_before_build(uint8_intermediate(True), "10.3", skip=True, stream=stream) is None
    assert "--skip-lint" in stream.getvalue() and "without the lint" in stream.getvalue()


def test_bad_version_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown TensorRT version format"):
        lint_before_build(models.conv_relu_matmul(), "ten", stream=io.StringIO())


def test_cli_engine_path_prints_the_table_and_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CliError, match="TensorRT 10.3 lint found 2 errors in planted; no engine built"):
        _lint_for_engine(uint8_intermediate(True), skip=False, trt_version="10.3.0.26")
    err = capsys.readouterr().err
    assert "uint8_intermediate: output 'nchw'" in err and "2 errors, 0 warnings" in err
    _lint_for_engine(uint8_intermediate(False), skip=False, trt_version="10.3.0.26")
    _lint_for_engine(uint8_intermediate(True), skip=True, trt_version="10.3.0.26")
    assert "without the lint" in capsys.readouterr().err


def test_skip_lint_needs_format_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.onnx"
    onnx.save(models.conv_relu_matmul(), source)
    assert main(["--onnx", str(source), "--skip-lint", "--output", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pem-export: error: --skip-lint only applies to --format engine"
    assert not (tmp_path / "out.onnx").exists()
