"""Damaged video frames and frames that fail inside the backend: counted, skipped, listed in summary.json, exit 1."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from pem.runtime import cli
from pem.runtime.streams import MAX_UNREADABLE, StreamSource
from tests.runtime import graphs
from tests.runtime.conftest import quadrants


def damaged_video(path: Path, frames: int, damaged: range | list[int]) -> Path:
    """An MJPG .avi written by OpenCV (frame i grey level 4 * i) whose ``damaged`` frames have their JPEG bytes
    after the start marker zeroed (FFmpeg's MJPEG decoder then fails on them and decodes the rest)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 4 * i, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == frames
    for index in damaged:
        end = starts[index + 1] - 8 if index + 1 < frames else len(data) - 8
        data[starts[index] + 2:end] = bytes(end - starts[index] - 2)
    path.write_bytes(bytes(data))
    return path


def test_damaged_frames_are_skipped_and_listed(tmp_path: Path) -> None:
    source = StreamSource(str(damaged_video(tmp_path / "clip.avi", 30, [10, 11, 20])), "clip", live=False)
    frames = list(source)
    assert [f.index for f in frames] == [i for i in range(30) if i not in (10, 11, 20)]
    assert [round(f.image.mean() / 4) for f in frames[9:12]] == [9, 12, 13]  # the right frames follow the gap
    assert [name for name, _ in source.failures] == ["clip_000010", "clip_000011", "clip_000020"]


def test_reading_stops_after_consecutive_unreadable_frames(tmp_path: Path) -> None:
    source = StreamSource(str(damaged_video(tmp_path / "clip.avi", 60, range(5, 55))), "clip", live=False)
    assert [f.index for f in source] == list(range(5))
    assert len(source.failures) == MAX_UNREADABLE + 1
    assert source.failures[-1][1].endswith(f"stopped after {MAX_UNREADABLE} consecutive unreadable frames at frame "
                                           f"{5 + MAX_UNREADABLE - 1} of 60")


def test_pem_predict_on_a_damaged_video(toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = damaged_video(tmp_path / "clip.avi", 24, [7, 8])
    out = tmp_path / "out"
    assert cli.main([str(toy_dir / "raw.onnx"), str(video), "--out", str(out), "--save", "semantic", "--quiet"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 22 and summary["status"] == "done, 2 input(s) failed"
    assert [f["input"] for f in summary["failed"]] == ["clip_000007", "clip_000008"]
    assert len(list((out / "semantic").iterdir())) == 22
    assert "failed: clip_000007: undecodable video frame" in capsys.readouterr().err


def test_a_frame_failing_in_the_backend_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The toy graph of free size with a Reshape of its image to [1, 64, 96, 3] in front: ONNX Runtime fails inside
    # the run on the frame that preprocesses to 64x85; the frames before and after it are processed.
    model = onnx.load(graphs.raw_graph(tmp_path / "raw.onnx"))
    for node in model.graph.node:
        node.input[:] = ["image_checked" if name == "image" else name for name in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 64, 96, 3], np.int64), "only_64x96"))
    model.graph.node.insert(0, helper.make_node("Reshape", ["image", "only_64x96"], ["image_checked"]))
    artifact = tmp_path / "guarded.onnx"
    onnx.save(model, artifact)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, size in (("a", (64, 96)), ("b", (60, 80)), ("c", (64, 96))):
        Image.fromarray(quadrants(*size)).save(folder / f"{name}.png")
    out = tmp_path / "out"
    assert cli.main([str(artifact), str(folder), "--out", str(out), "--save", "semantic", "--quiet"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 2 and summary["status"] == "done, 1 input(s) failed"
    assert [f["input"] for f in summary["failed"]] == ["b"] and "Reshape" in summary["failed"][0]["reason"]
    assert sorted(p.name for p in (out / "semantic").iterdir()) == ["a.png", "c.png"]
    assert "failed: b: " in capsys.readouterr().err
