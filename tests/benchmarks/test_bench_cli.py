"""pem-bench end to end: a --compare run with two backends, --accuracy on synthetic scenes, the output files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pem.benchmarks.cli import main
from pem.data.synthetic import generate_synthetic_dataset

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_panoptic_tiny.pth"


def test_compare_two_backends_with_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scenes = generate_synthetic_dataset(tmp_path / "scenes", 3, (128, 160), seed=21)
    args = ["synthetic_panoptic_tiny", "--weights", str(FIXTURE), "--backend", "torch", "--compare", "onnxruntime",
            "--imgsz", "128x160", "--iters", "10", "--warmup-ms", "0", "--threads", "2", "--accuracy", str(scenes),
            "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "b.json"), "--csv", str(tmp_path / "b.csv"),
            "--plot", str(tmp_path / "b.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "torch fp32 128x160 b1" in out and "onnxruntime fp32 128x160 b1" in out and "PQ" in out
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["command"].startswith("pem-bench synthetic_panoptic_tiny")
    assert report["environment"]["cpu"] and report["environment"]["onnxruntime"]
    assert report["environment"]["model"]["parameters"] == 614_722 and report["environment"]["model"]["gmacs"] > 0
    torch_run, ort_run = report["runs"]
    assert torch_run["backend"] == "torch" and ort_run["backend"] == "onnxruntime"
    for run in report["runs"]:
        assert run["latency"]["count"] == 10
        assert set(run["stages"]) == {"decode", "preprocess", "h2d", "compute", "d2h", "postprocess", "end_to_end"}
        assert 0 <= run["accuracy"]["PQ"] <= 100 and run["peak_host_mib"] > 0
    # the same trained weights through two backends: the same segmentation on these scenes
    assert ort_run["accuracy"]["PQ"] == pytest.approx(torch_run["accuracy"]["PQ"], abs=0.5)
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert len(rows) == 14 and {r["stage"] for r in rows} >= {"compute", "end_to_end"}
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batch_of_two_on_both_backends(tmp_path: Path) -> None:
    args = ["synthetic_panoptic_tiny", "--weights", str(FIXTURE), "--backend", "onnxruntime", "--compare", "torch",
            "--imgsz", "96x128", "--batch", "2", "--iters", "10", "--warmup-ms", "0", "--cache", str(tmp_path / "c"),
            "--json", str(tmp_path / "b.json")]
    assert main(args) == 0
    runs = json.loads((tmp_path / "b.json").read_text())["runs"]
    for run in runs:
        assert run["shape"]["batch"] == 2
        assert run["throughput_qps"] == pytest.approx(2000.0 / run["latency"]["mean"])


def test_unavailable_configurations_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synthetic_panoptic_tiny", "--backend", "tensorrt", "--iters", "1"]) == 2
    assert "tensorrt" in capsys.readouterr().err
    assert main(["synthetic_panoptic_tiny", "--backend", "torch", "--precision", "fp16", "--iters", "1"]) == 2
    assert "CUDA" in capsys.readouterr().err
    assert main(["nope", "--backend", "torch", "--iters", "1"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_int8_and_fp16_derived_from_an_fp32_graph(tiny_onnx, synthetic_dataset, tmp_path: Path,  # noqa: ANN001
                                                  capsys: pytest.CaptureFixture) -> None:
    calibration, scenes = synthetic_dataset(6, (128, 128), seed=31), synthetic_dataset(3, (128, 128), seed=32)
    source = tiny_onnx("panoptic", (128, 128))
    args = [str(source), "--imgsz", "128x128", "--iters", "10", "--warmup-ms", "0",
            "--compare", "onnxruntime:fp16", "onnxruntime:int8", "--calib-data", str(calibration),
            "--accuracy", str(scenes), "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "b.json")]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "b.json").read_text())
    assert [run["precision"] for run in report["runs"]] == ["fp32", "fp16", "int8"]
    names = sorted(p.name for p in (tmp_path / "cache").glob("*.onnx"))
    assert len(names) == 2 and names[0] == f"{source.stem}_fp16.onnx"
    assert names[1].startswith(f"{source.stem}_int8_")  # tagged with its calibration images
    fp32, fp16, int8 = (run["accuracy"]["PQ"] for run in report["runs"])
    assert fp16 == pytest.approx(fp32, abs=1.0) and int8 == pytest.approx(fp32, abs=5.0)
    assert main([*args[:-2], "--accuracy", str(calibration)]) == 2
    assert "must be disjoint" in capsys.readouterr().err
    assert main([str(tiny_onnx("panoptic", (128, 128))), "--precision", "int8", "--iters", "1",
                 "--cache", str(tmp_path / "other")]) == 2
    assert "needs --calib-data" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_reach_the_onnxruntime_session(tiny_onnx, tmp_path: Path, threads: int) -> None:
    from pem.benchmarks.cli import RunSpec, build_parser, open_predictor

    graph = tiny_onnx("panoptic", (128, 128))
    args = build_parser().parse_args([str(graph), "--imgsz", "128x128", "--threads", str(threads)])
    with open_predictor(str(graph), RunSpec("onnxruntime", "fp32"), args, tmp_path) as predictor:
        assert predictor.backend._session.get_session_options().intra_op_num_threads == threads
