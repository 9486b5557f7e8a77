"""pem-data video: a playable clip of a camera panning at constant speed over one synthetic scene."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pem.data.cli import main


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame.astype(np.float32))
    capture.release()
    return frames


def test_video_pans_across_the_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clip.avi"
    assert main(["video", "--out", str(out), "--frames", "9", "--size", "96x160", "--seed", "3"]) == 0
    assert "wrote 9 frames of 96x160" in capsys.readouterr().out
    frames = _frames(out)
    assert len(frames) == 9 and frames[0].shape == (96, 160, 3)
    step = 10  # the 240-pixel-wide scene is crossed in 8 steps of (240 - 160) / 8 pixels
    shifted = np.abs(frames[1][:, :-step] - frames[0][:, step:]).mean()
    unshifted = np.abs(frames[1] - frames[0]).mean()
    assert shifted < 0.3 * unshifted
    assert not list(tmp_path.glob(".clip*"))  # no temporary file left behind


@pytest.mark.parametrize(("argv", "message"), [
    (["--frames", "0", "--size", "64x64"], "frames must be at least 1"),
    (["--frames", "3", "--size", "8x8"], "each side must be in 32..8192 px"),
])
def test_bad_video_requests_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                   message: str) -> None:
    assert main(["video", "--out", str(tmp_path / "clip.mp4"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "clip.mp4").exists()
