"""GMACs of the official model (paper's count: one per multiply-add) and pem-info's CLI."""
from __future__ import annotations

import json

import pytest

from pem.config import get_preset
from pem.info import main, model_info
from pem.runtime.sizes import parse_size

# official model, counted over convs (deformable included), linears, matmuls and einsums
OFFICIAL_GMACS = [
    ("cityscapes_panoptic_r50", 1024, 2048, 236.1),
    ("cityscapes_semantic_stdc1", 1024, 2048, 91.7),
    ("cityscapes_semantic_stdc2", 1024, 2048, 118.0),
    ("ade20k_panoptic_r50", 640, 640, 47.0),
    ("ade20k_semantic_r50", 512, 512, 30.5),
    ("ade20k_semantic_r50", 640, 640, 47.0),
    ("ade20k_semantic_stdc1", 512, 512, 12.4),
    ("ade20k_semantic_stdc2", 512, 512, 15.7),
]


@pytest.mark.parametrize(("preset", "height", "width", "gmacs"), OFFICIAL_GMACS)
def test_gmacs_within_two_percent(preset: str, height: int, width: int, gmacs: float) -> None:
    info = model_info(preset, height, width)
    assert info.gmacs == pytest.approx(gmacs, rel=0.02)
    assert sum(info.gmacs_by_component.values()) == pytest.approx(info.gmacs, rel=1e-9)


def test_deformable_macs_counted_exactly() -> None:
    info = model_info("cityscapes_panoptic_r50", 1024, 2048)
    tokens = 32 * 64 + 64 * 128 + 128 * 256  # the three DCN levels at strides 32, 16, 8
    assert info.deformable_gmacs * 1e9 == pytest.approx(tokens * 128 * 128 * 9, rel=1e-12)


def test_reference_deform_kernel_counts_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = model_info("ade20k_semantic_stdc1", 256, 256).gmacs
    monkeypatch.setenv("PEM_DISABLE_TORCHVISION_DEFORM", "1")
    assert model_info("ade20k_semantic_stdc1", 256, 256).gmacs == pytest.approx(fast, rel=1e-9)


def test_cli_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["--config", "ade20k_panoptic_r50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["height"], report["width"]) == (640, 640)
    assert report["parameters"] == 35_513_128 and report["frozen_elements"] == 53_120
    assert main(["--config", "cityscapes_semantic_stdc1", "--imgsz", "512x1024"]) == 0
    assert "cityscapes_semantic_stdc1 at 512x1024" in capsys.readouterr().out


def test_cli_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["--config", "bogus"]) == 2
    assert "unknown preset 'bogus'" in capsys.readouterr().err
    assert parse_size("640") == (640, 640) and parse_size("480,640") == (480, 640)
    with pytest.raises(SystemExit):
        main(["--config", "ade20k_panoptic_r50", "--imgsz", "0x5"])


def test_inference_skips_the_intermediate_full_size_masks() -> None:
    """The official test-time decoder makes 7 predictions with full-size (1/4) mask logits; this package's
    inference makes the 6 it only needs for attention at the attention size (1/32, 1/16, 1/8, twice each)."""
    config = get_preset("ade20k_semantic_stdc1")
    info = model_info("ade20k_semantic_stdc1", 512, 512)
    per_pixel = config.model.num_queries * config.model.mask_dim
    full_size = 6 * per_pixel * 128 * 128 / 1e9
    attention = 2 * per_pixel * (16 * 16 + 32 * 32 + 64 * 64) / 1e9
    assert info.gmacs - info.inference_gmacs == pytest.approx(full_size - attention, rel=1e-6)
