"""``pem-export --check MODEL --trt-version X.Y`` runs the TensorRT op-support lint."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from pem.export.cli import main
from tests.export_lint import models


def test_check_through_pem_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    onnx.save(models.deform_conv(), tmp_path / "ok.onnx")
    assert main(["--check", str(tmp_path / "ok.onnx"), "--trt-version", "10.15"]) == 0
    assert "DeformConv" in capsys.readouterr().out
    onnx.save(models.deform_conv(pads=(1, 1, 2, 2)), tmp_path / "bad.onnx")
    assert main(["--check", str(tmp_path / "bad.onnx"), "--trt-version", "10.15"]) == 1
    assert main(["--check", str(tmp_path / "missing.onnx"), "--trt-version", "10.15"]) == 2
