from __future__ import annotations

import pytest
import torch

import pem
from pem.config import list_presets

PARAMETER_COUNTS = {
    "cityscapes_semantic_r50": 35_532_581, "cityscapes_panoptic_r50": 35_532_581,
    "ade20k_semantic_r50": 35_513_128, "ade20k_panoptic_r50": 35_513_128,
    "cityscapes_semantic_stdc1": 16_957_829, "cityscapes_panoptic_stdc1": 16_957_829,
    "ade20k_semantic_stdc1": 16_991_496, "ade20k_panoptic_stdc1": 16_991_496,
    "cityscapes_semantic_stdc2": 20_988_293, "cityscapes_panoptic_stdc2": 20_988_293,
    "ade20k_semantic_stdc2": 21_021_960, "ade20k_panoptic_stdc2": 21_021_960,
}


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_trainable_parameters_equal_official(name: str) -> None:
    with torch.device("meta"):
        model = pem.build_model(name)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", list_presets())
def test_output_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = pem.build_model(name).eval()
    config = model.config
    with torch.no_grad():
        out = model(torch.rand(1, 3, 70, 100) * 255)  # padded to 96 x 128
    queries, classes = config.model.num_queries, config.num_classes
    assert set(out) == {"pred_logits", "pred_masks"}
    assert out["pred_logits"].shape == (1, queries, classes + 1)
    assert out["pred_masks"].shape == (1, queries, 24, 32)
    assert torch.isfinite(out["pred_masks"]).all() and torch.isfinite(out["pred_logits"]).all()


def test_training_mode_returns_six_aux_predictions() -> None:
    model = pem.build_model("synthetic_panoptic_tiny").train()
    out = model(torch.rand(2, 3, 64, 64) * 255)
    assert len(out["aux_outputs"]) == 6
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == out["pred_logits"].shape
        assert aux["pred_masks"].shape == out["pred_masks"].shape


def test_gradients_reach_every_trainable_parameter() -> None:
    torch.manual_seed(0)
    model = pem.build_model("synthetic_panoptic_tiny").train()
    out = model(torch.rand(2, 3, 64, 96) * 255)
    predictions = [out, *out["aux_outputs"]]
    loss = sum(p["pred_logits"].square().mean() + p["pred_masks"].sigmoid().mean() for p in predictions)
    loss.backward()
    starved = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert starved == []


def test_runs_in_float64_and_agrees_with_float32() -> None:
    torch.manual_seed(0)
    model = pem.build_model("synthetic_panoptic_tiny").eval()
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        out32 = model(images)
        out64 = model.double()(images.double())
    assert out64["pred_masks"].dtype == torch.float64
    torch.testing.assert_close(out64["pred_logits"].float(), out32["pred_logits"], rtol=1e-3, atol=1e-3)


def test_padding_is_zero_after_normalization() -> None:
    model = pem.build_model("synthetic_panoptic_tiny").eval()
    images = torch.full((1, 3, 40, 50), 128.0)
    x = model.preprocess(images)
    assert x.shape == (1, 3, 64, 64)
    assert torch.all(x[..., 40:, :] == 0) and torch.all(x[..., :, 50:] == 0)
    mean = torch.tensor(model.config.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.pixel_std).view(1, 3, 1, 1)
    torch.testing.assert_close(x[..., :40, :50], ((images - mean) / std).expand(1, 3, 40, 50))


def test_bad_inputs_have_clear_messages() -> None:
    model = pem.build_model("synthetic_panoptic_tiny").eval()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*\(1, 4, 32, 32\)"):
        model(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(KeyError, match="unknown preset"):
        pem.build_model("cityscapes_panoptic_r51")
