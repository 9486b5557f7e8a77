"""``pem-export --verify``'s comparison through Polygraphy's runners and comparator, run here with Polygraphy's ONNX
Runtime runner on both sides: the FP32 graph of the trained tiny model against its FP16 and INT8 graphs, the pass
and fail paths of the publishing step (nothing written on failure), and the tolerances themselves."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from pem.export.cli import CliError, _verify_and_publish
from pem.export.parity import load_check_image
from pem.export.tensorrt.verify import (
    Tolerances,
    check_feed,
    compare_outputs,
    onnxruntime_runner,
    verify,
)
from pem.runtime.engine_manifest import ProfileRange, manifest_path, read_manifest
from tests.tensorrt.test_engine_manifest import manifest

pytest.importorskip("polygraphy")
SIZE = (128, 128)


@pytest.fixture(scope="module")
def graphs(tiny_onnx: Callable[..., Path], synthetic_dataset: Callable[..., Path],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The FP32 panoptic export (128x128) and its FP16 and INT8 (ONNX Runtime target, min-max over 8 synthetic
    scenes) graphs."""
    from pem.calibration.images import list_images
    from pem.export.precision.apply import PrecisionRequest, apply_precision
    from pem.export.precision.int8 import quantize_to_int8
    from pem.export.precision.recipe import QuantRecipe

    folder = tmp_path_factory.mktemp("verify")
    fp32 = tiny_onnx("panoptic", SIZE)
    fp16, _ = apply_precision(onnx.load(str(fp32)), PrecisionRequest("fp16"), folder, None, progress=lambda _: None)
    onnx.save(fp16, str(folder / "fp16.onnx"))
    calibration = list_images(synthetic_dataset(8, SIZE, seed=21))
    int8 = quantize_to_int8(fp32, calibration, QuantRecipe(calibration_images=8), progress=lambda _: None)
    onnx.save(int8.model, str(folder / "int8.onnx"))
    return {"fp32": fp32, "fp16": folder / "fp16.onnx", "int8": folder / "int8.onnx"}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_check_image("skimage:astronaut.png")


def test_fp16_graph_passes_against_fp32(graphs: dict[str, Path], photo: np.ndarray) -> None:
    feed, geometry, metadata = check_feed(graphs["fp32"], photo)
    assert feed["image"].shape == (1, *SIZE, 3) and feed["orig_size"].tolist() == [512, 512]
    report = verify(onnxruntime_runner(graphs["fp32"]), onnxruntime_runner(graphs["fp16"]), feed, metadata,
                    geometry, "fp16")
    checks = {check.name: check for check in report.checks}
    assert report.passed and set(checks) == {"query_scores", "semantic ids", "panoptic ids"}
    assert checks["query_scores"].value < 1e-3 and checks["query_scores"].limit is None  # measured 3.1e-4
    assert checks["semantic ids"].value >= 0.995 and checks["panoptic ids"].value >= 0.995  # measured 99.81%
    assert report.lines()[-1] == "verify: passed"


def test_failed_verification_writes_nothing(graphs: dict[str, Path], photo: np.ndarray, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """INT8 against FP32 on a photograph (out of the tiny model's synthetic training distribution): ids drift below
    99% (measured 57% semantic), so the report says FAILED and the CLI's error (exit 2) leaves the output absent."""
    staged, output = tmp_path / "staged.engine", tmp_path / "out" / "model.engine"
    staged.write_bytes(b"12345")  # the size the manifest records
    with pytest.raises(CliError, match=r"--verify failed \(semantic ids: \d+\.\d+% identical \(>= 99\.0%\) FAILED; "
                                       r"panoptic ids: .*\); nothing written to .*model\.engine"):
        _verify_and_publish(graphs["fp32"], staged, output, photo, manifest(precision="int8"),
                            onnxruntime_runner(graphs["int8"]))
    assert not output.exists() and not manifest_path(output).exists()
    printed = capsys.readouterr().out
    assert "verify (int8): onnxrt:int8.onnx vs onnxrt:" in printed and printed.rstrip().endswith("verify: FAILED")


def test_passed_verification_publishes_engine_and_manifest(graphs: dict[str, Path], photo: np.ndarray,
                                                           tmp_path: Path) -> None:
    """The INT8 graph against itself (what an INT8 engine is compared with), the check image first resized into the
    engine's original-size range: all ids identical, engine and manifest written."""
    staged, output = tmp_path / "staged.engine", tmp_path / "model.engine"
    staged.write_bytes(b"12345")  # the size the manifest records
    built = manifest(precision="int8", shape_values={"orig_size": ProfileRange((1, 1), (96, 80), (128, 128))})
    _verify_and_publish(graphs["int8"], staged, output, photo, built, onnxruntime_runner(graphs["int8"], "again"))
    assert output.read_bytes() == b"12345" and read_manifest(output) == built
    feed, _, _ = check_feed(graphs["int8"], photo, built)
    assert feed["orig_size"].tolist() == [96, 80]


def test_tolerances(graphs: dict[str, Path], photo: np.ndarray) -> None:
    from pem.runtime.backends import open_backend

    feed, geometry, metadata = check_feed(graphs["fp32"], photo)
    with open_backend(graphs["fp32"], providers=["cpu"]) as backend:
        reference = backend.infer(feed)
    fp32 = Tolerances.for_precision("fp32")
    assert fp32 == Tolerances(1e-3, 0.995) and Tolerances.for_precision("int8") == Tolerances(None, 0.99)
    assert all(check.passed for check in compare_outputs(reference, reference, metadata, geometry, fp32))
    scaled = {**reference, "query_scores": reference["query_scores"] * np.float32(1.002)}
    checks = {c.name: c for c in compare_outputs(reference, scaled, metadata, geometry, fp32)}
    assert not checks["query_scores"].passed and checks["query_scores"].value == pytest.approx(0.002, rel=1e-3)
    assert checks["query_scores"].line().endswith("(<= 0.001) FAILED")
    cropped = {**reference, "winner": reference["winner"][:, :-1]}
    checks = compare_outputs(reference, cropped, metadata, geometry, replace(fp32, rel_l2=None))
    assert [(c.kind, c.passed) for c in checks] == [("rel_l2", True), ("shape", False)]  # no ids of unequal maps
    with pytest.raises(ValueError, match="no verification tolerances for precision 'bf16'"):
        Tolerances.for_precision("bf16")


def test_engine_only_options_are_refused_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from pem.export.cli import main

    source = tmp_path / "fp32.onnx"
    source.write_bytes(b"not read before the arguments are checked")
    argv = ["--onnx", str(source), "--output", str(tmp_path / "model.engine")]
    assert main([*argv, "--verify", "--trt-verbose"]) == 2
    assert capsys.readouterr().err.strip() == ("pem-export: error: --verify, --trt-verbose only apply to --format "
                                               "engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails even where it is installed
    assert main([*argv, "--format", "engine", "--verify"]) == 2
    assert "TensorRT's Python package is not installed" in capsys.readouterr().err
    assert not (tmp_path / "model.engine").exists()
