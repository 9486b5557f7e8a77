"""pem-bench statistics and report files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from pem.benchmarks.report import BenchRun, ratios, table, write_csv, write_json, write_plot
from pem.benchmarks.stats import spread_warning, summarize


def test_percentiles_on_known_samples() -> None:
    summary = summarize(list(range(1, 101)))  # 1..100 ms
    assert (summary.count, summary.min, summary.max, summary.mean) == (100, 1.0, 100.0, 50.5)
    assert summary.p50 == pytest.approx(50.5)
    assert summary.p90 == pytest.approx(90.1)
    assert summary.p99 == pytest.approx(99.01)
    assert summary.stdev == pytest.approx(29.011491975882016)  # sample standard deviation of 1..100
    single = summarize([3.0])
    assert (single.p50, single.p99, single.stdev) == (3.0, 3.0, 0.0)
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_spread_warning() -> None:
    assert spread_warning(summarize([10.0, 10.1, 9.9, 10.05] * 10)) is None
    noisy = spread_warning(summarize([10.0] * 95 + [40.0] * 5))
    assert noisy is not None and "p99" in noisy and "coefficient of variation" in noisy


def _run(label: str, e2e: list[float], batch: int = 1, accuracy: dict | None = None) -> BenchRun:
    return BenchRun(label, "onnxruntime", "fp32", "cpu", 64, 96, batch,
                    {"preprocess": summarize([1.0, 1.2]), "compute": summarize([x - 2 for x in e2e]),
                     "end_to_end": summarize(e2e)}, peak_host_mib=321.0, accuracy=accuracy)


def test_ratios_and_table() -> None:
    runs = [_run("torch fp32", [20.0, 22.0, 24.0], accuracy={"PQ": 60.0}),
            _run("ort fp32", [10.0, 11.0, 12.0], batch=2, accuracy={"PQ": 59.5})]
    rows = ratios(runs)
    assert rows[0]["speedup_p50"] == 1.0 and rows[1]["speedup_p50"] == pytest.approx(2.0)
    assert rows[1]["accuracy_drop"] == {"PQ": pytest.approx(0.5)}
    assert runs[1].throughput_qps == pytest.approx(181.8181818)  # batch 2 in a median of 11 ms
    text = table(runs)
    assert "torch fp32" in text and "x2.00 vs torch fp32" in text and "PQ 59.50" in text


def test_json_csv_and_plot_files(tmp_path: Path) -> None:
    runs = [_run("torch fp32", [20.0, 22.0, 24.0]), _run("ort fp32", [10.0, 11.0, 12.0])]
    write_json(tmp_path / "bench.json", runs, {"cpu": "test"}, "pem-bench x")
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["command"] == "pem-bench x" and report["environment"] == {"cpu": "test"}
    run = report["runs"][1]
    assert set(run) >= {"label", "throughput_qps", "latency", "stages", "peak_host_mib", "warnings"}
    assert set(run["latency"]) == {"count", "mean", "stdev", "min", "p50", "p90", "p95", "p99", "max", "unit"}
    assert list(run["stages"]) == ["preprocess", "compute", "end_to_end"]
    write_csv(tmp_path / "bench.csv", runs)
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert len(rows) == 6 and rows[2]["stage"] == "end_to_end" and float(rows[2]["p50"]) == 22.0
    write_plot(tmp_path / "bench.png", runs)
    with Image.open(tmp_path / "bench.png") as image:
        assert image.format == "PNG" and image.size[1] > 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.json", "bench.png"]
