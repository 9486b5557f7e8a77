"""pem-bench outputs: the terminal table, JSON (field names close to trtexec's), CSV and a PNG plot."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pem.benchmarks.stats import Summary
from pem.runtime.coco_panoptic import write_atomic

STAGE_ORDER = ("decode", "preprocess", "h2d", "compute", "d2h", "postprocess", "end_to_end")


@dataclass
class BenchRun:
    """One measured configuration. ``stages`` holds per-stage summaries in ms (``end_to_end`` always present)."""

    label: str
    backend: str
    precision: str
    device: str
    height: int
    width: int
    batch: int
    stages: dict[str, Summary]
    peak_host_mib: float | None = None
    peak_device_mib: float | None = None
    accuracy: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def throughput_qps(self) -> float:
        """Images per second at this batch size, from the mean end-to-end time."""
        return 1000.0 * self.batch / self.stages["end_to_end"].mean

    def to_dict(self) -> dict[str, Any]:
        ordered = [s for s in STAGE_ORDER if s in self.stages] + [s for s in self.stages if s not in STAGE_ORDER]
        return {
            "label": self.label, "backend": self.backend, "precision": self.precision, "device": self.device,
            "shape": {"batch": self.batch, "height": self.height, "width": self.width},
            "throughput_qps": self.throughput_qps, "latency": self.stages["end_to_end"].to_dict(),
            "stages": {name: self.stages[name].to_dict() for name in ordered},
            "peak_host_mib": self.peak_host_mib, "peak_device_mib": self.peak_device_mib,
            "accuracy": self.accuracy, "warnings": self.warnings,
        }


def ratios(runs: Sequence[BenchRun]) -> list[dict[str, Any]]:
    """Speed of every run against the first (p50 and mean end-to-end), plus accuracy drops where measured."""
    base = runs[0]
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "label": run.label,
            "speedup_p50": base.stages["end_to_end"].p50 / run.stages["end_to_end"].p50,
            "speedup_mean": base.stages["end_to_end"].mean / run.stages["end_to_end"].mean,
        }
        if run.accuracy and base.accuracy:
            row["accuracy_drop"] = {k: base.accuracy[k] - v for k, v in run.accuracy.items() if k in base.accuracy}
        rows.append(row)
    return rows


def table(runs: Sequence[BenchRun]) -> str:
    """A fixed-width table: one row per run with end-to-end statistics, throughput and the main stages."""
    header = f"{'run':<34}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}{'std':>8}{'img/s':>9}  stages p50 (ms)"
    lines = [header, "-" * len(header)]
    speed = ratios(runs)
    for run, ratio in zip(runs, speed):
        e2e = run.stages["end_to_end"]
        stages = " ".join(f"{name} {run.stages[name].p50:.2f}" for name in STAGE_ORDER[:-1] if name in run.stages)
        lines.append(f"{run.label:<34}{e2e.p50:>9.2f}{e2e.p90:>9.2f}{e2e.p99:>9.2f}{e2e.mean:>9.2f}{e2e.stdev:>8.2f}"
                     f"{run.throughput_qps:>9.2f}  {stages}")
        if len(runs) > 1:
            lines.append(f"{'':<34}x{ratio['speedup_p50']:.2f} vs {runs[0].label} (p50)")
        if run.accuracy:
            lines.append(f"{'':<34}" + "  ".join(f"{k} {v:.2f}" for k, v in run.accuracy.items())
                         + ("  drop " + "  ".join(f"{k} {v:+.2f}" for k, v in ratio.get("accuracy_drop", {}).items())
                            if "accuracy_drop" in ratio and run is not runs[0] else ""))
        for warning in run.warnings:
            lines.append(f"{'':<34}warning: {warning}")
    return "\n".join(lines)


def write_json(path: str | Path, runs: Sequence[BenchRun], environment: dict[str, Any], command: str) -> None:
    """All runs, their ratios against the first, the environment and the command line, written atomically."""
    report = {"command": command, "environment": environment, "runs": [r.to_dict() for r in runs],
              "ratios": ratios(runs)}
    text = json.dumps(report, indent=2)
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), ".json")


def write_csv(path: str | Path, runs: Sequence[BenchRun]) -> None:
    """One row per (run, stage) with every statistic, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = ["count", "mean", "stdev", "min", "p50", "p90", "p95", "p99", "max"]
    writer.writerow(["label", "backend", "precision", "device", "batch", "height", "width", "stage", *columns])
    for run in runs:
        for name, summary in run.stages.items():
            values = summary.to_dict()
            writer.writerow([run.label, run.backend, run.precision, run.device, run.batch, run.height, run.width,
                             name, *(values[c] for c in columns)])
    text = buffer.getvalue()
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), ".csv")


def write_plot(path: str | Path, runs: Sequence[BenchRun], title: str = "pem-bench end-to-end latency") -> None:
    """A PNG: one horizontal bar per run (p50), with thin marks at p90 and p99, written atomically."""
    from PIL import Image, ImageDraw

    row, left, right = 36, 260, 160
    width, height = 1000, 60 + row * len(runs)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), f"{title} (ms; bar p50, marks p90 and p99)", fill="black")
    longest = max(run.stages["end_to_end"].p99 for run in runs) or 1.0
    scale = (width - left - right) / longest
    for index, run in enumerate(runs):
        e2e = run.stages["end_to_end"]
        top = 40 + index * row
        draw.text((10, top + 8), run.label[:40], fill="black")
        draw.rectangle([left, top + 4, left + e2e.p50 * scale, top + row - 8], fill=(70, 110, 200))
        for value, colour in ((e2e.p90, (230, 140, 20)), (e2e.p99, (200, 30, 30))):
            x = left + value * scale
            draw.line([x, top + 2, x, top + row - 6], fill=colour, width=3)
        draw.text((left + e2e.p99 * scale + 8, top + 8), f"{e2e.p50:.1f} / {e2e.p90:.1f} / {e2e.p99:.1f}", fill="black")
    write_atomic(path, lambda handle: image.save(handle, format="PNG"), ".png")
