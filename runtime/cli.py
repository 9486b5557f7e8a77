"""``pem-predict``: run an exported PEM artifact on images, folders, globs, videos, cameras or streams.

Outputs under ``--out`` (each file written atomically; names follow the input's stem, or ``<video>_<frame>``):

* ``panoptic/<name>.png`` and ``panoptic.json`` (COCO-panoptic predictions with the dataset category ids;
  ``image_id`` is the stem, an int when it is all digits), ``semantic/<name>.png`` (palette PNG of class ids),
  ``overlay/<name>.jpg``, ``cityscapes/<name>.png`` (``label_id * 1000 + instance``), as ``--save`` asks;
* ``frames.jsonl``: one line per frame (latency, age of the result since capture, stage timings, resident memory),
  appended as frames complete (a log, the one file not written atomically);
* ``summary.json``: counts, failures, drops, reconnects and latency/age statistics; written at the end, also after
  an error or Ctrl-C, with everything done so far.

Exit codes: 0 every input processed; 1 the run finished but some inputs failed (unreadable files, undecodable video
frames and frames that fail inside the backend are skipped and listed at the end, and the summary's status says so;
a lost stream or a write error stops the run); 2 nothing could start (bad arguments, artifact or source); 3 an
internal error (summary.json still written); 130 interrupted (outputs so far are kept).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pem.runtime.coco_panoptic import write_json_atomic
from pem.runtime.destinations import check_destination
from pem.runtime.entry import command, one_line
from pem.runtime.errors import EXIT_INTERNAL, PemError
from pem.runtime.limits import float_in
from pem.runtime.metadata import ArtifactError
from pem.runtime.outputs import coco_categories, write_image
from pem.runtime.predictor import Predictor
from pem.runtime.progress import Progress
from pem.runtime.resolution import MemoryBudgetError
from pem.runtime.result import Result
from pem.runtime.sizes import positive_int
from pem.runtime.sources import Source, SourceError, open_source
from pem.runtime.streams import POLICIES, Frame, import_cv2
from pem.runtime.video_writer import VideoWriter

PROG = "pem-predict"
SAVE_KINDS = ("panoptic", "semantic", "overlay", "cityscapes")
_WINDOW = 10_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run an exported PEM artifact (.onnx) on images, "
                                     "folders, globs, videos, cameras or streams.")
    parser.add_argument("artifact", help="exported artifact (.onnx written by pem-export), or a pem-serve URL "
                        "(http://HOST:PORT/MODEL, grpc://HOST:PORT/MODEL)")
    parser.add_argument("source", help="image, folder, glob ('imgs/*.jpg'), video file, camera index (0) or URL "
                        "(rtsp://, http://)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--save", default=None, help=f"comma list of {', '.join(SAVE_KINDS)} or 'none' "
                        "(default: panoptic,overlay; semantic,overlay for semantic-only artifacts)")
    parser.add_argument("--save-size", choices=("original", "fusion"), default="original", help="size of the saved "
                        "maps and overlays: the original image's (default) or the artifact's fusion resolution "
                        "(pem-export --fusion-size; segment areas counted at that size)")
    parser.add_argument("--show", action="store_true", help="show overlays in a window (needs a display; q quits)")
    parser.add_argument("--bgr-input", action="store_true", help="the decoded pixels are in BGR order (e.g. images "
                        "saved from OpenCV arrays without conversion): swap channels before inference")
    parser.add_argument("--stream-policy", choices=POLICIES, default=None, help="videos/cameras/URLs: 'latest' "
                        "keeps only the newest frame (drops counted), 'queue' buffers frames with back-pressure "
                        "(default: queue for video files, latest for live sources)")
    parser.add_argument("--queue-size", type=positive_int, default=8, help="frames buffered by 'queue' (8)")
    parser.add_argument("--reconnects", type=_non_negative_int, default=5, help="reopen attempts of a lost live "
                        "stream, with exponential backoff (5)")
    parser.add_argument("--video-out", help="write the overlays as a video (.mp4 or .avi)")
    parser.add_argument("--video-fps", type=float_in(0.0, 1000.0, low_open=True), default=None,
                        help="fps of --video-out, over 0 and up to 1000 (default: the source's, else 10)")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="stop after N frames")
    parser.add_argument("--backend", default="auto", help="backend name (default: by the artifact's suffix)")
    parser.add_argument("--providers", default=None, help="onnxruntime execution providers, comma list of cpu, "
                        "cuda, tensorrt (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=positive_int, default=None, help="onnxruntime: intra-op CPU threads "
                        "(default: one per physical core)")
    parser.add_argument("--preset", default=None, help="fail unless the artifact was exported from this preset")
    parser.add_argument("--alpha", type=float_in(0.0, 1.0), default=0.55, help="overlay opacity, 0..1 (0.55)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _say(message: str, stream: TextIO | None = None) -> None:
    print(f"{PROG}: {message}", file=stream or sys.stderr, flush=True)


def _save_kinds(text: str | None, has_panoptic: bool) -> list[str]:
    """The --save list, checked against the artifact."""
    if text is None:
        return ["panoptic", "overlay"] if has_panoptic else ["semantic", "overlay"]
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if kinds == ["none"]:
        return []
    unknown = [k for k in kinds if k not in SAVE_KINDS]
    if unknown:
        raise ValueError(f"--save: unknown kind(s) {', '.join(unknown)} (use {', '.join(SAVE_KINDS)} or none)")
    if "panoptic" in kinds and not has_panoptic:
        raise ValueError("--save panoptic: this artifact gives semantic output only")
    return kinds


def _rss_mb() -> float | None:
    """Resident memory of this process in MiB (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stats(values: deque[float], total: float, count: int) -> dict[str, float] | None:
    """Mean over every frame; percentiles and max over the last frames kept in ``values``."""
    if not count:
        return None
    window = np.asarray(values)
    p50, p90, p99 = np.percentile(window, [50, 90, 99])
    return {"mean": round(total / count, 3), "p50": round(float(p50), 3), "p90": round(float(p90), 3),
            "p99": round(float(p99), 3), "max": round(float(window.max()), 3)}


class _Display:
    """cv2.imshow when a display and a GUI-enabled OpenCV exist; otherwise says why once and shows nothing."""

    def __init__(self) -> None:
        self.enabled = False
        self.quit = False
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            _say("--show: no display (DISPLAY/WAYLAND_DISPLAY unset); results are saved but not shown")
            return
        try:
            cv2 = import_cv2()
            cv2.namedWindow(PROG, cv2.WINDOW_NORMAL)
        except ImportError:
            _say("--show needs OpenCV (pip install opencv-python); results are saved but not shown")
            return
        except cv2.error:
            _say("--show: this OpenCV has no GUI support (opencv-python-headless); install opencv-python to show "
                 "results; they are saved but not shown")
            return
        self._cv2 = cv2
        self.enabled = True

    def show(self, rgb: np.ndarray) -> None:
        if self.enabled:
            self._cv2.imshow(PROG, np.ascontiguousarray(rgb[..., ::-1]))
            self.quit = (self._cv2.waitKey(1) & 0xFF) in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            self._cv2.destroyWindow(PROG)


class _Run:
    """State of one pem-predict run: outputs, statistics, the frame log."""

    def __init__(self, args: argparse.Namespace, predictor: Predictor, source: Source, kinds: list[str]) -> None:
        self.args = args
        self.predictor = predictor
        self.source = source
        self.kinds = kinds
        self.out = Path(args.out)
        self.annotations: list[dict[str, Any]] = []
        self.processed = 0
        self.converted = 0
        self.latencies: deque[float] = deque(maxlen=_WINDOW)
        self.ages: deque[float] = deque(maxlen=_WINDOW)
        self.latency_total = 0.0
        self.age_total = 0.0
        self.errors: list[str] = []
        self.failed: list[tuple[str, str]] = []  # frames that failed inside the backend: (name, reason)
        self.started = time.monotonic()
        self.rss_start = _rss_mb()
        self.video: VideoWriter | None = None
        if args.video_out:
            self.video = VideoWriter(args.video_out, args.video_fps or source.fps or 10.0)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "frames.jsonl", "w", encoding="utf-8")
        self.display = _Display() if args.show else None
        self.progress: Progress | None = None
        if not args.quiet:
            self.progress = Progress(source.total if args.max_frames is None else
                                     min(source.total or args.max_frames, args.max_frames), PROG)

    def handle(self, frame: Frame) -> None:
        """Predict one frame, save what was asked, log it."""
        for note in frame.notes:
            _say(f"warning: {frame.source}: {note}")
        self.converted += bool(frame.notes)
        taken = time.monotonic()
        try:
            result = self.predictor(frame.image, bgr=self.args.bgr_input)
        except PemError:
            raise
        except Exception as exc:  # this frame failed inside the backend (ONNX Runtime, TensorRT): report it, go on
            self.failed.append((frame.name, f"{frame.name}: {type(exc).__name__}: {one_line(exc)}"))
            return
        done = time.monotonic()
        latency, age = (done - taken) * 1000.0, (done - frame.captured) * 1000.0
        self._save(frame, result.at_fusion_size() if self.args.save_size == "fusion" else result)
        self.processed += 1
        self.latencies.append(latency)
        self.ages.append(age)
        self.latency_total += latency
        self.age_total += age
        record = {"name": frame.name, "index": frame.index, "source": frame.source, "latency_ms": round(latency, 3),
                  "age_ms": round(age, 3), **{k: round(v, 3) for k, v in result.timings.items()},
                  "segments": len(result.segments), "rss_mb": _rss_mb()}
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        if self.progress is not None:
            self.progress.update(self.processed, f"latency {latency:.0f} ms age {age:.0f} ms")

    def _save(self, frame: Frame, result: Result) -> None:
        if "panoptic" in self.kinds:
            self.annotations.append(
                result.save_coco_panoptic(self.out / "panoptic", f"{frame.name}.png", write_json=False)
            )
        if "semantic" in self.kinds:
            result.save_semantic(self.out / "semantic" / f"{frame.name}.png")
        if "cityscapes" in self.kinds:
            result.save_cityscapes(self.out / "cityscapes", frame.name)
        if "overlay" in self.kinds or self.video is not None or self.display is not None:
            plotted = result.plot(alpha=self.args.alpha)
            if "overlay" in self.kinds:
                write_image(self.out / "overlay" / f"{frame.name}.jpg", plotted, quality=90)
            if self.video is not None:
                self.video.write(plotted)
            if self.display is not None:
                self.display.show(plotted)

    @property
    def stop_requested(self) -> bool:
        return self.display is not None and self.display.quit

    def finish(self, status: str) -> dict[str, Any]:
        """Close the outputs and write panoptic.json and summary.json; returns the summary."""
        self.log.close()
        if self.progress is not None and self.processed:
            self.progress.finish()
        if self.display is not None:
            self.display.close()
        video_path = None
        if self.video is not None:
            try:
                video_path = self.video.close()
            except OSError as exc:
                self.errors.append(f"cannot finish {self.args.video_out}: {exc}")
        if "panoptic" in self.kinds:
            write_json_atomic(self.out / "panoptic.json", {
                "annotations": self.annotations, "categories": coco_categories(self.predictor.metadata.classes)})
        elapsed = time.monotonic() - self.started
        meta = self.predictor.metadata
        failed = [*self.source.failures, *self.failed]
        if status == "done" and (failed or self.errors):
            status = f"done, {len(failed)} input(s) failed" if failed else "done with errors"
        summary = {
            "status": status, "artifact": str(self.args.artifact), "preset": meta.preset, "head": meta.head,
            "backend": self.predictor.backend.description, "source": self.source.description,
            "processed": self.processed,
            "failed": [{"input": n, "reason": r} for n, r in failed],
            "errors": self.errors, "ignored": self.source.ignored, "converted": self.converted,
            "dropped": self.source.dropped, "reconnects": getattr(self.source, "reconnected", 0),
            "wall_s": round(elapsed, 3), "fps": round(self.processed / elapsed, 3) if elapsed > 0 else None,
            "latency_ms": _stats(self.latencies, self.latency_total, self.processed),
            "age_ms": _stats(self.ages, self.age_total, self.processed),
            "rss_mb": {"start": self.rss_start, "end": _rss_mb()},
            "saved": self.kinds, "video_out": str(video_path) if video_path else None,
        }
        write_json_atomic(self.out / "summary.json", summary)
        return summary


def _report(summary: dict[str, Any]) -> None:
    """The end-of-run lines on stderr."""
    parts = [f"{summary['processed']} frame(s) processed"]
    if summary["failed"]:
        parts.append(f"{len(summary['failed'])} failed")
    if summary["dropped"]:
        parts.append(f"{summary['dropped']} dropped (latest-frame policy)")
    if summary["reconnects"]:
        parts.append(f"{summary['reconnects']} reconnect(s)")
    if summary["latency_ms"]:
        parts.append(f"latency mean {summary['latency_ms']['mean']:.1f} ms, age p99 {summary['age_ms']['p99']:.1f} ms")
    _say("; ".join(parts))
    if summary["ignored"]:
        _say(f"ignored {len(summary['ignored'])} non-image file(s), e.g. {summary['ignored'][0]}")
    for failure in summary["failed"]:
        _say(f"failed: {failure['reason']}")
    for error in summary["errors"]:
        _say(f"error: {error}")


@command("pem-predict")
def main(argv: list[str] | None = None) -> int:
    """Run pem-predict; returns the exit code (module docstring)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    check_destination(args.out, [args.artifact, args.source], what="--out", folder=True)
    if args.video_out:
        check_destination(args.video_out, [args.artifact, args.source], what="--video-out")
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    try:
        predictor = Predictor(args.artifact, args.backend, providers, expect_preset=args.preset, threads=args.threads)
    except (FileNotFoundError, ArtifactError, ImportError, ValueError) as exc:
        _say(f"error: {exc}")
        return 2
    with predictor:
        try:
            kinds = _save_kinds(args.save, predictor.metadata.has_panoptic)
            source = open_source(args.source, args.stream_policy, args.queue_size, args.reconnects)
        except (ValueError, SourceError, ImportError) as exc:
            _say(f"error: {exc}")
            return 2
        return _run(args, predictor, source, kinds)


def _run(args: argparse.Namespace, predictor: Predictor, source: Source, kinds: list[str]) -> int:
    try:
        run = _Run(args, predictor, source, kinds)
    except (OSError, ValueError, ImportError) as exc:
        source.close()
        _say(f"error: {exc}")
        return 2
    status, code = "stopped by an internal error", EXIT_INTERNAL  # until the loop ends; the wrapper reports the bug
    try:
        for frame in source:
            run.handle(frame)
            if run.stop_requested or (args.max_frames is not None and run.processed >= args.max_frames):
                break
        status, code = "done", 0
    except KeyboardInterrupt:
        status, code = "interrupted", 130
    except MemoryBudgetError as exc:
        _say(f"error: {exc}")
        run.errors.append(str(exc))
        status, code = "refused", 2
    except SourceError as exc:
        run.errors.append(str(exc))
        status, code = "source lost", 1
    except OSError as exc:
        run.errors.append(f"cannot write output: {exc}")
        status, code = "write error", 1
    finally:
        source.close()
        try:
            summary = run.finish(status)
        except OSError as exc:
            _say(f"error: cannot write the final outputs under {args.out}: {exc}")
            return 1
    if code == 0 and (summary["failed"] or summary["errors"]):
        code = 1
    _report(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
