"""Video files, cameras and network streams through OpenCV, read on a thread.

The reader thread decodes frames (converted to RGB) into a :class:`FrameBuffer` with one of two policies:

* ``latest``: one slot; a new frame replaces one the consumer has not taken yet, and the replaced frame counts as
  dropped. The consumer always gets the newest frame, so results stay fresh on a live source.
* ``queue``: a bounded FIFO; the reader waits while it is full (back-pressure), so no frame is dropped here. On a
  live source the backlog then grows inside the camera/driver buffers and results age.

Each frame carries its capture time (``time.monotonic()`` right after decoding), so consumers report the age of a
result. A live source (camera, URL) that stops delivering is reopened with exponential backoff, a bounded number
of times, then the stream ends with a :class:`SourceError`; a video file ends at its last frame. A frame of a
video file that fails to decode before the container's frame count is skipped and listed in ``failures``; reading
stops after ``MAX_UNREADABLE`` such frames in a row.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pem.runtime.errors import PemError

__all__ = ["MAX_UNREADABLE", "POLICIES", "Frame", "FrameBuffer", "SourceError", "StreamSource", "import_cv2"]

POLICIES = ("latest", "queue")
MAX_UNREADABLE = 30  # consecutive undecodable frames of a video file before reading stops
VIDEO_INSTALL_HINT = "pip install opencv-python-headless, or the extra pem-edge[video]"


class SourceError(PemError, RuntimeError):
    """A source that cannot be opened or that was lost."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One input: ``image`` uint8 [H, W, 3] RGB; ``name`` the stem outputs are named after; ``index`` its position in
    the source (frames dropped by the ``latest`` policy leave gaps); ``captured`` ``time.monotonic()`` when read;
    ``notes`` conversions applied while reading."""

    image: np.ndarray
    name: str
    index: int
    captured: float
    source: str
    notes: list[str] = field(default_factory=list)


def import_cv2() -> Any:
    """The ``cv2`` module, or ImportError saying how to install it.

    OpenCV's and FFmpeg's own log lines are kept off stderr (the tools report failures in one line of their own);
    set ``OPENCV_LOG_LEVEL`` / ``OPENCV_FFMPEG_LOGLEVEL`` yourself to see them. This takes effect when cv2 is
    first imported.
    """
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(f"video, camera and stream sources need OpenCV: {VIDEO_INSTALL_HINT}") from exc
    return cv2


class FrameBuffer:
    """Hand-off from one producer thread to one consumer under the ``latest`` or ``queue`` policy."""

    def __init__(self, policy: str, size: int) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown stream policy {policy!r} (use one of {', '.join(POLICIES)})")
        if size < 1:
            raise ValueError(f"queue size must be at least 1, got {size}")
        self.policy = policy
        self.size = 1 if policy == "latest" else size
        self.dropped = 0
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._finished = False
        self._error: BaseException | None = None

    def put(self, frame: Frame) -> bool:
        """Offer a frame (producer side); False once the consumer has stopped, so the producer should end."""
        with self._cond:
            while self.policy == "queue" and len(self._items) >= self.size and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return False
            if self.policy == "latest" and self._items:
                self._items.clear()
                self.dropped += 1
            self._items.append(frame)
            self._cond.notify_all()
            return True

    def finish(self, error: BaseException | None = None) -> None:
        """Producer side: no more frames; ``error`` is raised to the consumer after the buffered frames."""
        with self._cond:
            self._finished = True
            self._error = error
            self._cond.notify_all()

    def get(self) -> Frame | None:
        """Consumer side: the next frame, waiting for it; None at the end. Raises the producer's error."""
        with self._cond:
            while not self._items and not self._finished:
                self._cond.wait()
            if self._items:
                frame = self._items.popleft()
                self._cond.notify_all()
                return frame
            if self._error is not None:
                raise self._error
            return None

    def stop(self) -> None:
        """Consumer side: stop taking frames; a waiting producer is released."""
        with self._cond:
            self._stopped = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped


CaptureFactory = Callable[[], Any]


class StreamSource:
    """Frames of a video file, camera or URL through ``cv2.VideoCapture`` (policies in the module docstring).

    ``open_capture`` returns an object with ``isOpened()``, ``read()``, ``get(prop)`` and ``release()`` (a
    ``cv2.VideoCapture``); the default opens ``target``. ``live`` sources reconnect up to ``reconnects`` times,
    waiting ``backoff_s * 2**attempt`` seconds (at most 8 s) before each attempt.
    """

    def __init__(self, target: str | int, name: str, live: bool, policy: str = "queue", queue_size: int = 8,
                 reconnects: int = 5, backoff_s: float = 0.5, open_capture: CaptureFactory | None = None) -> None:
        cv2 = import_cv2()
        self.description = f"camera {target}" if isinstance(target, int) else str(target)
        self.name = name
        self.live = live
        self.reconnects = reconnects
        self.backoff_s = backoff_s
        self.buffer = FrameBuffer(policy, queue_size)
        self.failures: list[tuple[str, str]] = []
        self.ignored: list[str] = []
        self.reconnected = 0
        self._open = open_capture or _default_opener(cv2, target)
        self._capture = self._open()
        if not self._capture.isOpened():
            self._capture.release()
            kind = "camera" if isinstance(target, int) else "stream" if live else "video file"
            raise SourceError(f"cannot open {kind} {target}" + (" (no such device?)" if kind == "camera" else ""))
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = count if count > 0 and not live else None
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else None
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        """Frames replaced before the consumer took them (``latest`` policy)."""
        return self.buffer.dropped

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None:
            raise RuntimeError(f"{self.description} is already being read")
        self._thread = threading.Thread(target=self._read_loop, name=f"pem-reader-{self.name}", daemon=True)
        self._thread.start()
        try:
            while (frame := self.buffer.get()) is not None:
                yield frame
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader thread and release the capture."""
        self.buffer.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        if self._thread is None and self._capture is not None:
            self._capture.release()
            self._capture = None

    def _read_loop(self) -> None:
        index = 0
        unreadable: list[str] = []  # names of the consecutive frames that failed to decode since the last good one
        error: BaseException | None = None
        try:
            while not self.buffer.stopped:
                ok, bgr = self._capture.read()
                captured = time.monotonic()
                if not ok or bgr is None:
                    if self.live and self._reconnect():
                        continue
                    if self.live and not self.buffer.stopped:
                        error = SourceError(f"{self.description}: stream lost, {self.reconnects} reconnect "
                                            "attempts failed")
                    if self.live or not self._skip_unreadable(index, unreadable):
                        break
                    index += 1
                    continue
                self._record_unreadable(unreadable)
                frame = Frame(np.ascontiguousarray(bgr[..., ::-1]), f"{self.name}_{index:06d}", index, captured,
                              self.description)
                index += 1
                if not self.buffer.put(frame):
                    break
        except BaseException as exc:  # handed to the consumer, which re-raises it
            error = exc
        finally:
            self._capture.release()
            self._capture = None
            self.buffer.finish(error)

    def _skip_unreadable(self, index: int, unreadable: list[str]) -> bool:
        """A video file's read failed at frame ``index``: True to skip it and read on (a damaged frame before the
        container's frame count), False at the end of the container or after ``MAX_UNREADABLE`` in a row (those
        are then recorded as failures when the count says frames were left)."""
        if self.total is None or index >= self.total:
            return False  # the end, or no frame count to tell a damaged frame from the end
        unreadable.append(f"{self.name}_{index:06d}")
        if len(unreadable) < MAX_UNREADABLE:
            return True
        self._record_unreadable(unreadable)
        self.failures.append((self.description, f"{self.description}: stopped after {MAX_UNREADABLE} consecutive "
                                                f"unreadable frames at frame {index} of {self.total}"))
        return False

    def _record_unreadable(self, unreadable: list[str]) -> None:
        """Move the pending unreadable frames into ``failures`` (a later frame decoded, so they were damaged)."""
        self.failures.extend((name, f"{name}: undecodable video frame, skipped") for name in unreadable)
        unreadable.clear()

    def _reconnect(self) -> bool:
        """Reopen a lost live source; False when every attempt failed or the consumer stopped."""
        self._capture.release()
        for attempt in range(self.reconnects):
            deadline = time.monotonic() + min(self.backoff_s * 2**attempt, 8.0)
            while time.monotonic() < deadline:
                if self.buffer.stopped:
                    return False
                time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
            capture = self._open()
            if capture.isOpened():
                self._capture = capture
                self.reconnected += 1
                return True
            capture.release()
        return False


def _default_opener(cv2: Any, target: str | int) -> CaptureFactory:
    """``cv2.VideoCapture(target)``; URLs get 5 s open/read timeouts so a dead stream fails instead of hanging."""

    def opener() -> Any:
        if isinstance(target, str) and "://" in target:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
            return cv2.VideoCapture(target, cv2.CAP_ANY, params)
        return cv2.VideoCapture(target)

    return opener
