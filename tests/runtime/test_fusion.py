"""Tests of pem.runtime.fusion: hand-built cases with exact ids, and a loop reference of the official algorithm."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pem.runtime.fusion import (
    Segment,
    instance_inference,
    panoptic_inference,
    panoptic_pixel_stage,
    panoptic_segments,
    query_scores,
    semantic_inference,
)

ON, OFF = 10.0, -10.0


def class_logits(labels: list[int], num_classes: int, strength: float | list[float] = 10.0) -> np.ndarray:
    """[Q, K+1] logits, ``strength`` at each query's label and 0 elsewhere (label K is void)."""
    logits = np.zeros((len(labels), num_classes + 1))
    logits[np.arange(len(labels)), labels] = strength
    return logits


def confident_score(num_classes: int, strength: float = 10.0) -> float:
    return 1.0 / (1.0 + num_classes * math.exp(-strength))


def ref_sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def ref_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_panoptic(
    mask_cls: np.ndarray,
    mask_pred: np.ndarray,
    thing_ids: set[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[np.ndarray, list[dict]]:
    """The official Mask2Former panoptic inference, written as a loop over the kept queries."""
    num_classes = mask_cls.shape[-1] - 1
    probs = ref_softmax(mask_cls)
    scores, labels = probs.max(-1), probs.argmax(-1)
    mask_pred = ref_sigmoid(mask_pred)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
    cur_prob_masks = cur_scores[:, None, None] * cur_masks
    panoptic_seg = np.zeros(mask_pred.shape[1:], dtype=np.int32)
    segments_info: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    cur_mask_ids = cur_prob_masks.argmax(0)
    current_segment_id = 0
    stuff_memory_list: dict[int, int] = {}
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k])
        isthing = pred_class in thing_ids
        mask_area = int((cur_mask_ids == k).sum())
        original_area = int((cur_masks[k] >= 0.5).sum())
        mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and mask.sum() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if not isthing:
                if pred_class in stuff_memory_list:
                    panoptic_seg[mask] = stuff_memory_list[pred_class]
                    continue
                stuff_memory_list[pred_class] = current_segment_id + 1
            current_segment_id += 1
            panoptic_seg[mask] = current_segment_id
            segments_info.append(
                {"id": current_segment_id, "isthing": isthing, "category_id": pred_class, "score": float(cur_scores[k])}
            )
    return panoptic_seg, segments_info


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, set[int], float, float]:
    num_queries, num_classes = int(rng.integers(1, 13)), int(rng.integers(2, 7))
    height, width = int(rng.integers(1, 21)), int(rng.integers(1, 21))
    dtype = np.float32 if rng.random() < 0.5 else np.float64
    labels = rng.integers(0, num_classes + 1, num_queries)
    cls = rng.normal(size=(num_queries, num_classes + 1))
    cls[np.arange(num_queries), labels] += rng.uniform(0.0, 9.0, num_queries)
    masks = rng.integers(-3, 4, size=(num_queries, height, width)) * rng.choice([0.5, 2.0, 1e-8])
    masks[rng.random(masks.shape) < 0.1] = 0.0
    for _ in range(int(rng.integers(0, 3))):
        src, dst = rng.integers(0, num_queries, 2)
        cls[dst] = cls[src]
        if rng.random() < 0.5:
            masks[dst] = masks[src]
    thing_ids = {int(c) for c in np.flatnonzero(rng.random(num_classes) < 0.4)}
    object_mask_threshold = float(rng.choice([0.5, 0.8, 0.9]))
    overlap_threshold = float(rng.choice([0.5, 0.8, 1.0]))
    return cls.astype(dtype), masks.astype(dtype), thing_ids, object_mask_threshold, overlap_threshold


def test_two_things_of_one_class_get_two_ids() -> None:
    masks = np.array([[[ON, ON, OFF, OFF]], [[OFF, OFF, ON, ON]]])
    out = panoptic_inference(class_logits([0, 0], 3), masks, thing_ids={0})
    np.testing.assert_array_equal(out.panoptic, [[1, 1, 2, 2]])
    assert out.panoptic.dtype == np.int32
    score = pytest.approx(confident_score(3), rel=1e-12)
    assert out.segments == [Segment(1, 0, True, 2, score), Segment(2, 0, True, 2, score)]


def test_stuff_queries_of_one_class_merge() -> None:
    masks = np.array([[[ON, ON, OFF, OFF, OFF]], [[OFF, OFF, ON, OFF, OFF]], [[OFF, OFF, OFF, ON, ON]]])
    out = panoptic_inference(class_logits([1, 0, 1], 3, [10.0, 9.0, 8.0]), masks, thing_ids={0})
    np.testing.assert_array_equal(out.panoptic, [[1, 1, 2, 1, 1]])
    assert out.segments == [
        Segment(1, 1, False, 4, pytest.approx(confident_score(3, 10.0), rel=1e-12)),
        Segment(2, 0, True, 1, pytest.approx(confident_score(3, 9.0), rel=1e-12)),
    ]


@pytest.mark.parametrize(
    ("mask_area", "covered", "kept"),
    [(49, 10, False), (50, 10, True), (51, 10, True), (20, 5, False)],
    ids=["39/49 below", "40/50 exactly 0.8", "41/51 above", "15/20 below"],
)
def test_overlap_rule(mask_area: int, covered: int, kept: bool) -> None:
    width = mask_area + 3
    occluder = np.full((1, width), OFF)
    occluder[0, :covered] = ON
    occluded = np.full((1, width), OFF)
    occluded[0, :mask_area] = ON
    out = panoptic_inference(class_logits([0, 1], 3, [10.0, 8.0]), np.stack([occluder, occluded]), thing_ids={0})
    expected = np.zeros((1, width), dtype=np.int32)
    expected[0, :covered] = 1
    expected[0, covered:mask_area] = 2 if kept else 0
    np.testing.assert_array_equal(out.panoptic, expected)
    assert [s.id for s in out.segments] == ([1, 2] if kept else [1])
    assert out.segments[0].area == covered


def test_low_score_and_void_queries_are_not_kept() -> None:
    masks = np.array([[[ON, OFF, OFF]], [[OFF, ON, OFF]], [[OFF, OFF, ON]]])
    cls = class_logits([0, 1, 3], 3, [10.0, 1.0, 10.0])
    scores, labels = query_scores(cls)
    assert scores[1] < 0.8
    assert labels[2] == 3
    out = panoptic_inference(cls, masks, thing_ids={0, 1})
    np.testing.assert_array_equal(out.panoptic, [[1, 0, 0]])
    assert [s.category_id for s in out.segments] == [0]


def test_object_threshold_is_strict_and_compared_in_score_dtype() -> None:
    masks = np.array([[[ON]]])
    cls = class_logits([0], 2, 2.0)
    score = float(query_scores(cls)[0][0])
    assert panoptic_inference(cls, masks, {0}, object_mask_threshold=score).segments == []
    assert len(panoptic_inference(cls, masks, {0}, object_mask_threshold=np.nextafter(score, 0.0)).segments) == 1
    cls32 = cls.astype(np.float32)
    score32 = query_scores(cls32)[0][0]
    below = np.nextafter(float(score32), 0.0)
    assert np.float32(below) == score32
    assert panoptic_inference(cls32, masks.astype(np.float32), {0}, object_mask_threshold=below).segments == []


def test_pixels_off_the_winning_mask_are_void() -> None:
    masks = np.array([[[ON, OFF, -0.5, 0.0]]])
    out = panoptic_inference(class_logits([0], 3), masks, thing_ids={0})
    np.testing.assert_array_equal(out.panoptic, [[1, 0, 0, 1]])
    assert out.segments[0].area == 2
    scores, _ = query_scores(class_logits([0], 3))
    stage = panoptic_pixel_stage(scores, np.array([True]), masks)
    np.testing.assert_array_equal(stage.winner, [[0, -1, -1, 0]])
    assert (stage.winner_area.tolist(), stage.mask_area.tolist(), stage.visible_area.tolist()) == ([4], [2], [2])


def test_nothing_kept_gives_void_map() -> None:
    masks = np.full((2, 3, 4), ON)
    out = panoptic_inference(class_logits([3, 0], 3, [10.0, 0.5]), masks, thing_ids={0})
    np.testing.assert_array_equal(out.panoptic, np.zeros((3, 4)))
    assert out.panoptic.dtype == np.int32
    assert out.segments == []
    stage = panoptic_pixel_stage(np.array([0.9, 0.9]), np.array([False, False]), masks)
    np.testing.assert_array_equal(stage.winner, np.full((3, 4), -1))
    for counts in (stage.winner_area, stage.mask_area, stage.visible_area):
        np.testing.assert_array_equal(counts, [0, 0])
        assert counts.dtype == np.int64


def test_pixel_stage_counts_and_segment_lut() -> None:
    scores = np.array([0.9, 0.95, 0.99, 0.85])
    keep = np.array([True, True, False, True])
    masks = np.array(
        [
            [[ON, ON, ON, OFF]],
            [[OFF, ON, OFF, OFF]],
            [[ON, ON, ON, ON]],
            [[OFF, OFF, OFF, OFF]],
        ]
    )
    stage = panoptic_pixel_stage(scores, keep, masks)
    np.testing.assert_array_equal(stage.winner, [[0, 1, 0, -1]])
    assert stage.winner.dtype == np.int32
    np.testing.assert_array_equal(stage.winner_area, [2, 2, 0, 0])
    np.testing.assert_array_equal(stage.mask_area, [3, 1, 0, 0])
    np.testing.assert_array_equal(stage.visible_area, [2, 1, 0, 0])
    labels = np.array([2, 1, 0, 1])
    areas = (stage.winner_area, stage.mask_area, stage.visible_area)
    lut, segments = panoptic_segments(scores, labels, keep, *areas, thing_ids=[1], overlap_threshold=0.5)
    np.testing.assert_array_equal(lut, [1, 2, 0, 0, 0])
    assert lut.dtype == np.int32
    assert segments == [Segment(1, 2, False, 2, 0.9), Segment(2, 1, True, 1, 0.95)]
    np.testing.assert_array_equal(lut[stage.winner], [[1, 2, 1, 0]])


def test_semantic_inference_by_hand() -> None:
    ln2, ln3 = math.log(2.0), math.log(3.0)
    cls = np.array([[ln2, 0.0, 0.0], [0.0, ln3, 0.0]])
    masks = np.array([[[0.0, ln3]], [[-ln3, 0.0]]])
    expected = np.array([[[0.3, 0.475]], [[0.275, 0.4875]]])
    np.testing.assert_allclose(semantic_inference(cls, masks), expected, rtol=1e-12)
    out32 = semantic_inference(cls.astype(np.float32), masks.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_raise_no_warnings(dtype: type) -> None:
    cls = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]], dtype=dtype)
    masks = np.array([[[1000.0, -1000.0]], [[-1000.0, 1000.0]]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        semantic = semantic_inference(cls, masks)
        panoptic = panoptic_inference(cls, masks, thing_ids={0})
        instances = instance_inference(cls, masks)
    assert semantic.dtype == dtype
    np.testing.assert_array_equal(semantic, [[[1.0, 0.0]], [[0.0, 0.0]]])
    np.testing.assert_array_equal(panoptic.panoptic, [[1, 0]])
    assert instances.scores.dtype == dtype
    assert np.isfinite(instances.scores).all()


def test_instance_inference_by_hand() -> None:
    ln = np.log
    cls = ln(np.array([[6.0, 1.0, 1.0, 2.0], [1.0, 7.0, 1.0, 1.0], [2.0, 2.0, 5.0, 1.0]]))
    ln3 = math.log(3.0)
    masks = np.array([[[ln3, -ln3, 0.0]], [[0.0, 0.0, 0.0]], [[ln3, 0.0, ln3]]])
    out = instance_inference(cls, masks, top_k=4)
    np.testing.assert_array_equal(out.query_indices, [1, 0, 2, 2])
    np.testing.assert_array_equal(out.labels, [1, 0, 2, 0])
    assert out.labels.dtype == np.int64
    assert out.query_indices.dtype == np.int64
    np.testing.assert_array_equal(out.masks, [[[0, 0, 0]], [[1, 0, 0]], [[1, 0, 1]], [[1, 0, 1]]])
    assert out.masks.dtype == bool
    expected = [0.7 * 0.0, 0.6 * 0.75 / (1 + 1e-6), 0.5 * 1.5 / (2 + 1e-6), 0.2 * 1.5 / (2 + 1e-6)]
    np.testing.assert_allclose(out.scores, expected, rtol=1e-12)

    things = instance_inference(cls, masks, thing_ids={0, 2}, top_k=4)
    np.testing.assert_array_equal(things.query_indices, [0, 2, 2])
    np.testing.assert_array_equal(things.labels, [0, 2, 0])
    np.testing.assert_allclose(things.scores, expected[1:], rtol=1e-12)

    everything = instance_inference(cls, masks)
    assert len(everything.scores) == 9
    np.testing.assert_array_equal(everything.labels[:5], [1, 0, 2, 0, 1])


@pytest.mark.parametrize("seed", range(4))
def test_two_stage_equals_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    non_empty = 0
    for _ in range(150):
        cls, masks, thing_ids, object_threshold, overlap_threshold = random_case(rng)
        expected_map, expected_segments = reference_panoptic(cls, masks, thing_ids, object_threshold, overlap_threshold)
        out = panoptic_inference(cls, masks, thing_ids, object_threshold, overlap_threshold)
        np.testing.assert_array_equal(out.panoptic, expected_map)
        assert out.panoptic.dtype == np.int32
        got = [{"id": s.id, "isthing": s.isthing, "category_id": s.category_id, "score": s.score} for s in out.segments]
        assert got == expected_segments
        assert [s.area for s in out.segments] == [int((expected_map == s.id).sum()) for s in out.segments]
        non_empty += bool(expected_segments)
    assert non_empty >= 50


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_pixel_test_is_sigmoid_at_least_half(dtype: type) -> None:
    away_from_zero = np.array([-1.0, -1e-3, -1e-6, 0.0, 1e-30, 1e-6, 1.0], dtype=dtype)
    stage = panoptic_pixel_stage(np.ones(1, dtype=dtype), np.ones(1, dtype=bool), away_from_zero[None, None, :])
    assert stage.mask_area[0] == int((away_from_zero >= 0).sum())
    just_below_zero = np.array([-np.finfo(dtype).eps / 4], dtype=dtype)
    stage = panoptic_pixel_stage(np.ones(1, dtype=dtype), np.ones(1, dtype=bool), just_below_zero[None, None, :])
    assert stage.mask_area[0] == 1
