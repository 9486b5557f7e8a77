"""The Polygraphy network script (``load_network``) that registers PEM's plugins in Polygraphy's process: its errors
here, and on a TensorRT machine (``trt``) a Polygraphy build of it compared with ONNX Runtime by ``verify``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pem.export.tensorrt.polygraphy_network import load_network

REPO = Path(__file__).resolve().parents[2]


def test_script_path_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    printed = subprocess.run([sys.executable, "-m", "pem.export.tensorrt.polygraphy_network"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert printed == str(REPO / "export" / "tensorrt" / "polygraphy_network.py")
    monkeypatch.delenv("PEM_ONNX", raising=False)
    with pytest.raises(ValueError, match="set PEM_ONNX to the ONNX file to load"):
        load_network()
    monkeypatch.setenv("PEM_ONNX", str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="missing.onnx"):
        load_network()


@pytest.mark.trt
@pytest.mark.gpu
def test_polygraphy_builds_the_plugin_network(tiny_onnx: Path, tiny_feed: dict[str, np.ndarray],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, Profile, TrtRunner

    from pem.export.tensorrt.verify import check_feed, onnxruntime_runner, verify

    monkeypatch.setenv("PEM_ONNX", str(tiny_onnx))
    profile = Profile().add("orig_size", min=[1, 1], opt=[256, 256], max=[256, 256])
    runner = TrtRunner(EngineFromNetwork(load_network, config=CreateConfig(profiles=[profile])), name="polygraphy")
    feed, geometry, metadata = check_feed(tiny_onnx, tiny_feed["image"][0])
    report = verify(onnxruntime_runner(tiny_onnx), runner, feed, metadata, geometry, "fp32")
    assert report.passed, "\n".join(report.lines())
