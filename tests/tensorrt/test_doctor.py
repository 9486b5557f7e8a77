"""``pem-export --trt-doctor`` run for real: on this machine (no TensorRT, no GPU) every probe reports and the
doctor goes on; on a TensorRT machine with a GPU (``trt``) every probe passes, the tiny engine included."""
from __future__ import annotations

import importlib.util
import re

import pytest

from pem.export.cli import main
from pem.export.tensorrt.doctor import tiny_onnx_model

LABELS = ["pem-edge", "TensorRT", "cuda-python", "CUDA driver", "CUDA runtime", "GPU", "torch", "Triton", "Polygraphy",
          "PEM plugins", "tiny engine"]


def report(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    status = main(["--trt-doctor"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "pem-export --trt-doctor"
    found = dict(re.fullmatch(r"  (.+?):\s+(.*)", line).groups() for line in lines[1:])
    assert list(found) == [*LABELS, "result"]
    return status, found


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="this machine has TensorRT")
def test_doctor_without_tensorrt(capsys: pytest.CaptureFixture[str]) -> None:
    status, found = report(capsys)
    assert status == 1
    assert found["TensorRT"] == "not installed (No module named 'tensorrt')"
    assert found["PEM plugins"] == "skipped: needs TensorRT"
    assert found["tiny engine"] == "skipped: needs TensorRT and a GPU"
    assert re.fullmatch(r"0\.1\.0, Python 3\.\d+\.\d+, \w+ \w+", found["pem-edge"])
    for label in ("cuda-python", "CUDA driver", "CUDA runtime", "GPU"):  # a finding or the reason it failed
        assert found[label] and (found[label][0].isalnum() or found[label].startswith(("failed: ", "not installed")))
    if importlib.util.find_spec("triton") is not None:
        assert re.fullmatch(r"Triton \d+\.\d+\.\d+, ptxas \d+\.\d+ \(PTX ISA \d\.\d\).*", found["Triton"])
    failed = [label for label in LABELS if found[label].startswith(("failed", "not installed", "skipped"))]
    assert found["result"] == f"{len(failed)} of {len(LABELS)} probes failed: {', '.join(failed)}"


def test_tiny_model_runs_in_onnxruntime() -> None:
    """The doctor's tiny graph is valid ONNX and ONNX Runtime runs it (Relu: no negative output)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(tiny_onnx_model(), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": np.ones((1, 3, 32, 32), np.float32)})
    assert output.shape == (1, 8, 32, 32) and output.min() >= 0 and output.max() > 0


@pytest.mark.trt
@pytest.mark.gpu
def test_doctor_on_a_tensorrt_machine(capsys: pytest.CaptureFixture[str]) -> None:
    status, found = report(capsys)
    assert status == 0 and found["result"] == "all probes passed", found
    assert found["tiny engine"] == "Conv+Relu built, run and equal to ONNX Runtime within 1e-3"
