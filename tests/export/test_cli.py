"""``pem-export`` end to end, and its failure paths: exit 2, one line on stderr, nothing (half-)written."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pem.export import cli
from pem.export.parity import ParityReport
from pem.runtime.contract import INPUT_IMAGE_FLOAT, META_FUSION_SIZE, META_HEAD, META_INPUT_LAYOUT, META_SHAPES
from pem.runtime.metadata import read_metadata
from tests.export.conftest import TINY_WEIGHTS

TINY = ["--config", "synthetic_panoptic_tiny", "--weights", str(TINY_WEIGHTS)]


def test_export_writes_a_checked_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "models" / "tiny_semantic.onnx"
    code = cli.main([*TINY, "--format", "onnx", "--head", "semantic", "--imgsz", "128x192", "--batch", "2",
                     "--input", "float", "--output", str(output), "--check-image", "skimage:coffee.png"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "semantic labels: " in stdout and "% identical" in stdout
    assert f"wrote {output}" in stdout and "resized to the static graph's size" in stdout
    assert [p.name for p in output.parent.iterdir()] == [output.name]
    props = read_metadata(onnx.load(str(output)))
    assert (props[META_HEAD], props[META_INPUT_LAYOUT]) == ("semantic", "float_nchw")
    assert json.loads(props[META_SHAPES]) == {"batch": 2, "height": 128, "width": 192}
    assert props[META_FUSION_SIZE] == "input"  # the default: fusion at the network's input, no orig_size input
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape for i in session.get_inputs()} == {INPUT_IMAGE_FLOAT: [2, 3, 128, 192]}
    image = np.random.default_rng(0).uniform(0, 255, (2, 3, 128, 192)).astype(np.float32)
    (semantic,) = session.run(None, {INPUT_IMAGE_FLOAT: image})
    assert semantic.shape == (2, 128, 192) and semantic.dtype == np.int64


def _assert_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli.main(argv) == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("pem-export: error: ") and message in stderr[0], stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--config": "cityscapes_panoptic_r51"}, "unknown preset 'cityscapes_panoptic_r51'"),
        ({"--weights": "missing.pth"}, "weights not found"),
        ({"--head": "instances"}, "invalid choice: 'instances'"),
        pytest.param({"--format": "engine"}, "TensorRT's Python package is not installed",
                     marks=pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                              reason="TensorRT is installed")),
        ({"--format": "tflite"}, "invalid choice: 'tflite'"),
        ({"--imgsz": "256x"}, "bad size '256x'"),
        ({"--opset": "17"}, "opset 17 is too old"),
        ({"--batch": "0"}, "--batch: 0 out of range 1..256"),
        ({"--object-mask-threshold": "1.5"}, "object mask threshold must be in [0, 1]"),
        ({"--check-image": "missing.png"}, "cannot read the check image"),
        ({"--output": "blocker/model.onnx"}, "is not a writable folder"),
        ({"--output": "."}, "is a folder"),
    ],
)
def test_bad_inputs_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, change: dict[str, str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    options = {"--head": "raw", "--imgsz": "64", "--output": "out.onnx", **change}
    argv = [*TINY, *[item for pair in options.items() for item in pair]]
    _assert_refused(tmp_path, capsys, argv, message)


def test_dynamic_batch_reaches_the_export_and_excludes_dynamic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pem.export.errors import ExportError

    asked = []

    def export_onnx(model: object, options: object) -> onnx.ModelProto:
        asked.append(options)
        raise ExportError("stopped after reading the options")

    monkeypatch.setattr("pem.export.onnx_export.export_onnx", export_onnx)
    argv = [*TINY, "--imgsz", "64", "--output", str(tmp_path / "out.onnx")]
    _assert_refused(tmp_path, capsys, [*argv, "--dynamic-batch"], "stopped after reading the options")
    assert [(o.dynamic, o.dynamic_batch, o.imgsz) for o in asked] == [(False, True, (64, 64))]
    _assert_refused(tmp_path, capsys, [*argv, "--dynamic", "--dynamic-batch"],
                    "argument --dynamic-batch: not allowed with argument --dynamic")


def _toy_graph() -> onnx.ModelProto:
    """A stand-in for an exported graph (Identity), so the CLI's own logic runs without a real export."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "toy",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_a_failed_parity_check_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = ParityReport("raw", 1, (64, 64), (64, 64), "", {"pred_logits": 1e-6, "pred_masks": 3e-2})
    monkeypatch.setattr("pem.export.onnx_export.export_onnx", lambda model, options: _toy_graph())
    monkeypatch.setattr("pem.export.parity.check_parity", lambda model, data, image: failing)
    argv = [*TINY, "--imgsz", "64", "--output", str(tmp_path / "out.onnx")]
    _assert_refused(tmp_path, capsys, argv, "parity check failed (pred_masks: relative L2 error 0.03 > 0.0001)")


def test_an_interrupted_write_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rename(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("pem.export.onnx_export.export_onnx", lambda model, options: _toy_graph())
    monkeypatch.setattr("pem.runtime.coco_panoptic.os.replace", no_rename)
    argv = [*TINY, "--imgsz", "64", "--skip-check", "--output", str(tmp_path / "out.onnx")]
    _assert_refused(tmp_path, capsys, argv, "disk full")


def test_export_needs_torchvision_deform_conv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEM_DISABLE_TORCHVISION_DEFORM", "1")
    argv = [*TINY, "--imgsz", "64", "--skip-check", "--output", str(tmp_path / "out.onnx")]
    _assert_refused(tmp_path, capsys, argv, "needs torchvision's deform_conv2d")
