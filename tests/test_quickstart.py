"""The README's main job (scripts/quickstart.sh), shortened: 20 training steps on 32 scenes, in this environment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_shortened_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    env = {**os.environ, "PEM_SKIP_SETUP": "1", "PEM_QUICKSTART_OUT": str(out),
           "PEM_QUICKSTART_STEPS": "20", "PEM_QUICKSTART_TRAIN_IMAGES": "32",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "outputs OK" in done.stdout and "video: 40 frames with overlays" in done.stdout
    steps = [json.loads(line)["step"] for line in (out / "train" / "log.jsonl").read_text().splitlines()
             if '"total"' in line]
    assert steps == [20] and "expected: about 14 s on 2 idle CPU cores" in done.stdout  # a fixed step count
    assert "trained 20 steps" in done.stdout and "(the 15-minute fixture: 61.6)" in done.stdout
    assert (out / "predict" / "test" / "panoptic.json").is_file() and (out / "bench" / "bench.json").is_file()
    assert len(list((out / "predict" / "photos" / "overlay").iterdir())) == 3


def test_quickstart_fails_loudly_at_the_broken_step(tmp_path: Path) -> None:
    env = {**os.environ, "PEM_SKIP_SETUP": "1", "PEM_QUICKSTART_OUT": str(tmp_path / "q"),
           "PEM_QUICKSTART_TRAIN_IMAGES": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    assert "quickstart FAILED at step: synthetic datasets" in done.stderr
    assert "--n must be at least 1" in done.stderr
