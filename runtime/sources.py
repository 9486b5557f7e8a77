"""Input sources of ``pem-predict``: one grammar for images, folders, globs, videos, cameras and URLs.

``open_source(spec)`` reads ``spec`` as, in this order:

* digits (``0``): a camera index (OpenCV), live;
* ``scheme://...`` (rtsp, rtmp, http, https, tcp, udp, ...): a network stream (OpenCV/FFmpeg), live;
* an existing folder: its image files (Pillow's suffixes, sorted, not recursive); other files are ignored and
  listed in ``ignored``;
* an existing file: a video when its suffix is a video suffix, else an image;
* a pattern with ``*``, ``?`` or ``[``: a glob (``**`` recurses) of images; other matches are ignored (listed),
  matching videos are an error (give one video at a time);
* anything else: :class:`SourceError` (not found).

Image sources skip files that fail to read and record them in ``failures`` (``(name, reason)``), so one corrupt
file never stops a folder. Every source iterates :class:`~pem.runtime.streams.Frame` objects and has ``total``
(None when unknown), ``fps`` (None for images), ``dropped``, ``failures``, ``ignored`` and ``close()``.
"""
from __future__ import annotations

import glob
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pem.runtime.images import ImageReadError, is_image_file, read_image
from pem.runtime.streams import Frame, SourceError, StreamSource

__all__ = ["VIDEO_SUFFIXES", "Frame", "ImageSource", "Source", "SourceError", "open_source"]

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".mts", ".asf", ".3gp", ".mjpeg", ".mjpg", ".h264", ".h265", ".hevc"})


class ImageSource:
    """Frames of image files, read in the calling thread; unreadable files land in ``failures``."""

    live = False
    fps: float | None = None
    dropped = 0

    def __init__(self, paths: Sequence[Path], description: str, ignored: Sequence[str] = ()) -> None:
        self.paths = list(paths)
        self.description = description
        self.total: int | None = len(self.paths)
        self.failures: list[tuple[str, str]] = []
        self.ignored = list(ignored)
        self._names = _unique_stems(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        for index, (path, name) in enumerate(zip(self.paths, self._names)):
            try:
                read = read_image(path)
            except ImageReadError as exc:
                self.failures.append((str(path), str(exc)))
                continue
            yield Frame(read.image, name, index, time.monotonic(), str(path), read.notes)

    def close(self) -> None:
        """Nothing to release (files are closed after each read)."""


Source = ImageSource | StreamSource


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output names: file stems, with ``_2``, ``_3``... appended where two files share a stem."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        names.append(path.stem if count == 1 else f"{path.stem}_{count}")
    return names


def _safe_name(text: str) -> str:
    """A file-name-safe stem for a camera or URL."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "stream"


def open_source(spec: str, policy: str | None = None, queue_size: int = 8, reconnects: int = 5,
                backoff_s: float = 0.5) -> Source:
    """The source ``spec`` names (module docstring). ``policy`` ``latest``/``queue`` applies to videos, cameras and
    URLs; None means ``queue`` for video files (every frame) and ``latest`` for live sources (fresh results)."""
    text = str(spec).strip()
    if not text:
        raise SourceError("empty source")
    stream_args: dict[str, Any] = {"queue_size": queue_size, "reconnects": reconnects, "backoff_s": backoff_s}
    if text.isdigit():
        return StreamSource(int(text), f"camera{text}", True, policy or "latest", **stream_args)
    if "://" in text:
        name = _safe_name(text.split("://", 1)[1])[:60]
        return StreamSource(text, name, True, policy or "latest", **stream_args)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if is_image_file(p)]
        if not images:
            raise SourceError(f"no image files in folder {path}")
        return ImageSource(images, str(path), [str(p) for p in files if not is_image_file(p)])
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return StreamSource(str(path), _safe_name(path.stem), False, policy or "queue", **stream_args)
        return ImageSource([path], str(path))
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        videos = [p for p in matches if p.suffix.lower() in VIDEO_SUFFIXES]
        if videos:
            raise SourceError(f"{text} matches videos ({videos[0]}, ...): give one video file at a time")
        images = [p for p in matches if is_image_file(p)]
        if not images:
            raise SourceError(f"no image files match {text}")
        return ImageSource(images, text, [str(p) for p in matches if not is_image_file(p)])
    raise SourceError(f"source not found: {text} (not a file, folder, glob, camera index or URL)")
