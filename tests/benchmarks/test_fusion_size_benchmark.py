"""The fusion-size benchmark in a reduced run: the session's tiny exports, two frame sizes, one scene."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pem.benchmarks.fusion_size import MODES, frame, measure


def test_reduced_run_measures_every_mode(tiny_onnx: Callable[..., Path], tmp_path: Path) -> None:
    paths = {"raw": tiny_onnx("raw"), "original": tiny_onnx("panoptic"),
             "input": tiny_onnx("panoptic", (128, 128), True, "uint8_nhwc", "input"),
             "mask": tiny_onnx("semantic", (128, 128), False, "uint8_nhwc", "mask")}  # shared with test_fusion_size
    sizes = [(128, 128), (256, 320)]
    result = measure(paths, sizes, (128, 128), threads=1, iters=1, huge=None, scales=(2,), scenes=1, work=tmp_path,
                     memory_sizes=sizes[-1:])
    assert result["timing"]["raw_graph_median_ms"] > 0
    rows = result["timing"]["modes"]
    assert set(rows) == set(MODES) and all(rows[m][f"{h}x{w}"]["median_ms"] > 0 for m in MODES for h, w in sizes)
    # the dynamic 'input' graph is fed 256x256, the static 'original' one 128x128: close, not identical; the mask
    # graph is a semantic head (no void label)
    assert 0.5 < rows["input"]["128x128"]["label_agreement_with_original"] <= 1.0
    assert 0.0 < rows["mask"]["128x128"]["label_agreement_with_original"] < 1.0
    for mode in MODES:
        row = result["memory"][mode]["256x320"]
        assert row["torch_imported"] is False and row["refused"] is None and 50 < row["rss_mb"] < 4096
    scores = result["accuracy"]["2x (512x512)"]
    assert scores["original"]["PQ"] > 30 and scores["input"]["images"] == 1
    assert scores["input"]["PQ_loss_vs_original"] == pytest.approx(scores["original"]["PQ"] - scores["input"]["PQ"])
    assert 0.5 < scores["mask"]["matched_agreement_with_original"] <= 1.0
    int8 = result["int8_in_mask_mode"]
    assert set(int8["median_ms"]) == {"raw_fp32", "raw_int8", "mask_fp32", "mask_int8"}
    assert int8["end_to_end_over_raw_speedup"] == pytest.approx(
        int8["mask_end_to_end_int8_speedup"] / int8["raw_int8_speedup"])
    figures = result["acceptance"]
    assert figures["input_large_over_small"] == pytest.approx(
        rows["input"]["256x320"]["median_ms"] / rows["input"]["128x128"]["median_ms"])
    assert set(figures["met"]) >= {"large_over_small_at_most_2.0", "input_pq_loss_at_most_1.0",
                                  "mask_int8_end_to_end_at_least_0.9_of_raw"}


def test_frames_are_deterministic_and_cheap() -> None:
    image = frame((3, 5))
    assert image.shape == (3, 5, 3) and image.dtype.name == "uint8"
    assert image[0, 0].tolist() == [0, 0, 0] and image[-1, -1, :2].tolist() == [255, 255]
    assert (frame((3, 5)) == image).all()
