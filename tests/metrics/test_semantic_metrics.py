"""mIoU, fwIoU, mACC, pACC against values computed by hand, with ignored pixels and classes absent from the ground
truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pem.metrics import SemanticMetrics

# K = 5 classes, ignore label 255 (3 pixels).
GT = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 255],
        [2, 2, 255, 255],
    ],
    dtype=np.uint8,
)
PRED = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 4],
        [2, 3, 0, 2],
    ],
    dtype=np.int64,
)
# The 9 counted pixels (gt != 255): the ignored ones predict 4, 0, 2 and count nowhere.
# class 0: gt 4 px, predicted 3 px, TP 3 -> IoU = 3 / (4 + 3 - 3) = 3/4, ACC = 3/4
# class 1: gt 3 px, predicted 4 px, TP 3 -> IoU = 3 / (3 + 4 - 3) = 3/4, ACC = 1
# class 2: gt 2 px, predicted 1 px, TP 1 -> IoU = 1 / (2 + 1 - 1) = 1/2, ACC = 1/2
# class 3: no gt, predicted once -> NaN, left out of the means (its pixel is an FN of class 2)
# class 4: neither gt nor a counted prediction -> NaN
# mIoU = (3/4 + 3/4 + 1/2) / 3 = 2/3;  mACC = (3/4 + 1 + 1/2) / 3 = 3/4;  pACC = (3 + 3 + 1) / 9 = 7/9
# fwIoU = (4 * 3/4 + 3 * 3/4 + 2 * 1/2) / 9 = (3 + 9/4 + 1) / 9 = 25/36
EXPECTED = {"mIoU": 2 / 3, "mACC": 3 / 4, "pACC": 7 / 9, "fwIoU": 25 / 36}


def _check(results: dict) -> None:
    for key, value in EXPECTED.items():
        assert results[key] == pytest.approx(value, abs=1e-12), key
    assert results["per_class_iou"][:3] == pytest.approx([3 / 4, 3 / 4, 1 / 2])
    assert results["per_class_acc"][:3] == pytest.approx([3 / 4, 1.0, 1 / 2])
    assert all(math.isnan(v) for v in results["per_class_iou"][3:] + results["per_class_acc"][3:])


def test_hand_computed() -> None:
    metric = SemanticMetrics(num_classes=5)
    metric.update(PRED, GT)
    _check(metric.compute())
    expected_confusion = np.zeros((5, 5), dtype=np.int64)
    for gt_class, pred_class, count in [(0, 0, 3), (0, 1, 1), (1, 1, 3), (2, 2, 1), (2, 3, 1)]:
        expected_confusion[gt_class, pred_class] = count
    np.testing.assert_array_equal(metric.confusion_matrix, expected_confusion)


def test_streaming_rows_equals_whole_image() -> None:
    metric = SemanticMetrics(num_classes=5, ignore_label=255)
    for row in range(GT.shape[0]):
        metric.update(PRED[row : row + 1], GT[row : row + 1])
    _check(metric.compute())
    metric.reset()
    assert math.isnan(metric.compute()["mIoU"])


def test_errors() -> None:
    metric = SemanticMetrics(num_classes=5)
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 5\), got \[5\]"):
        metric.update(np.where(PRED == 4, 5, PRED), GT)
    with pytest.raises(ValueError, match=r"pred labels .* got \[-1\]"):
        metric.update(np.where(PRED == 4, -1, PRED), GT)
    with pytest.raises(ValueError, match=r"gt \(other than ignore_label 255\) labels .* got \[7\]"):
        metric.update(PRED, np.where(GT == 2, 7, GT))
    with pytest.raises(ValueError, match=r"pred shape \(3, 3\) and gt shape \(3, 4\) differ"):
        metric.update(PRED[:, :3], GT)
    with pytest.raises(ValueError, match="integer"):
        metric.update(PRED.astype(np.float32), GT)
    with pytest.raises(ValueError, match="ignore_label 3"):
        SemanticMetrics(num_classes=5, ignore_label=3)
    assert not metric.confusion_matrix.any()


def test_void_predictions_count_as_misses() -> None:
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 255, 1, 1]])
    metrics = SemanticMetrics(2, void_prediction=255)
    metrics.update(pred, gt)
    result = metrics.compute()
    # class 0: tp 1, gt 2, pred 1 -> IoU 1/2; class 1: IoU 1 -> mIoU 3/4; pixel accuracy 3/4
    assert result["per_class_iou"] == [0.5, 1.0]
    assert result["mIoU"] == 0.75 and result["pACC"] == 0.75
    with pytest.raises(ValueError):
        SemanticMetrics(2).update(pred, gt)
