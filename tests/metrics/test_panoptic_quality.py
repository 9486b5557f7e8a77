"""PQ against values computed by hand on a drawn 6 x 8 image, its error cases, and the pem-eval-panoptic CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pem.metrics import PanopticQuality, evaluate_panoptic_folders
from pem.metrics.eval_panoptic_cli import main
from pem.runtime.coco_panoptic import write_panoptic_png

# Categories: person (1), car (2) and bicycle (6) are things; sky (3), road (4) and grass (5) are stuff.
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0},
    {"id": 4, "name": "road", "isthing": 0},
    {"id": 5, "name": "grass", "isthing": 0},
    {"id": 6, "name": "bicycle", "isthing": 1},
]

# Ground truth: 1 sky (16 px), 2 person (8 px), 3 car crowd (8 px), 4 road (8 px), 0 void (8 px).
GT_IDS = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
        [2, 2, 2, 2, 3, 3, 3, 3],
        [2, 2, 2, 2, 3, 3, 3, 3],
        [4, 4, 4, 4, 0, 0, 0, 0],
        [4, 4, 4, 4, 0, 0, 0, 0],
    ]
)
GT_SEGMENTS = [
    {"id": 1, "category_id": 3, "iscrowd": 0},
    {"id": 2, "category_id": 1, "iscrowd": 0},
    {"id": 3, "category_id": 2, "iscrowd": 1},
    {"id": 4, "category_id": 4, "iscrowd": 0},
]

# Prediction, segment by segment:
# 10 sky, 12 px inside gt sky: IoU = 12 / (12 + 16 - 12) = 3/4 -> TP (sky).
# 11 person, 6 px on gt person + 4 px on void (row 4): IoU = 6 / (10 + 8 - 6 - 4) = 3/4 -> TP (person).
#    Without removing the void pixels from the union it would be 6 / 12 = 1/2, not a match.
# 12 grass on the whole gt road: wrong category -> FP (grass) and FN (road).
# 13 car, 6 px inside the car crowd region: 6/6 on crowd of its category -> ignored.
# 14 person, 2 px inside the car crowd region: crowd of another category -> FP (person).
# 15 car, 3 px void + 2 px gt sky: 3/5 > 1/2 on void -> ignored.
# 16 road, 1 px void + 1 px gt sky: 1/2 is not > 1/2 -> FP (road).
PRED_IDS = np.array(
    [
        [10, 10, 10, 10, 10, 10, 0, 16],
        [10, 10, 10, 10, 10, 10, 15, 15],
        [0, 11, 11, 11, 13, 13, 13, 14],
        [0, 11, 11, 11, 13, 13, 13, 14],
        [12, 12, 12, 12, 11, 11, 11, 11],
        [12, 12, 12, 12, 16, 15, 15, 15],
    ]
)
PRED_SEGMENTS = [
    {"id": 10, "category_id": 3},
    {"id": 11, "category_id": 1},
    {"id": 12, "category_id": 5},
    {"id": 13, "category_id": 2},
    {"id": 14, "category_id": 1},
    {"id": 15, "category_id": 2},
    {"id": 16, "category_id": 4},
]

# Per category (PQ = IoU_sum / (TP + FP/2 + FN/2), SQ = IoU_sum / TP, RQ = TP / (TP + FP/2 + FN/2)):
# person: TP 1 (IoU 3/4), FP 1         -> PQ = (3/4) / (3/2) = 1/2, SQ = 3/4, RQ = 1 / (3/2) = 2/3
# car:    nothing counted (crowd, ignored predictions) -> left out of the averages
# sky:    TP 1 (IoU 3/4)               -> PQ = 3/4, SQ = 3/4, RQ = 1
# road:   FP 1, FN 1                   -> PQ = SQ = RQ = 0
# grass:  FP 1                         -> PQ = SQ = RQ = 0
# bicycle: never seen                  -> left out
# Things (person):           n = 1, PQ = 1/2, SQ = 3/4, RQ = 2/3
# Stuff (sky, road, grass):  n = 3, PQ = (3/4) / 3 = 1/4, SQ = (3/4) / 3 = 1/4, RQ = 1/3
# All:                       n = 4, PQ = (1/2 + 3/4) / 4 = 5/16, SQ = (3/4 + 3/4) / 4 = 3/8, RQ = (2/3 + 1) / 4 = 5/12
EXPECTED_GROUPS = {
    "All": {"pq": 5 / 16, "sq": 3 / 8, "rq": 5 / 12, "n": 4},
    "Things": {"pq": 1 / 2, "sq": 3 / 4, "rq": 2 / 3, "n": 1},
    "Stuff": {"pq": 1 / 4, "sq": 1 / 4, "rq": 1 / 3, "n": 3},
}
EXPECTED_COUNTS = {1: (1, 1, 0), 2: (0, 0, 0), 3: (1, 0, 0), 4: (0, 1, 1), 5: (0, 1, 0), 6: (0, 0, 0)}


def _assert_groups(results: dict[str, Any]) -> None:
    for group, expected in EXPECTED_GROUPS.items():
        assert results[group]["n"] == expected["n"], group
        for key in ("pq", "sq", "rq"):
            assert results[group][key] == pytest.approx(expected[key], abs=1e-12), (group, key)


def test_hand_computed_image() -> None:
    metric = PanopticQuality(CATEGORIES)
    metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS, PRED_SEGMENTS)
    results = metric.compute()
    _assert_groups(results)
    per_class = results["per_class"]
    assert {c: (v["tp"], v["fp"], v["fn"]) for c, v in per_class.items()} == EXPECTED_COUNTS
    assert per_class[1]["pq"] == pytest.approx(1 / 2)
    assert per_class[1]["sq"] == pytest.approx(3 / 4)
    assert per_class[1]["rq"] == pytest.approx(2 / 3)
    assert per_class[3] == pytest.approx({"pq": 3 / 4, "sq": 3 / 4, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0})
    assert per_class[2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}


def test_streaming_accumulates_counts() -> None:
    metric = PanopticQuality({c["id"]: bool(c["isthing"]) for c in CATEGORIES})
    metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS, PRED_SEGMENTS, image_id=1)
    metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS, PRED_SEGMENTS, image_id=2)
    results = metric.compute()
    # Twice the counts and IoU sums: every ratio is unchanged.
    _assert_groups(results)
    assert {c: (v["tp"], v["fp"], v["fn"]) for c, v in results["per_class"].items()} == {
        c: (2 * tp, 2 * fp, 2 * fn) for c, (tp, fp, fn) in EXPECTED_COUNTS.items()
    }
    metric.reset()
    assert metric.compute()["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_unlisted_ground_truth_id_is_not_void() -> None:
    # Ground-truth id 9 has no segment entry: as in panopticapi it is not void, so it stays in the union.
    # Prediction 1 covers segment 5 (2 px) and one px of id 9: IoU = 2 / (3 + 2 - 2) = 2/3.
    metric = PanopticQuality({1: True})
    gt_ids, pred_ids = np.array([[5, 5, 9, 9]]), np.array([[1, 1, 1, 0]])
    metric.update(gt_ids, [{"id": 5, "category_id": 1}], pred_ids, [{"id": 1, "category_id": 1}])
    assert metric.compute()["per_class"][1] == pytest.approx(
        {"pq": 2 / 3, "sq": 2 / 3, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    )


def test_iou_of_exactly_half_is_not_a_match() -> None:
    # IoU = 2 / (2 + 4 - 2) = 1/2, not > 1/2: an FN for the ground truth and an FP for the prediction.
    metric = PanopticQuality({1: True})
    gt_ids, pred_ids = np.array([[5, 5, 5, 5]]), np.array([[1, 1, 0, 0]])
    metric.update(gt_ids, [{"id": 5, "category_id": 1}], pred_ids, [{"id": 1, "category_id": 1}])
    assert metric.compute()["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}


def test_prediction_errors() -> None:
    metric = PanopticQuality(CATEGORIES)
    with pytest.raises(ValueError, match=r"segment ids \[16\] that pred_segments does not list"):
        metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS, PRED_SEGMENTS[:-1], image_id=7)
    with pytest.raises(ValueError, match=r"image_id 7.*list segment ids \[99\] that pred_ids does not hold"):
        metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS, [*PRED_SEGMENTS, {"id": 99, "category_id": 1}], image_id=7)
    unknown = [*PRED_SEGMENTS[:-1], {"id": 16, "category_id": 42}]
    with pytest.raises(ValueError, match=r"unknown category ids .*16: 42"):
        metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS, unknown)
    with pytest.raises(ValueError, match=r"gt_ids shape \(6, 8\) and pred_ids shape \(6, 7\) differ"):
        metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS[:, :7], PRED_SEGMENTS)
    with pytest.raises(ValueError, match="listed twice"):
        metric.update(GT_IDS, GT_SEGMENTS, PRED_IDS, [*PRED_SEGMENTS, PRED_SEGMENTS[0]])
    # Nothing was counted by the failed updates.
    assert metric.compute()["All"]["n"] == 0


def _write_dataset(root: Path) -> dict[str, Path]:
    """Two images (ids 1 and 2, both the drawn image) in COCO-panoptic form; predictions listed in reverse order."""
    paths = {
        "gt_json": root / "gt.json",
        "gt_folder": root / "gt",
        "pred_json": root / "pred.json",
        "pred_folder": root / "pred",
    }
    gt_annotations, pred_annotations = [], []
    for image_id in (1, 2):
        write_panoptic_png(paths["gt_folder"] / f"{image_id:04d}.png", GT_IDS)
        write_panoptic_png(paths["pred_folder"] / f"pred_{image_id}.png", PRED_IDS)
        gt_annotations.append({"image_id": image_id, "file_name": f"{image_id:04d}.png", "segments_info": GT_SEGMENTS})
        pred_annotations.insert(
            0, {"image_id": image_id, "file_name": f"pred_{image_id}.png", "segments_info": PRED_SEGMENTS}
        )
    paths["gt_json"].write_text(json.dumps({"annotations": gt_annotations, "categories": CATEGORIES}))
    paths["pred_json"].write_text(json.dumps({"annotations": pred_annotations}))
    return paths


def _cli_args(paths: dict[str, Path]) -> list[str]:
    return [arg for key, path in paths.items() for arg in (f"--{key.replace('_', '-')}", str(path))]


def test_evaluate_panoptic_folders(tmp_path: Path) -> None:
    paths = _write_dataset(tmp_path)
    results = evaluate_panoptic_folders(**paths)
    _assert_groups(results)
    assert results["per_class"][1]["tp"] == 2


def test_missing_prediction_names_the_image(tmp_path: Path) -> None:
    paths = _write_dataset(tmp_path)
    pred = json.loads(paths["pred_json"].read_text())
    pred["annotations"] = [a for a in pred["annotations"] if a["image_id"] != 2]
    paths["pred_json"].write_text(json.dumps(pred))
    with pytest.raises(ValueError, match=r"no prediction for image_id 2 \(ground truth 0002.png\)"):
        evaluate_panoptic_folders(**paths)


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _write_dataset(tmp_path)
    out = tmp_path / "results" / "pq.json"
    assert main([*_cli_args(paths), "--json", str(out)]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["Things"] == ["50.0", "75.0", "66.7", "1"]
    assert rows["Stuff"] == ["25.0", "25.0", "33.3", "3"]
    assert rows["All"][1:] == ["37.5", "41.7", "4"]
    written = json.loads(out.read_text())
    _assert_groups(written)
    assert written["per_class"]["3"] == pytest.approx({"pq": 0.75, "sq": 0.75, "rq": 1.0, "tp": 2, "fp": 0, "fn": 0})
    assert sorted(p.name for p in out.parent.iterdir()) == ["pq.json"]


@pytest.mark.parametrize("broken", ["gt_json", "pred_png", "bad_json"])
def test_cli_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str) -> None:
    paths = _write_dataset(tmp_path)
    if broken == "gt_json":
        paths["gt_json"].unlink()
        named = paths["gt_json"]
    elif broken == "pred_png":
        named = paths["pred_folder"] / "pred_2.png"
        named.unlink()
    else:
        paths["pred_json"].write_text("{not json")
        named = paths["pred_json"]
    out = tmp_path / "pq.json"
    assert main([*_cli_args(paths), "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert str(named) in captured.err and "Traceback" not in captured.err
    assert not out.exists()


def test_cli_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--gt-json", "x.json"]) == 2
    assert "required" in capsys.readouterr().err
