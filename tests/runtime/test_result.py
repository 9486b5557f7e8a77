"""Result: savers (COCO-panoptic, Cityscapes ids, semantic PNG), plot, summary; files read back by pem.metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pem.metrics import evaluate_panoptic_folders
from pem.metrics.eval_panoptic_cli import main as eval_panoptic_main
from pem.runtime import Predictor, Result
from pem.runtime.coco_panoptic import load_panoptic_json, read_panoptic_png
from pem.runtime.fusion import Segment
from pem.runtime.metadata import ArtifactMetadata
from pem.runtime.outputs import cityscapes_ids, segment_boxes, write_label_image
from tests.runtime import graphs


@pytest.fixture()
def result(toy_dir: Path, scene: np.ndarray) -> Result:
    with Predictor(toy_dir / "raw.onnx") as predictor:
        return predictor(scene)


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


def test_coco_panoptic_files_are_read_by_the_metrics(result: Result, tmp_path: Path) -> None:
    annotation = result.save_coco_panoptic(tmp_path / "pred", "000007.jpg")
    assert annotation["image_id"] == 7 and annotation["file_name"] == "000007.png"
    ids = read_panoptic_png(tmp_path / "pred" / "000007.png")
    np.testing.assert_array_equal(ids, result.panoptic)
    data = load_panoptic_json(tmp_path / "pred" / "000007.json")
    info = data["annotations"][0]["segments_info"]
    assert [s["category_id"] for s in info] == [1, 4, 5]  # dataset ids of grass, sky, disk
    assert [s["bbox"] for s in info] == [[0, 0, 80, 30], [0, 30, 40, 30], [40, 30, 40, 30]]
    assert [s["area"] for s in info] == [int((result.panoptic == i).sum()) for i in (1, 2, 3)]
    assert all(s["iscrowd"] == 0 for s in info)
    assert {c["id"] for c in data["categories"]} == {1, 4, 5, 6}
    # the prediction scored against itself as ground truth: PQ 1
    gt = {"annotations": data["annotations"], "categories": data["categories"]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    scores = evaluate_panoptic_folders(tmp_path / "gt.json", tmp_path / "pred", tmp_path / "pred" / "000007.json",
                                       tmp_path / "pred")
    assert scores["All"]["pq"] == pytest.approx(1.0) and scores["All"]["n"] == 3
    assert eval_panoptic_main(["--gt-json", str(tmp_path / "gt.json"), "--gt-folder", str(tmp_path / "pred"),
                               "--pred-json", str(tmp_path / "pred" / "000007.json"),
                               "--pred-folder", str(tmp_path / "pred")]) == 0
    assert no_temporaries(tmp_path)


def test_cityscapes_ids(result: Result, tmp_path: Path) -> None:
    path = result.save_cityscapes(tmp_path, "frame")
    assert path == tmp_path / "frame.png"
    with Image.open(path) as image:
        assert image.mode == "I;16"
        ids = np.asarray(image)
    # stuff: the dataset id; the first disk instance: 5 * 1000 + 0; void (segment borders): 0
    assert {1, 4, 5000} <= set(np.unique(ids).tolist()) <= {0, 1, 4, 5000}
    np.testing.assert_array_equal(ids == 0, result.panoptic == 0)
    meta = result.metadata
    segments = [Segment(1, 2, True, 1, 0.9), Segment(2, 2, True, 1, 0.9), Segment(3, 3, True, 1, 0.9),
                Segment(4, 0, False, 1, 0.9)]
    panoptic = np.array([[0, 1, 2, 3, 4]], dtype=np.int32)
    np.testing.assert_array_equal(cityscapes_ids(result.semantic, panoptic, segments, meta.classes, 255),
                                  [[0, 5000, 5001, 6000, 1]])
    semantic = np.array([[0, 1, 2, 255]])
    np.testing.assert_array_equal(cityscapes_ids(semantic, None, [], meta.classes, 255), [[1, 4, 5, 0]])


def test_label_ids_beyond_16_bits_go_to_tiff(tmp_path: Path) -> None:
    path = write_label_image(tmp_path / "big.png", np.array([[150_000, 3]]))
    assert path.suffix == ".tif"
    with Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image), [[150_000, 3]])


def test_semantic_png(result: Result, tmp_path: Path) -> None:
    result.save_semantic(tmp_path / "sem.png")
    with Image.open(tmp_path / "sem.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), result.semantic)
        assert image.getpalette()[:6] == [70, 140, 60, 150, 200, 240]
    result.save_semantic(tmp_path / "grey.png", palette=False)
    with Image.open(tmp_path / "grey.png") as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), result.semantic)


def test_plot_and_summaries(result: Result) -> None:
    plain = result.plot(legend=False)
    with_legend = result.plot(alpha=0.3)
    assert plain.shape == (60, 80, 3) and plain.dtype == np.uint8
    assert not np.array_equal(plain[:20, :20], with_legend[:20, :20])  # the legend box sits top-left
    np.testing.assert_array_equal(plain[40:, 60:], result.plot(legend=True)[40:, 60:])
    summary = result.summary()
    assert [s["label"] for s in summary] == ["grass", "sky", "disk"] and summary[2]["dataset_id"] == 5
    data = json.loads(result.to_json())
    assert data["height"] == 60 and data["head"] == "raw" and len(data["segments"]) == 3
    assert result.classes_present() == [0, 1, 2]


def test_semantic_only_result(toy_dir: Path, scene: np.ndarray, tmp_path: Path) -> None:
    with Predictor(toy_dir / "semantic.onnx") as predictor:
        result = predictor(scene)
    with pytest.raises(ValueError, match="gives no panoptic output"):
        result.save_coco_panoptic(tmp_path, "x.png")
    plotted = result.plot()
    assert plotted.shape == (60, 80, 3) and plotted.flags.writeable  # callers may draw on it (FPS, boxes)
    assert {s["label"] for s in result.summary()} == {"grass", "sky", "disk"}
    assert result.save_cityscapes(tmp_path, "x").exists()


def test_segment_boxes_and_legend_overflow() -> None:
    panoptic = np.zeros((6, 8), dtype=np.int32)
    panoptic[1:3, 2:5] = 1
    panoptic[5, 7] = 2
    boxes = segment_boxes(panoptic, [Segment(1, 0, True, 6, 1.0), Segment(2, 0, True, 1, 1.0)])
    assert boxes == {1: [2, 1, 3, 2], 2: [7, 5, 1, 1]}
    meta = ArtifactMetadata.from_props(graphs.metadata("raw"), "toy")
    many = [Segment(i + 1, i % 4, False, 1, 1.0) for i in range(4)]
    tiny = Result(np.zeros((20, 200, 3), np.uint8), np.zeros((20, 200), np.int64),
                  np.repeat(np.arange(1, 5, dtype=np.int32), 50)[None].repeat(20, 0), many, meta)
    assert tiny.plot().shape == (20, 200, 3)  # one row fits: "+N more"
