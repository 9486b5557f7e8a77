"""The prepared GPU check on the CPU (``--smoke``): paper-mode settings, honest agreement, JSON kept on failure."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pem.benchmarks.gpu_check import main, panoptic_stage

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_panoptic_tiny.pth"


def test_smoke_on_the_trained_fixture_records_paper_mode_and_agrees(tmp_path: Path) -> None:
    """bf16 autocast (fast path on the CPU) against paper mode on a held-out scene at 256x256."""
    tf32_before = torch.backends.cudnn.allow_tf32
    assert main(["--smoke", "--device", "cpu", "--weights", str(FIXTURE), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())
    panoptic = report["panoptic"]
    paper = panoptic["paper_mode"]
    assert paper["settings"]["matmul_allow_tf32"] is False and paper["settings"]["cudnn_allow_tf32"] is False
    assert paper["settings"]["cudnn_benchmark"] is False and paper["settings"]["PEM_DISABLE_TRITON"] == "1"
    assert paper["input_nchw_contiguous"] is True and paper["precision"] == "fp32" and paper["execution"] == "eager"
    assert torch.backends.cudnn.allow_tf32 == tf32_before and "PEM_DISABLE_TRITON" not in os.environ  # restored
    assert panoptic["fast"]["precision"] == "bf16"
    for measure in ("device", "end_to_end"):
        ratio = paper[f"{measure}_ms_median"] / panoptic["fast"][f"{measure}_ms_median"]
        assert panoptic[f"speedup_{measure}"] == pytest.approx(ratio)
    assert panoptic["reference_segments"] >= 5 and panoptic["agreement"] >= 0.99
    deform = report["deform_conv"]
    assert deform["offsets"] == "trained offset conv" and deform["offset_abs_mean_px"] > 0.1
    assert deform["fast_bfloat16_ms"] > 0 and deform["fast_low_precision_max_abs_error"] < 0.1
    assert report["semantic"]["iterations"] == 2
    environment = report["environment"]
    assert environment["triton"] and environment["torchvision"] and "cudnn_allow_tf32" in environment["torch_settings"]


def test_random_weights_get_no_agreement_figure() -> None:
    """Random weights keep no query at the 0.8 threshold: both maps are all void, so agreement is refused."""
    captured: dict = {}
    stage = panoptic_stage("preset:synthetic_panoptic_tiny", "cpu", (64, 64), 1, 0, captured)
    assert stage["reference_segments"] < 5
    assert stage["agreement"] is None and "segments (< 5)" in stage["agreement_refused"]
    assert len(captured["args"]) == 4  # input, offset, mask, weight of the last deformable layer


def test_failed_stages_are_recorded_and_the_json_is_still_written(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pth"
    assert main(["--smoke", "--device", "cpu", "--weights", str(missing), "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())
    assert "missing.pth" in report["panoptic"]["error"]
    assert "not captured" in report["deform_conv"]["error"]
    assert report["semantic"]["device_ms_median"] > 0


def test_weights_are_required_outside_smoke(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--device", "cpu"])
    assert "--weights is required" in capsys.readouterr().err
