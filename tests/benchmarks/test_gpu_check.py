"""The prepared GPU script runs end to end on the CPU in smoke mode (the GPU figures need a CUDA card)."""
from __future__ import annotations

import json
from pathlib import Path

from pem.benchmarks.gpu_check import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_panoptic_tiny.pth"


def test_smoke_run_writes_its_report(tmp_path: Path) -> None:
    assert main(["--smoke", "--device", "cpu", "--weights", str(FIXTURE), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check_cpu_smoke.json").read_text())
    panoptic = report["cityscapes_panoptic"]
    assert panoptic["paper_mode_forward_ms_median"] > 0 and panoptic["speedup"] > 0
    assert panoptic["reference_segments"] > 0 and panoptic["panoptic_id_agreement"] == 1.0
    assert report["ade20k_semantic"]["iterations"] == 10 and report["environment"]["cpu"]
