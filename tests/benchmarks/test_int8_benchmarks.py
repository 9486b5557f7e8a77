"""The INT8 benchmarks run end to end at small sizes and write the records the README quotes."""
from __future__ import annotations

import json
from pathlib import Path

from pem.benchmarks import int8_accuracy, int8_speed


def test_int8_speed_records_ratio_and_island_share(tmp_path: Path) -> None:
    int8_speed.main(["--preset", "synthetic_panoptic_tiny", "--imgsz", "128x128", "--rounds", "3",
                     "--out", str(tmp_path)])
    record = json.loads((tmp_path / "int8_speed_synthetic_panoptic_tiny_128x128_raw_2threads.json").read_text())
    assert len(record["samples_ms"]["fp32"]) == len(record["samples_ms"]["int8"]) == 3
    assert record["int8_speedup"] == record["median_ms"]["fp32"] / record["median_ms"]["int8"]
    for profile in record["profiles"].values():
        assert 0 < profile["island_ms"] < profile["kernel_ms"] and 0 < profile["island_share"] < 1
        assert abs(sum(profile["by_category_ms"].values()) - profile["kernel_ms"]) < 1e-9
    int8_categories = record["profiles"]["int8"]["by_category_ms"]
    assert int8_categories["int8"] > 0 and int8_categories["conversion"] > 0
    assert record["profiles"]["fp32"]["by_category_ms"]["int8"] == 0
    ceilings = record["speedup_ceilings"]
    assert 0 < ceilings["no_conversion_ops"] < ceilings["only_islands_and_int8_kernels"]
    assert 0.5 < record["int8_mac_share"] < 1 and record["environment"]["cpu"]


def test_int8_accuracy_guard_on_disjoint_sets(tmp_path: Path) -> None:
    code = int8_accuracy.main(["--calibration", "4", "--search", "3", "--eval", "3", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "int8_accuracy_synthetic_panoptic_tiny.json").read_text())
    assert code == (0 if record["passed"] else 1)
    assert set(record["scores"]) == {"fp32", "fp16", "int8"}
    assert record["int8_pq_drop"] == record["scores"]["fp32"]["PQ"] - record["scores"]["int8"]["PQ"]
    assert record["search"]["search_images"] == 3 and record["images"]["evaluation"] == 3
