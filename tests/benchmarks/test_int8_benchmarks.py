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
    assert record["int8_speedup"] > 0 and record["target_speedup"] == 1.8
    for profile in record["profiles"].values():
        assert 0 < profile["island_ms"] < profile["kernel_ms"] and 0 < profile["island_share"] < 1
        assert abs(sum(profile["by_category_ms"].values()) - profile["kernel_ms"]) < 1e-9
    int8_categories = record["profiles"]["int8"]["by_category_ms"]
    assert int8_categories["int8"] > 0 and int8_categories["conversion"] > 0
    assert record["profiles"]["fp32"]["by_category_ms"]["int8"] == 0
    ceilings = record["speedup_ceilings"]
    assert 0 < ceilings["no_conversion_ops"] < ceilings["only_islands_and_int8_kernels"]
    assert 0.5 < record["int8_mac_share"] < 1 and record["environment"]["cpu"]


def test_profile_categories_and_ceilings_on_a_known_trace() -> None:
    """Two runs of a hand-made ONNX Runtime trace: per-run milliseconds by category, and the ceilings they imply."""
    def node(name: str, op: str, microseconds: float) -> dict[str, object]:
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": microseconds, "args": {"op_name": op}}

    trace = [node("conv_q", "QLinearConv", 6000), node("dq", "DequantizeLinear", 2000),
             node("softmax", "Softmax", 4000), node("gather/PrototypeGather/mul", "Mul", 1000),
             node("deform", "DeformConv", 3000), {"cat": "Session", "name": "model_run", "dur": 99999},
             {"cat": "Node", "name": "conv_q_fence_before", "dur": 5000, "args": {"op_name": "QLinearConv"}}]
    profile = int8_speed._summarize_profile(trace, {"deform"}, runs=2)
    assert profile["by_category_ms"] == {"island": 2.0, "int8": 3.0, "conversion": 1.0, "fp32": 2.0}
    assert profile["kernel_ms"] == 8.0 and profile["island_ms"] == 2.0 and profile["island_share"] == 0.25
    assert list(profile["largest_op_types_ms"]) == ["QLinearConv", "Softmax", "DeformConv", "DequantizeLinear", "Mul"]
    fp32 = {"kernel_ms": 12.0}
    assert int8_speed.speedup_ceilings(fp32, profile) == {"no_conversion_ops": 12.0 / 7.0,
                                                         "only_islands_and_int8_kernels": 12.0 / 5.0}


def test_int8_accuracy_guard_on_disjoint_sets(tmp_path: Path) -> None:
    """A small run of the guard: INT8 keeps accuracy within the 1.0 PQ budget on 8 held-out scenes.

    Searched on only 3 scenes, it keeps one block in FP32, which leaves 79.8% of the multiply-adds in INT8: the
    MAC-share check (>= 80%) fails at this size only, so the run exits 1 (the full run passes all three checks).
    """
    code = int8_accuracy.main(["--calibration", "4", "--search", "3", "--eval", "8", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "int8_accuracy_synthetic_panoptic_tiny.json").read_text())
    scores = record["scores"]
    assert scores["fp32"]["PQ"] >= 45.0
    assert scores["fp32"]["PQ"] - scores["int8"]["PQ"] <= 1.0  # the measured drop within the budget
    assert abs(scores["fp32"]["PQ"] - scores["fp16"]["PQ"]) <= 0.1
    assert record["checks"] == {"fp32_pq_at_least_45": True, "int8_drop_at_most_1": True,
                                "int8_mac_share_at_least_80": False}
    assert record["fp32_blocks"] == ["model.backbone.stem.0"] and 0.79 < record["int8_mac_share"] < 0.80
    assert code == 1 and not record["passed"]
    assert record["search"]["search_images"] == 3 and record["images"]["evaluation"] == 8
