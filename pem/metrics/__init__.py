"""Evaluation metrics in numpy (never torch): panoptic quality as panopticapi defines it, and semantic mIoU as
detectron2's ``SemSegEvaluator`` does. Results are fractions in [0, 1]."""

from __future__ import annotations

from pem.metrics.panoptic_quality import PanopticQuality, evaluate_panoptic_folders
from pem.metrics.semantic import SemanticMetrics

__all__ = ["PanopticQuality", "SemanticMetrics", "evaluate_panoptic_folders"]
