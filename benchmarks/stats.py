"""Latency statistics: the summary every pem-bench figure is reported with, and when not to trust it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Summary:
    """Statistics of one timed quantity, in milliseconds.

    Percentiles interpolate linearly between order statistics (numpy's default), so p50 of an even count is the
    mean of the two middle samples.
    """

    count: int
    mean: float
    stdev: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    unit: str = "ms"

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def summarize(samples: Sequence[float]) -> Summary:
    """Summary of ``samples`` (at least one); stdev is the sample standard deviation (ddof=1, 0 for one sample)."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples to summarize")
    p50, p90, p95, p99 = np.percentile(values, PERCENTILES)
    stdev = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return Summary(int(values.size), float(values.mean()), stdev, float(values.min()), float(p50), float(p90),
                   float(p95), float(p99), float(values.max()))


def spread_warning(summary: Summary, max_cov: float = 0.10, max_tail: float = 2.0) -> str | None:
    """A warning when the samples are too spread to compare runs: coefficient of variation above ``max_cov`` or
    p99 above ``max_tail`` times p50 (shared or throttling machines, too few samples). None when they look stable."""
    if summary.count < 2 or summary.mean <= 0:
        return None
    cov = summary.stdev / summary.mean
    problems = []
    if cov > max_cov:
        problems.append(f"coefficient of variation {100 * cov:.0f}% > {100 * max_cov:.0f}%")
    if summary.p99 > max_tail * summary.p50:
        problems.append(f"p99 {summary.p99:.2f} ms is {summary.p99 / summary.p50:.1f}x p50")
    if not problems:
        return None
    return "; ".join(problems) + ": the timing is unstable, compare runs measured together (--compare) only"
