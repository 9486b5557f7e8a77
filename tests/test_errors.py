"""Every expected failure derives from ``PemError`` (keeping the built-in base callers catch) and carries an exit
code; the commands catch only those, so a bug keeps its traceback."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from pem.runtime.errors import EXIT_REFUSED, EXIT_SOME_FAILED, PemError

ERRORS = [
    ("pem.checkpoint", "CheckpointError", ValueError),
    ("pem.config", "PresetError", KeyError),
    ("pem.data.datasets", "DatasetError", ValueError),
    ("pem.export.cli", "CliError", Exception),
    ("pem.export.trt_support.onnx_graph", "ModelLoadError", ValueError),
    ("pem.export.errors", "ExportError", ValueError),
    ("pem.export.precision.apply", "PrecisionError", ValueError),
    ("pem.export._deps", "MissingDependencyError", ImportError),
    ("pem.export.tensorrt.engine_builder", "EngineBuildError", RuntimeError),
    ("pem.export.tensorrt.shapes", "ShapeError", ValueError),
    ("pem.runtime.streams", "SourceError", RuntimeError),
    ("pem.runtime.sizes", "SizeError", argparse.ArgumentTypeError),
    ("pem.runtime.images", "ImageReadError", ValueError),
    ("pem.runtime.metadata", "ArtifactError", ValueError),
    ("pem.runtime.coco_panoptic", "PanopticFileError", ValueError),
    ("pem.export.precision.recipe", "RecipeError", ValueError),
    ("pem.calibration.images", "CalibrationDataError", ValueError),
    ("pem.benchmarks.cli", "BenchError", ValueError),
]


@pytest.mark.parametrize(("module", "name", "builtin"), ERRORS, ids=[name for _, name, _ in ERRORS])
def test_error_classes_share_the_base(module: str, name: str, builtin: type[Exception]) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, PemError) and issubclass(cls, builtin)
    assert cls.exit_code == EXIT_REFUSED


def test_exit_code_and_message() -> None:
    from pem.config import PresetError, get_preset

    with pytest.raises(PresetError) as caught:
        get_preset("nope")
    assert str(caught.value).startswith("unknown preset 'nope'; known presets: ")  # not quoted like a KeyError
    assert PemError("some frames failed", exit_code=EXIT_SOME_FAILED).exit_code == 1
    assert PemError("x").exit_code == 2


def test_pem_train_reports_expected_errors_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from pem.training.cli import main

    assert main(["--config", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pem-train: error: unknown preset 'nope'") and err.count("\n") == 1


def test_pem_train_keeps_the_traceback_of_a_bug(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import re

    import pem.training.cli as cli

    def broken(options: object) -> dict:
        raise KeyError("step")  # what a bug looks like: a plain built-in error

    monkeypatch.setattr(cli, "train", broken)
    code = cli.main(["--config", "synthetic_panoptic_tiny", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3 and err.startswith("pem-train: internal error: KeyError: 'step'") and err.count("\n") == 1
    saved = Path(re.search(r"traceback saved to (\S+);", err).group(1))  # the entry wrapper keeps it in a file
    assert "Traceback (most recent call last)" in saved.read_text() and "raise KeyError" in saved.read_text()
    saved.unlink()
