"""Full-resolution forward of the largest preset on the CPU (slow; the timed figures come from
``python -m pem.benchmarks.cpu_forward``)."""
from __future__ import annotations

import pytest
import torch

import pem


@pytest.mark.slow
def test_cityscapes_panoptic_r50_forward_at_1024x2048() -> None:
    model = pem.build_model("cityscapes_panoptic_r50").eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 1024, 2048) * 255)
    assert out["pred_logits"].shape == (1, 100, 20)
    assert out["pred_masks"].shape == (1, 100, 256, 512)
    assert torch.isfinite(out["pred_masks"]).all()
