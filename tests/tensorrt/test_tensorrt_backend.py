"""The TensorRT backend: refusals before TensorRT on the CPU; engines of the tiny model against ONNX Runtime (trt)."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pem.runtime.backends import open_backend
from pem.runtime.backends.tensorrt import TensorRTBackend, _provider_options
from pem.runtime.engine_manifest import manifest_path, read_manifest, write_manifest
from pem.runtime.metadata import ArtifactError
from tests.tensorrt.test_engine_manifest import manifest


def test_provider_options() -> None:
    assert _provider_options(None) == (0, False)
    assert _provider_options(["tensorrt"]) == (0, False)
    assert _provider_options([("trt", {"device_id": 1, "cuda_graph": True})]) == (1, True)
    with pytest.raises(ValueError, match="takes 'tensorrt' or"):
        _provider_options(["cuda"])
    with pytest.raises(ValueError, match="takes 'tensorrt' or"):
        _provider_options([("tensorrt", {"streams": 2})])
    with pytest.raises(ValueError, match="one provider entry"):
        _provider_options(["tensorrt", "tensorrt"])


def test_refusals_before_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing manifest is an ArtifactError naming it; without TensorRT the error says how to install it."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"12345")
    with pytest.raises(ArtifactError, match="model.engine has no manifest"):
        open_backend(engine)
    write_manifest(engine, manifest())
    with pytest.raises(ImportError, match="TensorRT's Python package is not installed"):
        open_backend(engine)


# ---------------------------------------------------------------------------------------- on a GPU with TensorRT


@pytest.fixture(scope="session")
def engines(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 and fp16 engines of the tiny model (the fp16 graph from ``pem.export.precision``), one timing cache."""
    import onnx

    from pem.export.precision.fp16 import convert_to_fp16
    from pem.export.tensorrt.engine_builder import EngineOptions, build_engine

    folder = tmp_path_factory.mktemp("engines")
    model, _ = convert_to_fp16(onnx.load(str(tiny_onnx)))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "pem.precision": "fp16"})
    onnx.save(model, str(folder / "tiny_fp16.onnx"))
    built = {}
    for precision, source in (("fp32", tiny_onnx), ("fp16", folder / "tiny_fp16.onnx")):
        built[precision] = folder / f"tiny_{precision}.engine"
        build_engine(source, built[precision], EngineOptions(precision=precision, workspace_mb=1024,
                                                             timing_cache=folder / "timing.cache"))
    assert (folder / "timing.cache").stat().st_size > 0
    return built


def onnxruntime_outputs(tiny_onnx: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with open_backend(tiny_onnx, providers=["cpu"]) as backend:
        return backend.infer(feed)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.trt
@pytest.mark.gpu
def test_engine_matches_onnxruntime(precision: str, engines: dict[str, Path], tiny_onnx: Path,
                                    tiny_feed: dict[str, np.ndarray]) -> None:
    from pem.runtime import Predictor

    manifest = read_manifest(engines[precision])
    assert manifest.precision == precision and manifest.shape_values["orig_size"].max == (256, 256)
    assert {p.name for p in manifest.plugins} <= {"pem::DeformConv2d", "pem::PrototypeGather", "ModulatedDeformConv2d"}
    feed = {**tiny_feed, "orig_size": np.array([256, 240], np.int64)}
    expected = onnxruntime_outputs(tiny_onnx, feed)
    with open_backend(engines[precision]) as backend:
        assert isinstance(backend, TensorRTBackend)
        actual = backend.infer(feed)
        assert all(backend.last_timings[key] > 0 for key in ("h2d_ms", "compute_ms", "d2h_ms"))
    assert actual.keys() == expected.keys()
    assert actual["winner"].shape == expected["winner"].shape == (1, 256, 240)
    assert np.mean(actual["query_labels"] == expected["query_labels"]) >= 0.9
    image = tiny_feed["image"][0]
    with Predictor(engines[precision]) as engine_predictor, Predictor(tiny_onnx) as onnx_predictor:
        panoptic = engine_predictor(image).panoptic
        reference = onnx_predictor(image).panoptic
    assert np.mean(panoptic == reference) >= 0.995


@pytest.mark.trt
@pytest.mark.gpu
def test_two_contexts_and_cuda_graphs(engines: dict[str, Path], tiny_feed: dict[str, np.ndarray]) -> None:
    """One engine, two execution contexts (two cameras) and CUDA-graph replays give the single-context outputs."""
    other = {**tiny_feed, "image": np.ascontiguousarray(tiny_feed["image"][:, ::-1]),
             "orig_size": np.array([200, 256], np.int64)}
    with TensorRTBackend(engines["fp32"]) as first:
        reference = [first.infer(tiny_feed), first.infer(other)]
        with first.new_context() as second:
            for _ in range(2):
                for backend, feed, expected in ((second, other, reference[1]), (first, tiny_feed, reference[0])):
                    actual = backend.infer(feed)
                    for name, value in expected.items():
                        np.testing.assert_array_equal(actual[name], value, err_msg=name)
    with TensorRTBackend(engines["fp32"], providers=[("tensorrt", {"cuda_graph": True})]) as graphs:
        for _ in range(3):
            actual = graphs.infer(tiny_feed)
            np.testing.assert_array_equal(actual["winner"], reference[0]["winner"])
        with pytest.raises(ValueError, match="orig_size = .* outside the engine's range"):
            graphs.infer({**tiny_feed, "orig_size": np.array([1024, 1024], np.int64)})


@pytest.mark.trt
@pytest.mark.gpu
def test_foreign_engine_is_refused_with_reasons(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = tmp_path / "copied.engine"
    engine.write_bytes(engines["fp32"].read_bytes())
    original = read_manifest(engines["fp32"])
    write_manifest(engine, replace(original, tensorrt_version="9.9.9.9", compute_capability="1.0"))
    with pytest.raises(ArtifactError, match=r"cannot run here:\n  - the engine was built with TensorRT 9\.9\.9\.9.*"
                                            r"not portable[\s\S]*compute capability 1\.0"):
        TensorRTBackend(engine)
    data = json.loads(manifest_path(engine).read_text())
    data["tensorrt_version"], data["compute_capability"] = original.tensorrt_version, original.compute_capability
    manifest_path(engine).write_text(json.dumps(data))
    engine.write_bytes(b"\0" * original.engine_bytes)  # right size, garbage content
    with pytest.raises(ArtifactError, match="could not deserialize"):
        TensorRTBackend(engine)


class RecordingContext:
    """An execution-context stand-in recording ``set_input_shape``/``set_tensor_address`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.calls.append(("shape", name, shape))
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.calls.append(("address", name, address))
        return True


def test_host_shape_input_is_repointed_on_every_infer() -> None:
    """``orig_size`` (a shape tensor TensorRT reads from host memory) gets ``set_tensor_address`` on every call,
    with the new values in place, as Polygraphy's runner does; buffers already large enough, so no CUDA call."""
    from pem.runtime.backends.tensorrt import _Buffer, _SharedEngine, _Tensor

    staging = np.zeros(4, np.int64)
    address = staging.ctypes.data
    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend.artifact = "model.engine"
    backend._context, backend._cudart = RecordingContext(), None  # no CUDA call may happen
    backend._shared = _SharedEngine(None, None, None, manifest())
    backend._tensors = {"orig_size": _Tensor("orig_size", np.dtype(np.int64), True, True,
                                             _Buffer(0, address, staging.nbytes))}
    keys = []
    for size in ([480, 640], [720, 1280]):
        backend._context.calls.clear()
        keys.append(backend._bind_inputs({"orig_size": np.array(size, np.int64)}))
        assert backend._context.calls == [("shape", "orig_size", (2,)), ("address", "orig_size", address)]
        assert staging[:2].tolist() == size
    assert keys[0] != keys[1]  # another CUDA graph per original size
