"""An overlay video written with ``cv2.VideoWriter`` to a temporary file, renamed onto the target when closed.

The container follows the suffix: ``.mp4`` (codec mp4v) or ``.avi`` (MJPG). Frames are RGB uint8; every frame is
resized to the first frame's size when sizes differ (image folders of mixed sizes).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np

from pem.runtime.coco_panoptic import PathLike, process_umask
from pem.runtime.streams import import_cv2

__all__ = ["FOURCC", "VideoWriter"]

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


class VideoWriter:
    """``write(rgb)`` frames, then ``close()`` (or leave the ``with`` block) to publish the file at ``path``."""

    def __init__(self, path: PathLike, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise ValueError(f"video output {self.path} must end in {' or '.join(FOURCC)}")
        if not fps > 0:
            raise ValueError(f"video fps must be positive, got {fps}")
        self._cv2 = import_cv2()
        self.fps = float(fps)
        self.frames = 0
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=suffix, dir=self.path.parent)
        os.close(handle)
        os.chmod(name, 0o666 & ~process_umask())  # mkstemp creates 0600; give the video the usual permissions
        self._tmp = Path(name)

    def write(self, rgb: np.ndarray) -> None:
        """Append one [H, W, 3] uint8 RGB frame."""
        cv2 = self._cv2
        height, width = rgb.shape[:2]
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                self.abort()
                raise OSError(f"OpenCV cannot write {self.path.suffix} video to {self.path}")
            self._size = (width, height)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if (width, height) != self._size:
            bgr = cv2.resize(bgr, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it onto ``path``; returns it, or None when no frame was written."""
        if self._writer is None:
            self._tmp.unlink(missing_ok=True)
            return None
        self._writer.release()
        self._writer = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; ``path`` is left as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
