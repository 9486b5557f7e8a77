"""The TensorRT-free parts of the engine builder: options, checks before TensorRT, manifest, atomic writes."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import onnx
import pytest

from pem.export.tensorrt.engine_builder import (
    EngineOptions,
    build_engine,
    format_parser_errors,
    make_manifest,
    needs_strongly_typed_flag,
    write_engine,
)
from pem.export.tensorrt.shapes import ShapeError, engine_shapes
from pem.runtime.engine_manifest import PluginInfo, read_manifest, write_manifest
from pem.runtime.metadata import ArtifactError


@pytest.mark.parametrize(("options", "message"), [
    (EngineOptions(precision="bf16"), "TensorRT builds fp32, fp16, int8 graphs, not 'bf16'"),
    (EngineOptions(workspace_mb=0), "workspace_mb must be a positive number of MiB"),
    (EngineOptions(shapes="512,1024,2048"), "cannot read '512'"),
    (EngineOptions(orig_sizes="1x2x3"), "--orig-sizes: cannot read '1x2x3' as HxW"),
])
def test_invalid_options(options: EngineOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options.validate()


def test_timing_cache_must_be_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timing cache must be a file"):
        EngineOptions(timing_cache=tmp_path).validate()
    EngineOptions(precision="int8", shapes="1x512x512,1x512x1024,1x1024x2048", workspace_mb=2048,
                  timing_cache=tmp_path / "cache.bin").validate()


def test_strongly_typed_flag() -> None:
    assert needs_strongly_typed_flag("10.3.0.30") and needs_strongly_typed_flag("10.16.2.10")
    assert not needs_strongly_typed_flag("11.4.1.2")


def test_manifest_from_build_facts(tmp_path: Path) -> None:
    options = EngineOptions(precision="fp16", shapes="1x256x256,1x512x512,1x512x1024", workspace_mb=512,
                            timing_cache=tmp_path / "cache.bin", command="pem-export ... --format engine")
    shapes = engine_shapes({"image": (None, None, None, 3), "orig_size": (2,)}, "uint8_nhwc", options.shapes)
    props = {"pem.format": "pem-edge/1", "pem.precision": "fp16", "pem.head": "panoptic"}
    manifest = make_manifest(
        props, options, shapes, [PluginInfo("pem::DeformConv2d", "1", True)], tensorrt_version="10.16.2.10",
        gpu_name="NVIDIA Jetson AGX Orin", compute_capability="8.7", onnx_sha256="0" * 64, engine_bytes=3,
        build_seconds=12.345, built_at=datetime(2026, 9, 1, 12, 0, 5, 123, tzinfo=timezone.utc),
    )
    assert manifest.built_at == "2026-09-01T12:00:05Z" and manifest.metadata == props
    assert manifest.precision == "fp16" and manifest.profiles["image"].max == (1, 512, 1024, 3)
    assert manifest.shape_values["orig_size"].max == (512, 1024)
    assert manifest.builder == {"precision": "fp16", "shapes": options.shapes, "orig_sizes": None,
                                "workspace_mb": 512, "plugins": True, "command": "pem-export ... --format engine",
                                "timing_cache": str(tmp_path / "cache.bin"), "strongly_typed": True,
                                "build_seconds": 12.3}
    engine = tmp_path / "model.engine"
    write_engine(engine, b"abc")
    write_manifest(engine, manifest)
    assert read_manifest(engine) == manifest


def test_write_engine_replaces_atomically(tmp_path: Path) -> None:
    engine = tmp_path / "sub" / "model.engine"
    write_engine(engine, b"old")
    write_engine(engine, b"new engine")
    assert engine.read_bytes() == b"new engine"
    assert sorted(p.name for p in engine.parent.iterdir()) == ["model.engine"]


def test_parser_errors_name_the_nodes() -> None:
    message = format_parser_errors("model.onnx", [
        ("model.decoder/node_symbolic", "PrototypeGather", "Plugin not found, are the plugin name, version, and "
                                                         "namespace correct?\n"),
        ("", "", "Failed to import initializer"),
    ])
    assert message.splitlines() == [
        "TensorRT could not parse model.onnx (2 errors):",
        "  - node 'model.decoder/node_symbolic' (PrototypeGather): Plugin not found, are the plugin name, version, "
        "and namespace correct?",
        "  - graph: Failed to import initializer",
        "Check the graph with: pem-export --check MODEL.onnx --trt-version X.Y",
    ]


def test_checks_before_tensorrt(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrong precision and sizes are reported from the ONNX alone; then a clear message without TensorRT."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail even where it is installed
    engine = tmp_path / "model.engine"
    foreign = onnx.load(str(tiny_onnx))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ArtifactError, match="has no PEM metadata"):
        build_engine(tmp_path / "foreign.onnx", engine)
    with pytest.raises(ValueError, match=r"holds a fp32 graph but fp16 was asked: .*export it with --precision fp16"):
        build_engine(tiny_onnx, engine, EngineOptions(precision="fp16"))
    with pytest.raises(ShapeError, match="fixed height of 256"):
        build_engine(tiny_onnx, engine, EngineOptions(shapes="1x512x512"))
    with pytest.raises(ImportError, match=r"TensorRT's Python package is not installed\. Jetson: .*python3-libnvinfer"
                                          r"\); desktop: pip install tensorrt"):
        build_engine(tiny_onnx, engine, EngineOptions())
    assert not engine.exists()
