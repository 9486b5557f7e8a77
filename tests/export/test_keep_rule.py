"""The panoptic keep rule exists once (``pem.runtime.fusion.keep_queries``); the exported panoptic head mirrors it
on the same logits, ties at the threshold included."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pem.export.wrapper import ExportWrapper
from pem.modeling.pem_model import PEM
from pem.runtime.fusion import keep_queries, query_scores

THRESHOLD = 0.5
NUM_CLASSES = 4  # logits carry 5 columns, the last one "no object"
LOW = -1e4  # exp underflows to exactly 0: the softmax of two equal logits is exactly 0.5


def _logits() -> np.ndarray:
    """float32 [1, 7, 5] class logits whose top scores sit on, above and below the threshold."""
    rows = [
        [0.0, 0.0, LOW, LOW, LOW],  # two classes tie: score exactly 0.5 = threshold -> dropped, label 0 (first)
        [LOW, 1e-6, 0.0, LOW, LOW],  # score 0.50000025 > 0.5 -> kept
        [LOW, 0.0, 0.0, 0.0, LOW],  # three classes tie at 1/3 < 0.5 -> dropped, label 1 (first)
        [LOW, LOW, LOW, 0.0, 0.0],  # class 3 ties with "no object" at 0.5: label 3 (first), dropped
        [LOW, LOW, LOW, LOW, 3.0],  # "no object" wins -> dropped whatever its score
        [2.0, LOW, LOW, LOW, LOW],  # a sure class -> kept
        [LOW, LOW, 1.0, LOW, 0.0],  # 0.731 -> kept
    ]
    return np.array([rows], dtype=np.float32)


class _HeadOnly(nn.Module):
    """The wrapper's panoptic head alone, fed class logits and mask logits directly (a 4x4 image, no padding)."""

    def __init__(self, wrapper: ExportWrapper) -> None:
        super().__init__()
        self.wrapper = wrapper

    def forward(self, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.wrapper.panoptic(class_logits, mask_logits, (4, 4), (4, 4), (4, 4))


def test_keep_rule_in_numpy() -> None:
    scores, labels = query_scores(_logits()[0])
    assert scores[0] == np.float32(0.5) and scores[3] == np.float32(0.5) and labels.tolist() == [0, 1, 1, 3, 4, 0, 2]
    assert keep_queries(scores, labels, NUM_CLASSES, THRESHOLD).tolist() == [False, True, False, False, False, True,
                                                                             True]
    # the threshold is rounded to the score dtype: float32(0.8) > 0.8, so a float32 score equal to it is dropped
    score = np.array([0.8], dtype=np.float32)
    assert not keep_queries(score, np.array([0]), NUM_CLASSES, 0.8)[0]
    assert keep_queries(score.astype(np.float64), np.array([0]), NUM_CLASSES, 0.8)[0]


def test_exported_head_keeps_what_the_function_keeps(tiny_model: PEM, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    wrapper = ExportWrapper(tiny_model, "panoptic", object_mask_threshold=THRESHOLD).eval()
    logits = _logits()
    masks = np.full((1, logits.shape[1], 1, 1), 5.0, dtype=np.float32)  # every pixel a mask pixel of every query
    path = tmp_path / "head.onnx"
    torch.onnx.export(_HeadOnly(wrapper).eval(), (torch.from_numpy(logits), torch.from_numpy(masks)), str(path),
                      dynamo=True, opset_version=19, input_names=["class_logits", "mask_logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, labels, winner, winner_area, mask_area, visible_area = (
        o[0] for o in session.run(None, {"class_logits": logits, "mask_logits": masks}))
    expected_scores, expected_labels = query_scores(logits[0])
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(scores, expected_scores)  # exact: the ties stay ties
    expected = keep_queries(expected_scores, expected_labels, NUM_CLASSES, THRESHOLD)
    assert expected.tolist() == [False, True, False, False, False, True, True]
    np.testing.assert_array_equal(mask_area > 0, expected)  # the head counts mask pixels of kept queries only
    np.testing.assert_array_equal(keep_queries(scores, labels, NUM_CLASSES, THRESHOLD), expected)
    assert set(np.unique(winner)) <= set(np.flatnonzero(expected))
    with torch.no_grad():
        eager = wrapper.keep(torch.from_numpy(expected_scores), torch.from_numpy(expected_labels), NUM_CLASSES)
    np.testing.assert_array_equal(eager.numpy(), expected)
