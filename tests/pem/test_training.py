"""pem-train end to end on synthetic scenes: loss goes down, resume is exact, DDP equals one process; pem-eval."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pem.checkpoint import read_checkpoint
from pem.config import get_preset
from pem.data.cli import main as data_main
from pem.evaluation import main as eval_main
from pem.metrics.eval_panoptic_cli import main as eval_panoptic_main
from pem.modeling.pem_model import PEM
from pem.training.cli import main as train_main
from pem.training.optim import build_optimizer, cosine_factor

FAST = ["--config", "synthetic_panoptic_tiny", "--batch-size", "2", "--num-points", "256", "--log-every", "1",
        "--crop", "64x64"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    assert data_main(["synthetic", "--out", str(root / "train"), "--n", "6", "--size", "96x128", "--seed", "5"]) == 0
    assert data_main(["synthetic", "--out", str(root / "val"), "--n", "3", "--size", "96x128", "--seed", "6"]) == 0
    return root


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def test_short_training_run_decreases_the_loss(scenes: Path, tmp_path: Path) -> None:
    assert train_main([*FAST, "--data", str(scenes), "--out", str(tmp_path), "--max-steps", "24"]) == 0
    totals = [r["total"] for r in _log(tmp_path) if "total" in r]
    assert len(totals) == 24
    assert sum(totals[-5:]) / 5 < 0.8 * sum(totals[:5]) / 5
    weights = read_checkpoint(tmp_path / "model_final.pth")
    assert weights["format"] == "pem-edge/1" and weights["step"] == 24


def test_resume_continues_the_same_run_exactly(scenes: Path, tmp_path: Path) -> None:
    common = [*FAST, "--data", str(scenes), "--max-steps", "6"]
    assert train_main([*common, "--out", str(tmp_path / "straight")]) == 0
    assert train_main([*common, "--out", str(tmp_path / "split"), "--stop-after", "3"]) == 0
    assert read_checkpoint(tmp_path / "split" / "last.pth")["step"] == 3
    assert train_main([*common, "--out", str(tmp_path / "split"), "--resume"]) == 0
    straight = _weights(tmp_path / "straight" / "model_final.pth")
    split = _weights(tmp_path / "split" / "model_final.pth")
    for key, value in straight.items():
        assert torch.equal(value, split[key]), key
    steps = [r for r in _log(tmp_path / "split") if "total" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in steps] == [r["lr"] for r in _log(tmp_path / "straight") if "total" in r]
    assert [(r["step"], r["checkpoint"]) for r in _log(tmp_path / "split") if "checkpoint" in r] == [(3, "final"),
                                                                                                     (6, "final")]


def test_ddp_two_gloo_processes_match_one_process(scenes: Path, tmp_path: Path) -> None:
    common = ["--config", "synthetic_panoptic_tiny", "--batch-size", "4", "--num-points", "256", "--crop", "64x64",
              "--data", str(scenes), "--max-steps", "2", "--freeze-bn", "--log-every", "1"]
    assert train_main([*common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pem.training.cli", *common, "--out", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _weights(tmp_path / "one" / "model_final.pth"), _weights(tmp_path / "two" / "model_final.pth")
    for key, value in one.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-5, atol=1e-5, msg=key)
    first, second = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert second[0]["total"] == pytest.approx(first[0]["total"], rel=1e-5)


def test_gradient_accumulation_consumes_micro_batches(scenes: Path, tmp_path: Path) -> None:
    args = [*FAST, "--data", str(scenes), "--out", str(tmp_path), "--max-steps", "3", "--accumulate", "2"]
    assert train_main(args) == 0
    log = [r for r in _log(tmp_path) if "total" in r]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["total"] > 0 and r["grad_norm"] > 0 for r in log)


def test_parameter_groups_follow_the_official_rules() -> None:
    config = get_preset("synthetic_panoptic_tiny")
    model = PEM(config)
    optimizer = build_optimizer(model, config.train, 1e-3)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    backbone_conv = model.backbone.stem[0].conv.weight
    assert group_of[id(backbone_conv)]["lr"] == pytest.approx(1e-4)
    assert group_of[id(backbone_conv)]["weight_decay"] == 0.05
    assert group_of[id(model.backbone.stem[0].norm.weight)]["weight_decay"] == 0.0
    decoder = model.transformer_decoder
    assert group_of[id(decoder.query_feat.weight)]["weight_decay"] == 0.0
    assert group_of[id(decoder.head.norm.weight)]["weight_decay"] == 0.0
    assert group_of[id(decoder.head.class_embed.weight)] == {**group_of[id(decoder.head.class_embed.weight)],
                                                             "lr": 1e-3, "weight_decay": 0.05}
    assert cosine_factor(0, 100, 1e-3, 1e-6) == 1.0
    assert cosine_factor(50, 100, 1e-3, 1e-6) == pytest.approx((1e-6 + (1e-3 - 1e-6) / 2) / 1e-3)
    assert cosine_factor(100, 100, 1e-3, 1e-6) == pytest.approx(1e-3)


def test_eval_writes_predictions_that_pem_eval_panoptic_scores_the_same(scenes: Path, tmp_path: Path) -> None:
    assert train_main([*FAST, "--data", str(scenes), "--out", str(tmp_path / "run"), "--max-steps", "2"]) == 0
    out = tmp_path / "eval"
    assert eval_main(["--config", "synthetic_panoptic_tiny", "--weights", str(tmp_path / "run" / "model_final.pth"),
                      "--data", str(scenes), "--out", str(out), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["images"] == 3 and 0.0 <= metrics["semantic"]["mIoU"] <= 1.0
    assert eval_panoptic_main(["--gt-json", str(scenes / "val" / "panoptic.json"), "--gt-folder",
                               str(scenes / "val" / "panoptic"), "--pred-json", str(out / "predictions.json"),
                               "--pred-folder", str(out / "panoptic"), "--json", str(tmp_path / "pq.json")]) == 0
    pq = json.loads((tmp_path / "pq.json").read_text())
    assert pq["All"]["pq"] == pytest.approx(metrics["panoptic"]["All"]["pq"], abs=1e-12)


def test_cli_errors_are_one_line(scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_main(["--config", "nope", "--data", str(scenes), "--out", str(tmp_path)]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert train_main([*FAST, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pem-train: error:") and "missing" in err
