"""The precision registry: every tool reads the same modes, and a new mode is one module plus one entry point.

The toy mode ``bf16w`` (FP32 graph, weights rounded to bfloat16's 8-bit mantissa) lives in a package written to a
temporary folder with its own ``*.dist-info``, so the registry finds it exactly as it would an installed one; it goes
through ``pem-export --precision bf16w`` and is refused, by name, where it does not apply.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from pem.export.cli import main as export_main
from pem.export.precision.registry import (
    ENTRY_POINT_GROUP,
    PrecisionError,
    graph_precisions,
    precision_mode,
    precision_modes,
    tensorrt_precisions,
    torch_precisions,
)
from pem.runtime.contract import META_PRECISION, META_PRECISION_DETAILS
from pem.runtime.metadata import read_metadata
from tests.toy_distribution import install_toy_distribution

TOY_MODULE = '''
"""A toy precision: the FP32 graph with every FP32 weight rounded to bfloat16 (round to nearest even)."""
import numpy as np
from onnx import TensorProto, numpy_helper

from pem.export.precision.registry import PrecisionMode


def round_weights(fp32, request, work, progress):
    model = type(fp32)()
    model.CopyFrom(fp32)
    rounded = 0
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.data_type != TensorProto.FLOAT:
            continue
        bits = numpy_helper.to_array(tensor).astype(np.float32).view(np.uint32)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(bits.view(np.float32), tensor.name))
        rounded += 1
    progress(f"rounded {rounded} weights to bfloat16")
    return model, {"rounded_initializers": rounded}


MODE = PrecisionMode("bf16w", "FP32 compute, weights rounded to bfloat16", round_weights)
CLASHING = PrecisionMode("fp16", "a second fp16", round_weights)
'''


@pytest.fixture()
def toy_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install_toy_distribution(site, "toy_pem_precision", TOY_MODULE, ENTRY_POINT_GROUP,
                             {"bf16w": "toy_pem_precision:MODE"})
    monkeypatch.syspath_prepend(str(site))
    return site


def test_the_built_in_modes_and_who_runs_them() -> None:
    assert list(precision_modes()) == ["fp32", "fp16", "bf16", "int8"]
    assert graph_precisions() == ("fp32", "fp16", "int8")
    assert torch_precisions() == ("fp32", "fp16", "bf16")
    assert tensorrt_precisions() == ("fp32", "fp16", "int8")
    assert [name for name, mode in precision_modes().items() if mode.needs_calibration] == ["int8"]
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'; known: fp32, fp16, bf16, int8"):
        precision_mode("fp8")


def test_every_tool_offers_the_registry_s_modes() -> None:
    from pem.benchmarks.cli import build_parser as bench_parser
    from pem.export.cli import build_parser as export_parser

    def choices(parser: object) -> list[str]:
        (action,) = [a for a in parser._actions if "--precision" in a.option_strings]  # type: ignore[attr-defined]
        return list(action.choices)

    assert choices(export_parser()) == list(graph_precisions())
    assert choices(bench_parser()) == list(precision_modes())


def test_a_bf16_graph_is_refused_by_name(tiny_onnx: Callable[..., Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from pem.export.precision.apply import PrecisionRequest, apply_precision

    with pytest.raises(PrecisionError, match="bf16 has no ONNX form .*graph precisions: fp32, fp16, int8"):
        apply_precision(onnx.load(str(tiny_onnx("raw"))), PrecisionRequest("bf16"), tmp_path, None)


def test_an_entry_point_precision_runs_through_pem_export(toy_site: Path, tiny_onnx: Callable[..., Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "bf16w" in graph_precisions() and "bf16w" not in torch_precisions() + tensorrt_precisions()
    source = tiny_onnx("raw")
    output, report = tmp_path / "tiny_bf16w.onnx", tmp_path / "report.json"
    code = export_main(["--onnx", str(source), "--precision", "bf16w", "--output", str(output),
                        "--report", str(report)])
    assert code == 0
    float_weights = sum(t.data_type == TensorProto.FLOAT for t in onnx.load(str(source)).graph.initializer)
    model = onnx.load(str(output))
    metadata = read_metadata(model)
    assert metadata[META_PRECISION] == "bf16w"
    assert json.loads(metadata[META_PRECISION_DETAILS]) == {"rounded_initializers": float_weights}
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            assert not np.any(numpy_helper.to_array(tensor).view(np.uint32) & 0xFFFF), tensor.name
    checked = json.loads(report.read_text())
    assert checked["precision"] == "bf16w" and checked["rounded_initializers"] == float_weights
    # bfloat16 weights move the outputs a little, not a lot (measured: 0.038 logits, 0.019 masks)
    errors = checked["check_image"]["float_rel_l2"]
    assert set(errors) == {"pred_logits", "pred_masks"}
    assert all(0.0 < error < 0.1 for error in errors.values()), errors
    assert f"rounded {float_weights} weights to bfloat16" in capsys.readouterr().out


def test_an_entry_point_precision_is_refused_where_it_does_not_apply(toy_site: Path) -> None:
    from pem.export.tensorrt.engine_builder import EngineOptions
    from pem.export.torch_backend import TorchBackend

    with pytest.raises(ValueError, match="TensorRT builds fp32, fp16, int8 graphs, not 'bf16w'"):
        EngineOptions(precision="bf16w").validate()
    with pytest.raises(ValueError, match="precision 'bf16w' does not run in the torch backend; it runs fp32, fp16"):
        TorchBackend("preset:synthetic_panoptic_tiny", precision="bf16w")


def test_a_mode_reusing_a_built_in_name_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    tiny_onnx: Callable[..., Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_toy_distribution(site, "toy_pem_precision", TOY_MODULE, ENTRY_POINT_GROUP,
                             {"fp16": "toy_pem_precision:CLASHING"})
    monkeypatch.syspath_prepend(str(site))
    code = export_main(["--onnx", str(tiny_onnx("raw")), "--precision", "fp16", "--output", str(tmp_path / "x.onnx")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"pem-export: error: entry point 'fp16' of {ENTRY_POINT_GROUP} (toy_pem_precision:CLASHING) "
                     "reuses the precision name 'fp16'; give it a name of its own")
    assert not (tmp_path / "x.onnx").exists()
