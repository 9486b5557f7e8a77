"""Training runs that cannot be lost: interrupts save and resume bit-exactly, run folders and resumes are checked,
a non-finite loss stops the run keeping the last good checkpoint, data errors under workers are one line."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pem.checkpoint import read_checkpoint, save_checkpoint
from pem.data.cli import main as data_main
from pem.training.cli import main as train_main
from pem.training.engine import StopSignals

REPO = Path(__file__).resolve().parents[2]
FAST = ["--config", "synthetic_panoptic_tiny", "--batch-size", "2", "--num-points", "256", "--log-every", "1",
        "--crop", "64x64"]
THREADS = 2  # the interrupted run (a subprocess) and the in-process runs compute with the same thread count


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    assert data_main(["synthetic", "--out", str(root / "train"), "--n", "6", "--size", "96x128", "--seed", "5"]) == 0
    return root


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("step ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def threads() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def test_sigint_saves_and_resume_is_bit_identical(scenes: Path, tmp_path: Path, threads: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    common = [*FAST, "--data", str(scenes), "--max-steps", "20", "--checkpoint-every", "10"]
    run = tmp_path / "interrupted"
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    process = subprocess.Popen([sys.executable, "-m", "pem.training.cli", *common, "--out", str(run)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        log = run / "log.jsonl"
        if log.is_file() and any(r.get("step", 0) >= 13 and "total" in r for r in _records(run)):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    stopped = read_checkpoint(run / "last.pth")["step"]
    assert 13 <= stopped < 20
    assert _one_line(err) == (f"pem-train: SIGINT at step {stopped}: resumable state saved to {run / 'last.pth'}; "
                              "continue with --resume")
    assert {"step": stopped, "checkpoint": "interrupt"} in _records(run)
    assert not (run / "model_final.pth").exists()

    assert train_main([*common, "--out", str(run), "--resume"]) == 0
    assert train_main([*common, "--out", str(tmp_path / "straight")]) == 0
    straight = read_checkpoint(tmp_path / "straight" / "model_final.pth")["model"]
    resumed = read_checkpoint(run / "model_final.pth")["model"]
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    steps = [r["step"] for r in _records(run) if "total" in r]
    assert steps[:stopped] == list(range(1, stopped + 1)) and steps[-(20 - stopped):] == list(range(stopped + 1, 21))
    saves = [(r["step"], r["checkpoint"]) for r in _records(tmp_path / "straight") if "checkpoint" in r]
    assert saves == [(10, "interval"), (20, "interval")]


def test_stop_signals_become_a_flag() -> None:
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
    assert signals.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_run_folder_and_resume_rules(scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def refused(arguments: list[str]) -> str:
        assert train_main([*FAST, "--data", str(scenes), "--max-steps", "2", *arguments]) == 2
        return _one_line(capsys.readouterr().err)

    run = tmp_path / "run"
    assert refused(["--out", str(run), "--resume"]) == (
        f"pem-train: error: --resume: {run} is empty, nothing to resume; pass --resume-or-start to start a new run "
        "there")
    assert train_main([*FAST, "--data", str(scenes), "--max-steps", "1", "--out", str(run), "--resume-or-start"]) == 0
    assert refused(["--out", str(run)]) == (
        f"pem-train: error: {run} is not empty (last.pth, log.jsonl, model_final.pth): pass --resume to continue the "
        "run there or --overwrite to replace it")
    assert "(global_batch 2 -> 4)" in refused(["--out", str(run), "--resume", "--batch-size", "4"])
    message = refused(["--out", str(run), "--resume", "--crop", "96x96"])
    assert message.startswith(f"pem-train: error: --resume: this run differs from the one in {run / 'last.pth'} (")
    assert "crop [64, 64] -> [96, 96]" in message and message.endswith("pass --force to resume anyway")
    other = tmp_path / "other_data"
    shutil.copytree(scenes, other)
    assert "data " in refused(["--out", str(run), "--resume", "--data", str(other)])
    assert train_main([*FAST, "--data", str(scenes), "--max-steps", "2", "--out", str(run), "--resume",
                       "--crop", "96x96", "--force"]) == 0
    assert read_checkpoint(run / "last.pth")["step"] == 2

    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    save_checkpoint(weights_only / "last.pth", read_checkpoint(run / "model_final.pth")["model"],
                    "synthetic_panoptic_tiny")
    message = refused(["--out", str(weights_only), "--resume"])
    assert "holds weights only" in message and f"--init {weights_only / 'last.pth'}" in message

    assert train_main([*FAST, "--data", str(scenes), "--max-steps", "1", "--out", str(run), "--overwrite"]) == 0
    assert [r["step"] for r in _records(run)] == [1, 1]  # the old log was replaced, not appended to


def test_checkpoints_by_time(scenes: Path, tmp_path: Path) -> None:
    assert train_main([*FAST, "--data", str(scenes), "--max-steps", "2", "--out", str(tmp_path),
                       "--checkpoint-minutes", "0.0001"]) == 0
    assert [(r["step"], r["checkpoint"]) for r in _records(tmp_path) if "checkpoint" in r] == [(1, "time"),
                                                                                                (2, "time")]


def test_nonfinite_loss_stops_keeping_the_last_good_checkpoint(scenes: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main([*FAST, "--data", str(scenes), "--max-steps", "6", "--out", str(tmp_path), "--lr", "1e12",
                       "--checkpoint-every", "1"]) == 1
    line = _one_line(capsys.readouterr().err)
    good = read_checkpoint(tmp_path / "last.pth")
    assert line.startswith("pem-train: error: the ") and " became non-finite at step " in line
    assert f"the last good checkpoint {tmp_path / 'last.pth'} (step {good['step']}) is kept" in line
    assert not (tmp_path / "model_final.pth").exists()


def test_data_error_under_workers_is_one_line(scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    for image in (data / "train" / "images").iterdir():
        image.write_bytes(b"not an image")
    assert train_main([*FAST, "--data", str(data), "--max-steps", "2", "--out", str(tmp_path / "run"),
                       "--workers", "2"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("pem-train: error: data error at step 1: cannot read image"), line
