"""pem-predict on toy artifacts: every source kind, both stream policies, the overlay video, and bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pem.runtime import cli
from pem.runtime.coco_panoptic import load_panoptic_json, process_umask, read_panoptic_png
from pem.runtime.predictor import Predictor
from pem.runtime.streams import StreamSource
from tests.runtime.conftest import quadrants
from tests.runtime.test_sources import FakeCapture, opener, write_video


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def frame_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


def test_single_image(toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(quadrants()).save(tmp_path / "street.png")
    out = tmp_path / "out"
    assert cli.main([str(toy_dir / "raw.onnx"), str(tmp_path / "street.png"), "--out", str(out)]) == 0
    ids = read_panoptic_png(out / "panoptic" / "street.png")
    annotations = load_panoptic_json(out / "panoptic.json")["annotations"]
    assert annotations[0]["image_id"] == "street" and len(annotations[0]["segments_info"]) == 3
    assert set(np.unique(ids)) <= {0, 1, 2, 3}
    assert (out / "overlay" / "street.jpg").is_file() and not (out / "semantic").exists()
    record = frame_log(out)[0]
    assert record["name"] == "street" and record["latency_ms"] > 0 and record["age_ms"] >= record["latency_ms"]
    assert summary(out)["processed"] == 1 and summary(out)["status"] == "done"
    assert "1 frame(s) processed" in capsys.readouterr().err
    assert no_temporaries(out)


def test_folder_with_a_corrupt_file(toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(quadrants()).save(folder / f"{i:06d}.png")
    (folder / "000003.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    Image.fromarray(quadrants()[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([quadrants(), np.full((60, 80), 128, np.uint8)])).save(folder / "rgba.png")
    cv2.imwrite(str(folder / "deep.png"), quadrants().astype(np.uint16) * 257)
    out = tmp_path / "out"
    code = cli.main([str(toy_dir / "raw.onnx"), str(folder), "--out", str(out), "--save", "panoptic,semantic"])
    err = capsys.readouterr().err
    assert code == 1  # the others are processed, the failure is reported
    result = summary(out)
    assert result["processed"] == 6 and len(result["failed"]) == 1 and result["converted"] == 3
    assert "000003.jpg" in result["failed"][0]["input"]
    assert "failed: " in err and "000003.jpg" in err and "alpha channel dropped" in err and "16-bit" in err
    assert sorted(p.name for p in (out / "semantic").iterdir()) == [
        "000000.png", "000001.png", "000002.png", "deep.png", "grey.png", "rgba.png"]
    assert [a["image_id"] for a in load_panoptic_json(out / "panoptic.json")["annotations"]][:3] == [0, 1, 2]


def test_glob_with_all_savers(toy_dir: Path, tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.jpg"):
        Image.fromarray(quadrants()).save(tmp_path / name)
    out = tmp_path / "out"
    assert cli.main([str(toy_dir / "raw.onnx"), str(tmp_path / "*.png"), "--out", str(out),
                     "--save", "panoptic,semantic,overlay,cityscapes", "--quiet"]) == 0
    for kind, suffix in (("panoptic", ".png"), ("semantic", ".png"), ("overlay", ".jpg"), ("cityscapes", ".png")):
        assert sorted(p.name for p in (out / kind).iterdir()) == [f"a{suffix}", f"b{suffix}"]


@pytest.mark.parametrize("policy", ["queue", "latest"])
def test_video_with_overlay_video(toy_dir: Path, tmp_path: Path, policy: str) -> None:
    video = write_video(tmp_path / "clip.avi", frames=20, size=(60, 80))
    out = tmp_path / "out"
    code = cli.main([str(toy_dir / "raw.onnx"), str(video), "--out", str(out), "--stream-policy", policy,
                     "--video-out", str(out / "overlay.mp4"), "--save", "none"])
    assert code == 0
    result = summary(out)
    if policy == "queue":
        assert result["processed"] == 20 and result["dropped"] == 0
    else:
        assert result["processed"] + result["dropped"] == 20 and result["processed"] >= 1
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames == result["processed"]
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 80 and capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    capture.release()
    assert (out / "overlay.mp4").stat().st_mode & 0o777 == 0o666 & ~process_umask()  # not mkstemp's 0600
    log = frame_log(out)
    names = [r["name"] for r in log]
    if policy == "queue":
        assert names == [f"clip_{i:06d}" for i in range(20)]
    else:  # the reader may drop any frames before the first one processed; order is kept
        assert names == sorted(names) and set(names) <= {f"clip_{i:06d}" for i in range(20)}
    assert all(r["age_ms"] >= r["latency_ms"] for r in log)
    assert result["age_ms"]["p99"] >= result["latency_ms"]["p50"] and no_temporaries(out)


def test_max_frames_on_one_thread(toy_dir: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", frames=20, size=(60, 80))
    out = tmp_path / "out"
    assert cli.main([str(toy_dir / "semantic.onnx"), str(video), "--out", str(out), "--max-frames", "5",
                     "--save", "semantic", "--threads", "1"]) == 0
    assert summary(out)["processed"] == 5 and len(list((out / "semantic").iterdir())) == 5


def test_interrupt_keeps_what_was_done(toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        Image.fromarray(quadrants()).save(tmp_path / f"{i}.png")
    calls = []
    original = Predictor.__call__

    def interrupted(self: Predictor, image: np.ndarray, bgr: bool = False) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, image, bgr)

    monkeypatch.setattr(Predictor, "__call__", interrupted)
    out = tmp_path / "out"
    code = cli.main([str(toy_dir / "raw.onnx"), str(tmp_path / "*.png"), "--out", str(out),
                     "--video-out", str(out / "v.avi")])
    assert code == 130
    assert summary(out)["status"] == "interrupted" and summary(out)["processed"] == 2
    assert len(load_panoptic_json(out / "panoptic.json")["annotations"]) == 2
    assert (out / "v.avi").is_file() and no_temporaries(out)


def test_lost_stream_is_reported(toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    def fake_source(spec: str, policy: str | None, queue_size: int, reconnects: int) -> StreamSource:
        return StreamSource(spec, "cam", live=True, policy="queue", reconnects=1, backoff_s=0.01,
                            open_capture=opener(FakeCapture(3)))

    monkeypatch.setattr(cli, "open_source", fake_source)
    out = tmp_path / "out"
    assert cli.main([str(toy_dir / "raw.onnx"), "rtsp://cam/1", "--out", str(out), "--save", "none"]) == 1
    result = summary(out)
    assert result["processed"] == 3 and result["status"] == "source lost"
    assert "stream lost, 1 reconnect attempts failed" in capsys.readouterr().err


def test_show_without_a_display(toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    Image.fromarray(quadrants()).save(tmp_path / "a.png")
    assert cli.main([str(toy_dir / "raw.onnx"), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                     "--show"]) == 0
    assert "--show: no display" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["{missing}", "{image}"], "artifact not found"),
    (["{engine}", "{image}"], "m.engine has no manifest"),
    (["{garbage}", "{image}"], "cannot load"),
    (["{plain}", "{image}"], "no PEM metadata"),
    (["{raw}", "{image}", "--preset", "cityscapes_panoptic_r50"], "exported from preset 'toy_panoptic'"),
    (["{raw}", "{tmp}/nothing.png"], "source not found"),
    (["{raw}", "97"], "cannot open camera 97"),
    (["{raw}", "{image}", "--save", "panoptic,boxes"], "unknown kind(s) boxes"),
    (["{semantic}", "{image}", "--save", "panoptic"], "gives semantic output only"),
    (["{raw}", "{image}", "--video-out", "{tmp}/v.mkv"], "must end in .mp4 or .avi"),
    (["{raw}", "{image}", "--providers", "cuda"], "'cuda' is not available"),
    (["{raw}", "{image}", "--queue-size", "0"], "must be at least 1"),
    (["{raw}", "{image}", "--threads", "0"], "must be at least 1"),
    (["{engine}", "{image}", "--threads", "2"], "applies to the onnxruntime backend only, not to tensorrt"),
])
def test_bad_inputs_exit_2(toy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                           message: str) -> None:
    from tests.runtime import graphs

    Image.fromarray(quadrants()).save(tmp_path / "a.png")
    (tmp_path / "m.engine").write_bytes(b"\0")
    (tmp_path / "garbage.onnx").write_bytes(b"not onnx")
    props = graphs.metadata("raw")
    del props["pem.format"]
    graphs.raw_graph(tmp_path / "plain.onnx", props=props)
    paths = {"missing": tmp_path / "missing.onnx", "image": tmp_path / "a.png", "engine": tmp_path / "m.engine",
             "garbage": tmp_path / "garbage.onnx", "plain": tmp_path / "plain.onnx", "raw": toy_dir / "raw.onnx",
             "semantic": toy_dir / "semantic.onnx", "tmp": tmp_path}
    argv = [a.format(**paths) for a in args] + ["--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
