"""A one-line progress report on stderr: count/total, frames per second, latency and result age."""
from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Rewrites one line (``\\r``) at most every ``interval_s`` on a terminal; elsewhere prints a line at most every
    ``interval_s * 25`` seconds, so logs stay short. :meth:`finish` prints the final line."""

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None, interval_s: float = 0.2) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._interval = interval_s if self._tty else interval_s * 25
        self._start = time.monotonic()
        self._last = float("-inf")
        self._detail = ""

    def update(self, count: int, detail: str = "") -> None:
        """Record ``count`` items done; ``detail`` is appended to the line (e.g. latency)."""
        self.count = count
        self._detail = detail
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._emit(final=False)

    def finish(self) -> None:
        """Print the final line."""
        self._emit(final=True)

    def line(self) -> str:
        """The current text of the progress line."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        of_total = f"/{self.total}" if self.total else ""
        text = f"{self.label} {self.count}{of_total} {self.count / elapsed:.1f} FPS"
        return f"{text} {self._detail}".rstrip()

    def _emit(self, final: bool) -> None:
        if self._tty:
            self.stream.write("\r\x1b[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
