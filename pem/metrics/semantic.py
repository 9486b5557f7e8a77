"""Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC) in numpy, with detectron2's ``SemSegEvaluator``
definition (the one used for Cityscapes and ADE20K in Mask2Former and PEM).

A K x K confusion matrix counts pixels by (ground-truth class, predicted class); pixels whose ground truth is the
ignore label are skipped. Per class c: ``TP`` = diagonal, ``pos_gt`` = row sum (TP + FN), ``pos_pred`` = column
sum (TP + FP), ``IoU_c = TP / (TP + FP + FN)``, ``ACC_c = TP / pos_gt``. A class is valid when it has ground-truth
pixels (``pos_gt > 0``); other classes get NaN and stay out of every mean, even when predicted (their false
positives still lower the IoU of the true classes through those classes' FN). ``mIoU`` and ``mACC`` are the means
over valid classes, ``fwIoU = sum_c IoU_c * pos_gt_c / sum(pos_gt)`` over valid classes, ``pACC = sum(TP) /
sum(pos_gt)``. This is detectron2's current rule (``iou_valid = (pos_gt > 0) & (union > 0)``); older releases
divided the IoU sum by the number of classes with ``pos_gt + pos_pred > 0`` instead. Values are fractions in [0, 1]
(detectron2 reports them times 100); with no valid pixel at all they are NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SemanticMetrics"]


def _check_labels(labels: np.ndarray, name: str, num_classes: int) -> None:
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        values = np.unique(bad)
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes}), got {values[:10].tolist()}"
            + (f" and {values.size - 10} more" if values.size > 10 else "")
        )


class SemanticMetrics:
    """Streaming confusion matrix over K classes; ``ignore_label`` (outside [0, K)) marks unlabelled ground truth."""

    def __init__(self, num_classes: int, ignore_label: int = 255, void_prediction: int | None = None) -> None:
        """``void_prediction``: a prediction value meaning "no class" (e.g. 255 where a panoptic map is void); such
        pixels count as misses of their ground-truth class (in its union, never a hit). None: every prediction
        must be a class."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(f"ignore_label {ignore_label} must lie outside the class range [0, {num_classes})")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.void_prediction = void_prediction
        self._confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self._missed = np.zeros(num_classes, dtype=np.int64)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """int64 [K, K] pixel counts, rows = ground-truth class, columns = predicted class (a copy)."""
        return self._confusion.copy()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._confusion[:] = 0
        self._missed[:] = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image. ``pred``: integer [H, W] in [0, K); ``gt``: integer [H, W] in [0, K) or ``ignore_label``.
        Raises ValueError when the shapes differ or a label is out of range; nothing is counted then."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        for name, labels in (("pred", pred), ("gt", gt)):
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"{name} must be an integer array, got dtype {labels.dtype}")
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {pred.shape} and gt shape {gt.shape} differ")
        voided = pred == self.void_prediction if self.void_prediction is not None else np.zeros(pred.shape, bool)
        _check_labels(pred[~voided], "pred", self.num_classes)
        valid = gt != self.ignore_label
        _check_labels(gt[valid], f"gt (other than ignore_label {self.ignore_label})", self.num_classes)
        k = self.num_classes
        counted = valid & ~voided
        flat = gt[counted].astype(np.int64) * k + pred[counted].astype(np.int64)
        self._confusion += np.bincount(flat, minlength=k * k).reshape(k, k)
        self._missed += np.bincount(gt[valid & voided].astype(np.int64), minlength=k)

    def compute(self) -> dict[str, Any]:
        """``mIoU``, ``fwIoU``, ``mACC``, ``pACC`` (floats in [0, 1]) and ``per_class_iou``, ``per_class_acc``
        (lists of K floats, NaN for classes without ground-truth pixels)."""
        confusion = self._confusion.astype(np.float64)
        tp = np.diag(confusion)
        pos_gt = confusion.sum(axis=1) + self._missed
        pos_pred = confusion.sum(axis=0)
        valid = pos_gt > 0
        iou = np.full(self.num_classes, np.nan)
        acc = np.full(self.num_classes, np.nan)
        iou[valid] = tp[valid] / (pos_gt[valid] + pos_pred[valid] - tp[valid])
        acc[valid] = tp[valid] / pos_gt[valid]
        total = pos_gt.sum()
        if total == 0:
            miou = fwiou = macc = pacc = float("nan")
        else:
            miou = float(iou[valid].mean())
            macc = float(acc[valid].mean())
            fwiou = float(np.sum(iou[valid] * pos_gt[valid]) / total)
            pacc = float(tp.sum() / total)
        return {
            "mIoU": miou,
            "fwIoU": fwiou,
            "mACC": macc,
            "pACC": pacc,
            "per_class_iou": iou.tolist(),
            "per_class_acc": acc.tolist(),
        }
