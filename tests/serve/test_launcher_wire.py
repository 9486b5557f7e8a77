"""The launcher's libpython environment and the wire format's encode side (no server needed)."""
from __future__ import annotations

import importlib
import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from pem.runtime.backends.tritonserver import (
    TritonServerBackend,
    encode_result,
    error_line,
    metadata_payload,
    parse_url,
)
from pem.runtime.metadata import ArtifactError
from pem.runtime.predictor import Predictor
from pem.serve.launcher import ServeError, python_library_env
from pem.serve.model import BadFrame, FrameModel


def test_library_env_puts_the_running_interpreters_libdir_first() -> None:
    libdir = sysconfig.get_config_var("LIBDIR")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip(f"this Python has no shared libpython (LIBDIR {libdir})")
    env = python_library_env({"LD_LIBRARY_PATH": f"/usr/lib/x86_64-linux-gnu:{libdir}", "KEEP": "1"})
    assert env["LD_LIBRARY_PATH"].split(":") == [libdir, "/usr/lib/x86_64-linux-gnu"]
    assert env["KEEP"] == "1"


def test_library_env_error_is_one_line_without_shared_libpython(tmp_path: Path) -> None:
    config = {"VERSION": "3.11", "LIBDIR": str(tmp_path), "INSTSONAME": "libpython3.11.so.1.0",
              "Py_ENABLE_SHARED": 0}
    with pytest.raises(ServeError) as caught:
        python_library_env({}, config)
    assert "\n" not in str(caught.value) and "--enable-shared" in str(caught.value)


@pytest.mark.parametrize("url", ["ftp://h:1/pem", "http://h/pem", "http://h:1/", "http://h:1/a/b"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ArtifactError):
        parse_url(url)


def test_parse_url() -> None:
    assert parse_url("grpc://127.0.0.1:8001/pem") == ("grpc", "127.0.0.1:8001", "pem")


def test_encode_result_shapes_dtypes_and_segments(tiny_onnx) -> None:
    predictor = Predictor(tiny_onnx(), threads=1)
    result = predictor(np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    out = encode_result(result, ["panoptic", "semantic", "segments", "png"])
    assert out["panoptic"].dtype == np.int32 and out["panoptic"].shape == (1, 64, 80)
    assert np.array_equal(out["panoptic"][0], result.panoptic)
    info = json.loads(out["segments"][0, 0])
    assert [s["id"] for s in info["segments"]] == [s.id for s in result.segments]
    assert info["size"] == [64, 80] and out["png"][0, 0].startswith(b"\x89PNG")
    assert set(encode_result(result, ["semantic"])) == {"semantic"}
    props = json.loads(metadata_payload(predictor.backend.metadata, predictor.backend.inputs,
                                        predictor.backend.outputs, "onnxruntime"))
    assert props["props"] == dict(predictor.backend.metadata) and props["backend"] == "onnxruntime"
    predictor.close()


# the error text tritonclient gets from PyTriton 0.7 for a refused frame (paths shortened)
PYTRITON_ERROR = (
    "Failed to process the request(s) for model 'pem_0_0', message: TritonModelException: Model execute error: "
    "Traceback (most recent call last):\n  File \"/tmp/f/1/model.py\", line 492, in execute\n    raise "
    "triton_responses_or_error\nc_python_backend_utils.TritonModelException: Traceback (most recent call last):\n"
    "  File \"serve/model.py\", line 124, in __call__\n    raise refused\npem.serve.model.BadFrame: pem-serve: "
    "corrupt image: 7 bytes that are not an image Pillow can read\n\n\n\nAt:\n  /tmp/f/1/model.py(501): execute\n")


@pytest.mark.parametrize(("message", "line"), [
    (PYTRITON_ERROR, "pem-serve: corrupt image: 7 bytes that are not an image Pillow can read"),
    ("[request id: <id_unknown>] inference input 'pixels' data-type is 'INT32', but model 'pem' expects 'UINT8'",
     "[request id: <id_unknown>] inference input 'pixels' data-type is 'INT32', but model 'pem' expects 'UINT8'"),
    ("Model execute error: Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
     "ValueError: broken\n\nAt:\n  x.py(1): f\n", "ValueError: broken"),
])
def test_error_line_keeps_the_line_that_names_the_problem(message: str, line: str) -> None:
    assert error_line(message) == line


def test_a_grpc_url_without_grpcio_is_one_import_error_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_grpcio(name: str, package: str | None = None) -> object:
        if name == "tritonclient.grpc":  # what tritonclient.grpc raises when grpcio is not installed
            raise RuntimeError("The installation does not include grpc support.")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_grpcio)
    with pytest.raises(ImportError, match=r"with grpc support for grpc:// URLs: pip install .*grpc support") as caught:
        TritonServerBackend("grpc://127.0.0.1:1/pem")
    assert "\n" not in str(caught.value)


class _Request:
    """What FrameModel reads of a PyTriton request: its inputs and the outputs asked for."""

    def __init__(self, **data: np.ndarray) -> None:
        self.data = data
        self.requested_output_names = ["panoptic", "segments"]


def test_a_batched_call_on_a_free_batch_graph_is_one_graph_batch_answering_each_frame_as_alone(
    tiny_onnx, synthetic_dataset
) -> None:
    """Scenes of two sizes all resize to the graph's fixed 128x128: one graph batch of 4 for the call (the warm-up
    ran the largest, 6), each answer equal to the frame predicted alone."""
    from PIL import Image

    predictor = Predictor(tiny_onnx(fusion_size="input", dynamic_batch=True), threads=1)
    model = FrameModel(predictor, 20_000, max_batch=6)
    assert model.batch and model.warmed_shape == (6, 128, 128, 3)
    scenes = [sorted((synthetic_dataset(2, size, seed=5) / "images").glob("*.jpg")) for size in ((128, 128), (96, 120))]
    frames = [np.asarray(Image.open(path).convert("RGB")) for paths in scenes for path in paths]
    answers = model([_Request(pixels=frame[None]) for frame in frames])
    segments = 0
    for frame, answer in zip(frames, answers):
        alone = predictor(frame)
        info = json.loads(answer["segments"][0, 0])
        assert info["timings"]["batch"] == 4.0
        assert np.array_equal(answer["panoptic"][0], alone.panoptic)
        assert [(s["id"], s["category_id"], s["area"]) for s in info["segments"]] == [
            (s.id, s.category_id, s.area) for s in alone.segments]
        segments += len(alone.segments)
    assert segments >= 8
    predictor.close()


def test_a_batched_call_on_a_fixed_batch_graph_answers_each_frame_as_alone(tiny_onnx) -> None:
    predictor = Predictor(tiny_onnx(), threads=1)  # batch axis fixed at 1: frames run one after another
    model = FrameModel(predictor, 20_000, max_batch=3)
    assert not model.batch and model.warmed_shape == (1, 128, 128, 3)
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (96 + 16 * i, 120, 3), dtype=np.uint8) for i in range(3)]
    answers = model([_Request(pixels=frame[None]) for frame in frames])
    for frame, answer in zip(frames, answers):
        alone = predictor(frame)
        assert np.array_equal(answer["panoptic"][0], alone.panoptic)
        assert [s["id"] for s in json.loads(answer["segments"][0, 0])["segments"]] == [s.id for s in alone.segments]
    corrupt = _Request(image=np.array([[b"not an image"]], dtype=np.object_))
    with pytest.raises(BadFrame) as caught:
        model([_Request(pixels=frames[0][None]), corrupt, _Request(pixels=np.zeros((1, 150, 150, 3), np.uint8))])
    assert str(caught.value) == (
        "pem-serve: 2 bad request(s) in a dynamic batch of 3: request 2: corrupt image: 12 bytes that are not an "
        "image Pillow can read; request 3: image over the size budget: 150x150 is 22,500 pixels, the limit is 20,000 "
        "(pem-serve --max-pixels)")
    predictor.close()
