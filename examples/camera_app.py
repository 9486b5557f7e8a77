#!/usr/bin/env python3
"""Minimal camera app on the PEM runtime: segment a camera, stream or video; show the overlay or record it.

    python examples/camera_app.py model.onnx --source 0 --show                       # webcam window (q/Esc quits)
    python examples/camera_app.py model.onnx --source rtsp://cam/live --output overlay.mp4   # headless
    python examples/camera_app.py model.onnx --source clip.mp4 --output overlay.mp4 --max-frames 100

Capture, reconnects and frame policies come from ``pem.runtime.sources`` (live sources keep only the newest
frame; video files give every frame), the video file from ``pem.runtime.video_writer``: written to a temporary
file and renamed onto ``--output`` when closed, also after Ctrl-C, so the file is always playable. Ctrl-C stops
after the frame in progress; press it twice to stop at once.

Exit codes: 0 done; 1 the stream was lost after some frames; 2 the model, the source, the window or the output
cannot be opened, or the source delivered no frame (one line on stderr); 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from pem.runtime import Predictor
from pem.runtime.errors import PemError
from pem.runtime.sizes import positive_int
from pem.runtime.sources import Frame, SourceError, open_source
from pem.runtime.streams import import_cv2
from pem.runtime.video_writer import VideoWriter

PROG = "camera_app"
TITLE = "PEM segmentation"


class DisplayError(PemError, RuntimeError):
    """No window can be opened (no display, or an OpenCV built without GUI)."""


@dataclass
class Run:
    """What a run did: frames shown or written, seconds spent, why it stopped, and the error of a lost source."""

    frames: int = 0
    seconds: float = 0.0
    stopped: str = "end of source"
    error: str | None = None


class FpsMeter:
    """Frames per second, an exponential moving average of the intervals between ``tick`` calls."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.fps = 0.0
        self._last: float | None = None

    def tick(self) -> float:
        """Count one frame; returns the smoothed rate (0 on the first frame)."""
        now = time.perf_counter()
        if self._last is not None:
            rate = 1.0 / max(now - self._last, 1e-9)
            self.fps = rate if self.fps == 0.0 else self.smoothing * self.fps + (1.0 - self.smoothing) * rate
        self._last = now
        return self.fps


class CtrlC:
    """While entered, the first Ctrl-C only sets :attr:`pressed` (the loop stops after the current frame, so the
    video holds every frame counted); a second one raises KeyboardInterrupt at once (e.g. while a stalled stream
    is being waited for)."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __enter__(self) -> CtrlC:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        signal.signal(signal.SIGINT, self._previous)


class Window:
    """An OpenCV window; :meth:`show` returns False once q or Esc is pressed or the window is closed."""

    def __init__(self, title: str = TITLE) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise DisplayError("--show: no display (DISPLAY/WAYLAND_DISPLAY unset); use --output instead")
        self._cv2 = import_cv2()
        self.title = title
        try:
            self._cv2.namedWindow(title, self._cv2.WINDOW_NORMAL)
        except self._cv2.error as exc:
            raise DisplayError("--show: this OpenCV has no GUI support (opencv-python-headless?); "
                               "pip install opencv-python, or use --output") from exc

    def show(self, rgb: np.ndarray) -> bool:
        """Display [H, W, 3] uint8 RGB; False when the user asked to quit."""
        cv2 = self._cv2
        cv2.imshow(self.title, np.ascontiguousarray(rgb[..., ::-1]))
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def __enter__(self) -> Window:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._cv2.destroyWindow(self.title)


def draw_fps(rgb: np.ndarray, fps: float) -> np.ndarray:
    """A copy of [H, W, 3] uint8 RGB with ``fps`` written in the bottom-left corner."""
    cv2 = import_cv2()
    out = np.array(rgb)  # plot() may hand back a read-only array
    origin = (6, out.shape[0] - 8)
    text = f"{fps:.1f} FPS"
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def run(predictor: Predictor, frames: Iterable[Frame], window: Window | None, writer: VideoWriter | None,
        max_frames: int | None) -> Run:
    """Segment each frame, draw the overlay and the FPS, show and/or write it. Ctrl-C (:class:`CtrlC`) and a lost
    source end the run, recorded in the returned :class:`Run`, so the caller still closes the writer."""
    done = Run()
    meter = FpsMeter()
    start = time.perf_counter()
    try:
        with CtrlC() as ctrl_c:
            for frame in frames:
                view = draw_fps(predictor(frame.image).plot(), meter.tick())
                if writer is not None:
                    writer.write(view)
                done.frames += 1
                if ctrl_c.pressed:
                    done.stopped = "interrupted"
                    break
                if window is not None and not window.show(view):
                    done.stopped = "closed by the user"
                    break
                if max_frames is not None and done.frames >= max_frames:
                    done.stopped = "--max-frames reached"
                    break
    except KeyboardInterrupt:  # the second Ctrl-C
        done.stopped = "interrupted"
    except SourceError as exc:  # a live source lost for good, reconnects exhausted
        done.stopped, done.error = "source lost", str(exc)
    done.seconds = time.perf_counter() - start
    return done


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="ONNX file written by pem-export")
    parser.add_argument("--source", required=True, help="camera index (0), rtsp:// or http:// URL, or video file")
    parser.add_argument("--show", action="store_true", help="show the overlay and FPS in a window")
    parser.add_argument("--output", help="write the overlay video here (.mp4 or .avi)")
    parser.add_argument("--fps", type=float, default=None, help="fps of --output (default: the source's, else 10)")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="stop after N frames")
    parser.add_argument("--reconnects", type=int, default=5, help="reopen attempts of a lost live source (5)")
    parser.add_argument("--providers", default=None, help="onnxruntime providers, e.g. cuda,cpu (default: CUDA "
                        "when available, else CPU)")
    parser.add_argument("--threads", type=positive_int, default=None, help="onnxruntime intra-op CPU threads "
                        "(default: one per physical core)")
    args = parser.parse_args(argv)
    if not (args.show or args.output):
        parser.error("nothing to do: give --show, --output or both")
    return args


def fail(message: str) -> int:
    """Print ``message`` as one line on stderr; returns exit code 2."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the app (module docstring); returns the exit code."""
    args = parse_args(argv)
    providers = args.providers.split(",") if args.providers else None
    with ExitStack() as stack:
        try:
            predictor = stack.enter_context(Predictor(args.model, providers=providers, threads=args.threads))
            source = open_source(args.source, reconnects=args.reconnects)
            stack.callback(source.close)
            window = stack.enter_context(Window()) if args.show else None
            writer = None
            if args.output:
                writer = stack.enter_context(VideoWriter(args.output, args.fps or source.fps or 10.0))
        except (FileNotFoundError, ValueError, ImportError, OSError, SourceError, DisplayError) as exc:
            return fail(str(exc))
        done = run(predictor, source, window, writer, args.max_frames)
    if done.error is not None and not done.frames:
        return fail(f"{done.error} before the first frame")
    return report(done, args.output)


def report(done: Run, output: str | None) -> int:
    """One summary line on stderr; the exit code: 0 finished, 1 source lost midway, 130 interrupted."""
    if done.error is not None:
        print(f"{PROG}: error: {done.error}", file=sys.stderr)
    rate = done.frames / done.seconds if done.seconds > 0 else 0.0
    written = f"; overlay written to {output}" if output and done.frames else ""
    print(f"{PROG}: {done.frames} frame(s) in {done.seconds:.1f} s ({rate:.1f} FPS), {done.stopped}{written}",
          file=sys.stderr)
    return {"interrupted": 130, "source lost": 1}.get(done.stopped, 0)


if __name__ == "__main__":
    sys.exit(main())
