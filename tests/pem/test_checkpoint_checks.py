"""Checkpoint loading refuses non-finite weights and malformed files with one line, from every command that loads."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import pem
from pem.checkpoint import ALLOW_NONFINITE_ENV, CheckpointError, read_checkpoint, save_checkpoint

PRESET = "synthetic_panoptic_tiny"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_panoptic_tiny.pth"
POISONED = ["backbone.stem.0.conv.weight", "pixel_decoder.channel_gates.0.norm.bias",
            "transformer_decoder.query_feat.weight", "transformer_decoder.head.class_embed.weight"]


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained fixture with one NaN in three tensors and an Inf in a fourth (a diverged run)."""
    state = read_checkpoint(FIXTURE)["model"]
    for index, name in enumerate(POISONED):
        state[name].view(-1)[index] = float("nan") if index < 3 else float("inf")
    path = tmp_path_factory.mktemp("nan") / "diverged.pth"
    save_checkpoint(path, state, PRESET)
    return path


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_nonfinite_weights_are_named_at_load(nan_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_NONFINITE_ENV, raising=False)
    with pytest.raises(CheckpointError) as caught:
        pem.build_model(PRESET, str(nan_checkpoint))
    message = str(caught.value)
    assert "\n" not in message and f"{ALLOW_NONFINITE_ENV}=1" in message
    assert "hold NaN or Inf values (backbone.stem.0.conv.weight, " in message and " and 1 more)" in message
    assert message.startswith(f"{nan_checkpoint}: 4 of ")


def test_nonfinite_weights_load_when_allowed(nan_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_NONFINITE_ENV, "1")
    with pytest.warns(UserWarning, match="loaded anyway for inspection"):
        model = pem.build_model(PRESET, str(nan_checkpoint))
    assert torch.isnan(model.state_dict()["backbone.stem.0.conv.weight"]).sum() == 1
    monkeypatch.delenv(ALLOW_NONFINITE_ENV)
    with pytest.warns(UserWarning):
        assert read_checkpoint(nan_checkpoint, allow_nonfinite=True)["preset"] == PRESET


def _export(path: Path, out: Path) -> list[str]:
    return ["--config", PRESET, "--weights", str(path), "--imgsz", "64x64", "--output", str(out / "m.onnx")]


def _predict(path: Path, out: Path) -> list[str]:
    return [str(path), str(FIXTURE.parent.parent / "fixtures"), "--backend", "torch", "--out", str(out / "p")]


def _demo(path: Path, out: Path) -> list[str]:
    return ["--config", PRESET, "--weights", str(path), "--out", str(out / "d")]


def _convert(path: Path, out: Path) -> list[str]:
    return ["--config", PRESET, str(path), str(out / "c.pth")]


def _train(path: Path, out: Path) -> list[str]:
    return ["--config", PRESET, "--data", str(out / "no-data"), "--out", str(out / "run"), "--init", str(path)]


def _entry(module: str) -> Callable[[list[str]], int]:
    import importlib

    return importlib.import_module(module).main


COMMANDS = {
    "pem-export": ("pem.export.cli", _export),
    "pem-predict": ("pem.runtime.cli", _predict),
    "pem-demo": ("pem.demo", _demo),
    "pem-convert": ("pem.convert", _convert),
    "pem-train": ("pem.training.cli", _train),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_nonfinite_weights_in_one_line(
    command: str, nan_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ALLOW_NONFINITE_ENV, raising=False)
    (tmp_path / "no-data").mkdir()
    module, arguments = COMMANDS[command]
    assert _entry(module)(arguments(nan_checkpoint, tmp_path)) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"{command}: error: {nan_checkpoint}: 4 of "), line
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "c.pth").exists()


@pytest.mark.parametrize(("content", "expected"), [
    ({"format": "pem-edge/1", "preset": PRESET, "model": torch.zeros(3)},
     "its 'model' entry is a Tensor, expected a dict of tensors"),
    ({"format": "pem-edge/1", "preset": PRESET, "model": {"backbone.stem.0.conv.weight": 3, "x": "y"}},
     "2 'model' entries are not tensors (backbone.stem.0.conv.weight, x)"),
    ([torch.zeros(2)], "expected a dict, found list"),
])
def test_malformed_checkpoints_are_one_line(content: object, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as caught:
        pem.build_model(PRESET, str(path))
    assert str(caught.value) == f"{path}: {expected}"


def test_torch_backend_never_advises_unsafe_loading(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from pem.runtime import Predictor

    graph = tmp_path / "model.onnx"
    node = helper.make_node("Identity", ["x"], ["y"])
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    onnx.save(helper.make_model(helper.make_graph([node], "g", info[:1], info[1:])), graph)

    with pytest.raises(CheckpointError) as caught:
        Predictor(graph, backend="torch")
    message = str(caught.value)
    assert message.startswith(f"cannot read checkpoint {graph}: not a checkpoint of tensors that the safe loader")
    assert "weights_only" not in message and "False" not in message and "\n" not in message
