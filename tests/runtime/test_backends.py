"""The backend registry and the onnxruntime backend (runner contract, timings, errors)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from pem.runtime.backends import backend_names, open_backend, register_backend
from pem.runtime.backends.onnxruntime import OnnxRuntimeBackend, resolve_providers
from pem.runtime.metadata import ArtifactError


def test_open_by_suffix_runs_and_times(toy_dir: Path) -> None:
    with open_backend(toy_dir / "raw.onnx") as backend:
        assert isinstance(backend, OnnxRuntimeBackend) and backend.providers == ["CPUExecutionProvider"]
        assert [i.name for i in backend.inputs] == ["image"] and backend.inputs[0].dtype == np.uint8
        assert [o.name for o in backend.outputs] == ["pred_logits", "pred_masks"]
        assert backend.metadata["pem.head"] == "raw"
        outputs = backend.infer({"image": np.zeros((1, 40, 70, 3), dtype=np.uint8)})
        assert outputs["pred_logits"].shape == (1, 6, 5) and outputs["pred_masks"].shape == (1, 6, 16, 24)
        assert set(backend.last_timings) == {"h2d_ms", "compute_ms", "d2h_ms"}
        assert backend.last_timings["compute_ms"] > 0 and backend.last_timings["h2d_ms"] == 0
        assert "CPUExecutionProvider" in backend.description
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer({"image": np.zeros((1, 40, 70, 3), dtype=np.uint8)})
    backend.close()


def test_threads_set_the_session(toy_dir: Path) -> None:
    with open_backend(toy_dir / "raw.onnx", threads=1) as backend:
        assert backend._session.get_session_options().intra_op_num_threads == 1
        outputs = backend.infer({"image": np.zeros((1, 40, 70, 3), dtype=np.uint8)})
        assert outputs["pred_masks"].shape == (1, 6, 16, 24)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            OnnxRuntimeBackend(toy_dir / "raw.onnx", threads=bad)


def test_feed_is_checked(toy_dir: Path) -> None:
    with open_backend(toy_dir / "raw_static.onnx") as backend:
        with pytest.raises(ValueError, match="missing"):
            backend.infer({})
        with pytest.raises(ValueError, match="unexpected"):
            backend.infer({"image": np.zeros((1, 64, 96, 3), np.uint8), "extra": np.zeros(1)})
        with pytest.raises(ValueError, match="must be uint8"):
            backend.infer({"image": np.zeros((1, 64, 96, 3), np.float32)})
        with pytest.raises(ValueError, match="the graph wants"):
            backend.infer({"image": np.zeros((1, 32, 96, 3), np.uint8)})


def test_unknown_format_backend_and_missing_file(tmp_path: Path) -> None:
    other = tmp_path / "model.xyz"
    other.write_bytes(b"\0")
    known = r"unknown artifact format '.xyz'.*\.onnx -> onnxruntime.*\.engine, \.plan -> tensorrt"
    with pytest.raises(ArtifactError, match=known):
        open_backend(other)
    with pytest.raises(ArtifactError, match="unknown backend 'nope'"):
        open_backend(other, backend="nope")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    with pytest.raises(ArtifactError, match="model.engine has no manifest"):
        open_backend(engine)
    with pytest.raises(FileNotFoundError, match="artifact not found"):
        open_backend(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(ArtifactError, match="cannot load .*garbage.onnx as an ONNX model"):
        open_backend(garbage)


def test_registry_is_extensible(tmp_path: Path, toy_dir: Path) -> None:
    register_backend("toy", (".toy",), "pem.runtime.backends.onnxruntime:OnnxRuntimeBackend")
    try:
        artifact = tmp_path / "model.toy"
        artifact.write_bytes((toy_dir / "raw.onnx").read_bytes())
        assert "toy" in backend_names()
        with open_backend(artifact) as backend:
            assert backend.metadata["pem.head"] == "raw"
    finally:
        from pem.runtime import backends

        backends._REGISTRY.pop("toy")


def test_providers() -> None:
    available = ["CPUExecutionProvider"]
    assert resolve_providers(None, available) == ["CPUExecutionProvider"]
    assert resolve_providers(None, ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert resolve_providers(["cpu"], available) == ["CPUExecutionProvider"]
    assert resolve_providers([("CPU", {"x": 1})], available) == [("CPUExecutionProvider", {"x": 1})]
    with pytest.raises(ValueError, match="'cuda' is not available.*onnxruntime-gpu"):
        resolve_providers(["cuda"], available)
    with pytest.raises(ValueError, match="no execution provider"):
        resolve_providers([], available)


@pytest.mark.skipif("CUDAExecutionProvider" not in onnxruntime.get_available_providers(), reason="needs ORT CUDA")
@pytest.mark.gpu
def test_cuda_provider_times_copies_apart(toy_dir: Path) -> None:
    with open_backend(toy_dir / "raw.onnx", providers=["cuda"]) as backend:
        image = np.random.default_rng(0).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
        on_gpu = backend.infer({"image": image})
        assert backend.last_timings["h2d_ms"] > 0 and backend.last_timings["d2h_ms"] > 0
    with open_backend(toy_dir / "raw.onnx", providers=["cpu"]) as backend:
        np.testing.assert_allclose(on_gpu["pred_masks"], backend.infer({"image": image})["pred_masks"], atol=1e-4)


def test_missing_onnxruntime_names_the_extra(toy_dir: Path) -> None:
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from pem.runtime.backends import open_backend\n"
        f"open_backend({str(toy_dir / 'raw.onnx')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "needs onnxruntime" in done.stderr and "pem-edge[export]" in done.stderr
