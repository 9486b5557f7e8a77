"""examples/camera_app.py run as a user runs it (a subprocess), headless, on videos of synthetic scenes."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pem.runtime import Predictor
from tests.examples.conftest import EXAMPLES, scenes

APP = EXAMPLES / "camera_app.py"
HEIGHT, WIDTH = 120, 160


def write_video(path: Path, frames: list[np.ndarray], count: int) -> Path:
    """``count`` frames cycling through ``frames`` (RGB) as an mp4v video at 10 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    for index in range(count):
        writer.write(np.ascontiguousarray(frames[index % len(frames)][..., ::-1]))
    writer.release()
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of ``path`` (RGB) and its fps."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1][..., ::-1])
    capture.release()
    return frames, fps


def app(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(APP), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return scenes(4, (HEIGHT, WIDTH), seed=5)


@pytest.fixture(scope="module")
def video(frames: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "scenes.mp4", frames, 5)


def test_headless_writes_the_overlay_video(example_model: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "overlay.mp4"
    done = app(str(example_model), "--source", str(video), "--output", str(out), "--providers", "cpu",
               "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"camera_app: 5 frame\(s\) in [\d.]+ s \([\d.]+ FPS\), end of source; overlay written to "
                        + re.escape(str(out)) + "\n", done.stderr)
    written, fps = read_video(out)
    assert len(written) == 5 and fps == 10.0
    assert {frame.shape for frame in written} == {(HEIGHT, WIDTH, 3)}
    assert [p.name for p in out.parent.iterdir()] == ["overlay.mp4"]  # no temporary file left
    inputs, _ = read_video(video)
    with Predictor(example_model, providers=["cpu"]) as predictor:
        expected = predictor(inputs[0]).plot()
    body = slice(0, HEIGHT - 20)  # above the FPS text
    error = np.abs(written[0][body].astype(np.int16) - expected[body]).mean()
    assert error < 0.25 * np.abs(inputs[0][body].astype(np.int16) - expected[body]).mean()  # an overlay, not the input


def test_max_frames_and_avi(example_model: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "overlay.avi"
    done = app(str(example_model), "--source", str(video), "--output", str(out), "--max-frames", "3", "--fps", "4")
    assert done.returncode == 0, done.stderr
    assert "3 frame(s)" in done.stderr and "--max-frames reached" in done.stderr
    written, fps = read_video(out)
    assert len(written) == 3 and fps == 4.0 and written[0].shape == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("kind", ["corrupt file", "missing file", "dead camera", "dead stream"])
def test_a_dead_source_is_one_line_and_exit_2(example_model: Path, tmp_path: Path, kind: str) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video" * 100)
    source, message = {
        "corrupt file": (str(corrupt), f"cannot open video file {corrupt}"),
        "missing file": (str(tmp_path / "gone.mp4"), f"source not found: {tmp_path / 'gone.mp4'}"),
        "dead camera": ("9", "cannot open camera 9 (no such device?)"),
        "dead stream": ("rtsp://127.0.0.1:9/live", "cannot open stream rtsp://127.0.0.1:9/live"),
    }[kind]
    out = tmp_path / "overlay.mp4"
    done = app(str(example_model), "--source", source, "--output", str(out))
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith(f"camera_app: error: {message}")
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
    assert list(tmp_path.iterdir()) == [corrupt]  # no output, no temporary file


def test_ctrl_c_leaves_a_playable_video(example_model: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    source = write_video(tmp_path / "long.mp4", frames, 300)
    out = tmp_path / "out" / "overlay.mp4"
    process = subprocess.Popen([sys.executable, str(APP), str(example_model), "--source", str(source), "--output",
                                str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in out.parent.glob(".overlay.*.mp4")) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the first frames are in the temporary file
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    reported = int(re.search(r"camera_app: (\d+) frame\(s\) in .*, interrupted; overlay written", stderr)[1])
    written, _ = read_video(out)
    assert 1 <= len(written) == reported < 300
