"""Sources: the spec grammar, image folders with bad files, the frame buffer policies, video files, reconnects and
sources that do not open."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pem.runtime.sources import ImageSource, SourceError, open_source
from pem.runtime.streams import Frame, FrameBuffer, StreamSource


def write_video(path: Path, frames: int = 20, size: tuple[int, int] = (64, 96), fps: float = 10.0) -> Path:
    """A video whose frame i is uniformly grey level 10 * i (MJPG in .avi, mp4v in .mp4)."""
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((*size, 3), 10 * i % 256, dtype=np.uint8))
    writer.release()
    return path


def image_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("b.png", "a.jpg", "c.png"):
        Image.fromarray(np.full((8, 10, 3), 50, np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_skips_and_records_bad_files(tmp_path: Path) -> None:
    source = open_source(str(image_folder(tmp_path / "imgs")))
    assert isinstance(source, ImageSource) and source.total == 4
    names = [frame.name for frame in source]
    assert names == ["a", "b", "c"]
    assert [Path(name).name for name, _ in source.failures] == ["broken.png"]
    assert source.ignored == [str(tmp_path / "imgs" / "notes.txt")]


def test_glob_and_single_file(tmp_path: Path) -> None:
    image_folder(tmp_path / "one")
    image_folder(tmp_path / "two")
    source = open_source(str(tmp_path / "*" / "[ab].*"))
    assert [frame.name for frame in source] == ["a", "b", "a_2", "b_2"]
    assert [frame.name for frame in open_source(str(tmp_path / "one" / "c.png"))] == ["c"]
    with pytest.raises(SourceError, match="no image files match"):
        open_source(str(tmp_path / "*.nothing"))
    write_video(tmp_path / "one" / "clip.avi", frames=2)
    with pytest.raises(SourceError, match="matches videos"):
        open_source(str(tmp_path / "one" / "*"))


def test_missing_and_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source not found"):
        open_source(str(tmp_path / "nothing.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files in folder"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(SourceError, match="empty source"):
        open_source(" ")


def test_camera_and_url_that_do_not_open() -> None:
    with pytest.raises(SourceError, match="cannot open camera 97"):
        open_source("97")
    with pytest.raises(SourceError, match="cannot open stream http://127.0.0.1:9/feed.mjpg"):
        open_source("http://127.0.0.1:9/feed.mjpg")


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_queue_policy_keeps_every_frame(tmp_path: Path, suffix: str) -> None:
    source = open_source(str(write_video(tmp_path / f"clip{suffix}")))
    assert isinstance(source, StreamSource) and source.buffer.policy == "queue"
    assert source.total == 20 and source.fps == pytest.approx(10.0)
    frames = []
    for frame in source:
        time.sleep(0.002)
        frames.append(frame)
    assert [f.index for f in frames] == list(range(20)) and source.dropped == 0
    assert frames[3].name == "clip_000003" and frames[0].image.shape == (64, 96, 3)
    assert abs(frames[5].image.mean() - 50) < 6  # decoded in order (grey level 10 * index, lossy codecs)
    assert all(a.captured <= b.captured for a, b in zip(frames, frames[1:]))


def test_video_latest_policy_drops_and_counts(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "clip.avi")), policy="latest")
    taken = []
    for frame in source:
        time.sleep(0.03)  # a slow consumer
        taken.append(frame.index)
    assert taken[-1] == 19 and taken == sorted(taken)
    assert source.dropped > 0 and len(taken) + source.dropped == 20


def test_stopping_early_releases_the_reader(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "clip.avi", frames=40)), queue_size=2)
    for frame in source:
        if frame.index == 3:
            break
    source.close()
    assert source._thread is not None and not source._thread.is_alive()


def test_queue_buffer_applies_back_pressure() -> None:
    buffer = FrameBuffer("queue", 2)
    frame = Frame(np.zeros((1, 1, 3), np.uint8), "f", 0, 0.0, "test")
    put: list[bool] = []
    producer = threading.Thread(target=lambda: put.extend(buffer.put(frame) for _ in range(5)), daemon=True)
    producer.start()
    try:
        time.sleep(0.1)
        assert len(buffer._items) == 2 and put == [True, True]  # the third put waits on the full queue
        got = [buffer.get() for _ in range(5)]
        producer.join(timeout=2)
        buffer.finish()
    finally:
        buffer.stop()
    assert all(g is frame for g in got) and put == [True] * 5 and buffer.get() is None
    assert buffer.dropped == 0


def test_latest_buffer_keeps_the_newest() -> None:
    buffer = FrameBuffer("latest", 8)
    frames = [Frame(np.zeros((1, 1, 3), np.uint8), str(i), i, 0.0, "test") for i in range(4)]
    for frame in frames:
        assert buffer.put(frame)
    assert buffer.get() is frames[3] and buffer.dropped == 3
    buffer.finish(SourceError("lost"))
    with pytest.raises(SourceError, match="lost"):
        buffer.get()
    with pytest.raises(ValueError, match="unknown stream policy"):
        FrameBuffer("newest", 1)


class FakeCapture:
    """A capture that delivers ``frames`` frames, then fails (a dropped connection)."""

    def __init__(self, frames: int, opened: bool = True) -> None:
        self.left, self.opened = frames, opened

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left:
            self.left -= 1
            return True, np.zeros((4, 6, 3), np.uint8)
        return False, None

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.opened = False


def opener(*captures: FakeCapture) -> object:
    queue = list(captures)
    return lambda: queue.pop(0) if queue else FakeCapture(0, opened=False)


def test_live_stream_reconnects_then_gives_up() -> None:
    source = StreamSource("rtsp://camera", "cam", live=True, policy="queue", reconnects=2, backoff_s=0.01,
                          open_capture=opener(FakeCapture(3), FakeCapture(0, opened=False), FakeCapture(2)))
    indices = []
    with pytest.raises(SourceError, match="rtsp://camera: stream lost, 2 reconnect attempts failed"):
        for frame in source:
            indices.append(frame.index)
    assert indices == [0, 1, 2, 3, 4] and source.reconnected == 1


def test_live_source_that_never_opens() -> None:
    with pytest.raises(SourceError, match="cannot open stream rtsp://camera"):
        StreamSource("rtsp://camera", "cam", live=True, open_capture=opener(FakeCapture(0, opened=False)))
