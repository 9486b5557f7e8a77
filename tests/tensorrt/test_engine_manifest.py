"""The engine manifest: round trip, the errors for missing/corrupt/foreign/stale manifests, mismatch messages."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pem.runtime.engine_manifest import (
    EngineManifest,
    PluginInfo,
    ProfileRange,
    compatibility_problems,
    manifest_path,
    read_manifest,
    rebuild_command,
    write_manifest,
)
from pem.runtime.metadata import ArtifactError

COMMAND = "pem-export --config cityscapes_panoptic_r50 --weights w.pth --head panoptic --format engine " \
          "--precision fp16 --shapes 1x512x512,1x512x1024,1x1024x2048 --output model.engine"


def manifest(**changes: object) -> EngineManifest:
    base = EngineManifest(
        tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", precision="fp16",
        profiles={"image": ProfileRange((1, 512, 512, 3), (1, 512, 1024, 3), (1, 1024, 2048, 3)),
                  "orig_size": ProfileRange((2,), (2,), (2,))},
        shape_values={"orig_size": ProfileRange((1, 1), (512, 1024), (1024, 2048))},
        onnx_sha256="ab" * 32,
        plugins=(PluginInfo("pem::DeformConv2d", "1", True), PluginInfo("ModulatedDeformConv2d", "", False)),
        metadata={"pem.format": "pem-edge/1", "pem.preset": "cityscapes_panoptic_r50", "pem.head": "panoptic"},
        built_at="2026-09-01T12:00:00Z", engine_bytes=5, builder={"workspace_mb": 1024, "command": COMMAND},
    )
    return replace(base, **changes)


@pytest.fixture()
def engine(tmp_path: Path) -> Path:
    path = tmp_path / "model.engine"
    path.write_bytes(b"12345")
    return path


def test_round_trip(engine: Path) -> None:
    written = write_manifest(engine, manifest())
    assert written == manifest_path(engine) == engine.with_name("model.engine.json")
    assert read_manifest(engine) == manifest()
    assert json.loads(written.read_text())["format"] == "pem-engine/1"
    assert not list(engine.parent.glob(".model.engine.json.*")), "temporary file left behind"


def test_missing_corrupt_foreign_stale(engine: Path) -> None:
    with pytest.raises(ArtifactError, match=r"has no manifest \(model.engine.json is missing\)"):
        read_manifest(engine)
    path = manifest_path(engine)
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="is corrupt .*not valid JSON.*rebuild the engine"):
        read_manifest(engine)
    path.write_text(json.dumps({"name": "yolo", "classes": 80}))
    with pytest.raises(ArtifactError, match="is not a PEM engine manifest"):
        read_manifest(engine)
    path.write_text(json.dumps({"format": "pem-engine/99"}))
    with pytest.raises(ArtifactError, match="unsupported engine manifest format 'pem-engine/99'"):
        read_manifest(engine)
    data = manifest().to_json()
    del data["gpu_name"]
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="malformed engine manifest.*gpu_name"):
        read_manifest(engine)
    write_manifest(engine, manifest(engine_bytes=999))
    with pytest.raises(ArtifactError, match="engine of 999 bytes but model.engine has 5.*another build"):
        read_manifest(engine)


def test_compatible_here() -> None:
    assert compatibility_problems(manifest(), "10.3.0.30", "Orin", "8.7", {"ModulatedDeformConv2d"}) == []
    assert compatibility_problems(manifest(), "10.3.0.30", "Orin", "8.7") == []


def test_other_tensorrt_version() -> None:
    (problem,) = compatibility_problems(manifest(), "10.16.2.10", "Orin", "8.7")
    assert "built with TensorRT 10.3.0.30, this machine has TensorRT 10.16.2.10" in problem
    assert "not portable between TensorRT versions" in problem
    assert "rebuild the engine on this machine with:\n    " + COMMAND in problem


def test_other_gpu() -> None:
    (problem,) = compatibility_problems(manifest(), "10.3.0.30", "NVIDIA GeForce RTX 4090", "8.9")
    assert "built for Orin (compute capability 8.7), this GPU is NVIDIA GeForce RTX 4090 (compute capability " \
           "8.9)" in problem and COMMAND in problem
    (problem,) = compatibility_problems(manifest(), "10.3.0.30", "Orin Nano", "8.7")
    assert "built on the GPU 'Orin', this one is 'Orin Nano' (same compute capability 8.7)" in problem


def test_missing_plugin_and_several_problems() -> None:
    problems = compatibility_problems(manifest(), "10.4.0.1", "Orin", "8.7", available_plugins=set())
    assert len(problems) == 2
    assert "TensorRT 10.3.0.30" in problems[0]
    assert "uses the plugin ModulatedDeformConv2d" in problems[1] and "libnvinfer_plugin" in problems[1]
    # a plugin compiled into the engine is never missing; one of ours that is not points to pem-edge[export]
    jit = manifest(plugins=(PluginInfo("pem::PrototypeGather", "1", False),))
    (problem,) = compatibility_problems(jit, "10.3.0.30", "Orin", "8.7", available_plugins={"pem::DeformConv2d"})
    assert "pem::PrototypeGather (version 1)" in problem and "pem-edge[export]" in problem


def test_rebuild_command_from_metadata() -> None:
    command = rebuild_command(manifest(builder={}))
    assert command == ("pem-export --config cityscapes_panoptic_r50 --weights YOUR_WEIGHTS.pth --head panoptic "
                       "--format engine --precision fp16 --shapes 1x512x512,1x512x1024,1x1024x2048 "
                       "--output model.engine")


def test_profile_range() -> None:
    profile = ProfileRange((1, 256, 256), (1, 512, 512), (2, 1024, 1024))
    assert profile.contains((1, 300, 1024)) and profile.contains((2, 256, 256))
    assert not any(profile.contains(shape) for shape in ((1, 200, 512), (1, 512), (3, 512, 512)))
    assert profile.describe() == "1x256x256 .. 2x1024x1024"
