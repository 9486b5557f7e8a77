"""``pem-export-check``: exit codes, one-line errors, JSON output."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from pem.export.trt_support.cli import main
from tests.export_lint import models


def _save(model: onnx.ModelProto, path: Path) -> str:
    onnx.save(model, str(path))
    return str(path)


def test_clean_model_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(models.conv_relu_matmul(), tmp_path / "ok.onnx")
    assert main([path, "--trt-version", "10.14"]) == 0
    out = capsys.readouterr().out
    assert "using 10.13, the nearest stored release below it" in out and "0 errors" in out


def test_errors_exit_1_and_json_written(tmp_path: Path) -> None:
    path = _save(models.det(), tmp_path / "det.onnx")
    out = tmp_path / "report.json"
    assert main([path, "--trt-version", "10.15", "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["counts"]["errors"] == 1 and data["table"]["version"] == "10.15"
    assert data["model"] == path and data["findings"][0]["status"] == "unsupported"


@pytest.mark.parametrize(("setup", "version", "expected"), [
    ("missing", "10.8", "no such file"),
    ("text", "10.8", "not an ONNX model"),
    ("model", "ten", "unknown TensorRT version format"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str,
                                         version: str, expected: str) -> None:
    path = tmp_path / "input.onnx"
    if setup == "text":
        path.write_text("this is not a protobuf\n")
    elif setup == "model":
        _save(models.det(), path)
    assert main([str(path), "--trt-version", version]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_missing_version_flag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_declared_plugin_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(models.prototype_gather(with_function=False), tmp_path / "pg.onnx")
    assert main([path, "--trt-version", "10.15", "--plugin", "pem::PrototypeGather"]) == 0
    assert "declared available" in capsys.readouterr().out
