"""The torch backend behind the runtime's Predictor equals the reference inference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pem
from pem.export.torch_backend import TorchBackend
from pem.inference import predict
from pem.runtime import Predictor
from tests.conftest import load_photo

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_panoptic_tiny.pth"


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    from pem.data.synthetic import synthetic_scene

    return synthetic_scene(np.random.default_rng(3), (192, 256), 24)[0]


def test_panoptic_head_equals_reference_chain(scene: np.ndarray) -> None:
    model = pem.build_model("synthetic_panoptic_tiny", str(FIXTURE))
    expected = predict(model, scene).panoptic
    with Predictor(FIXTURE) as predictor:  # .pth -> the torch backend, panoptic head
        assert predictor.backend.name == "torch"
        result = predictor(scene)
    assert len(expected.segments) >= 5
    assert np.mean(result.panoptic == expected.panoptic) >= 0.999
    assert [(s.category_id, s.isthing) for s in result.segments] == [
        (s.category_id, s.isthing) for s in expected.segments]


def test_raw_head_returns_model_outputs() -> None:
    image = load_photo("coffee.png")[:128, :160]
    backend = TorchBackend(FIXTURE, head="raw")
    outputs = backend.infer({"image": image[None]})
    model = pem.build_model("synthetic_panoptic_tiny", str(FIXTURE))
    with torch.no_grad():
        reference = model(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float())
    np.testing.assert_allclose(outputs["pred_logits"], reference["pred_logits"].numpy(), rtol=1e-5, atol=1e-5)
    assert outputs["pred_masks"].shape == (1, 20, 32, 40) and backend.last_timings["compute_ms"] > 0
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer({"image": image[None]})


def test_cpu_refuses_fp16_and_graphs_but_runs_bf16() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        TorchBackend("preset:synthetic_panoptic_tiny", precision="fp16")
    with pytest.raises(ValueError, match="CUDA"):
        TorchBackend("preset:synthetic_panoptic_tiny", cuda_graph=True)
    image = load_photo("coffee.png")[:64, :96]
    with TorchBackend(FIXTURE, head="raw", precision="bf16", channels_last=True) as backend:
        outputs = backend.infer({"image": image[None]})
    assert outputs["pred_logits"].dtype == np.float32 and outputs["pred_masks"].shape == (1, 20, 16, 24)
    assert np.isfinite(outputs["pred_masks"]).all()
