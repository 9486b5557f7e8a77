"""pem.training: point sampling and the Hungarian matcher (hand cases, brute force, batch-order invariance)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pem.training import (
    HungarianMatcher,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
    image_generator,
    point_sample,
    sample_uncertainty_points,
    uncertainty_points,
)


def random_case(batch: int, queries: int, counts: list[int], num_classes: int = 4, size: int = 16,
                seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Random outputs (masks at size/4) and targets with ``counts[b]`` masks [N, size, size] bool for image b."""
    generator = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(batch, queries, num_classes + 1, generator=generator) * 2,
        "pred_masks": torch.randn(batch, queries, size // 4, size // 4, generator=generator) * 3,
    }
    targets = [
        {
            "labels": torch.randint(0, num_classes, (count,), generator=generator),
            "masks": torch.rand(count, size, size, generator=generator) > 0.5,
        }
        for count in counts
    ]
    return outputs, targets


# Point sampling (shared by the matcher and the criterion).

def test_point_sample_matches_bilinear_ramp() -> None:
    height, width = 6, 8
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ramp = (3.0 * cols + 5.0 * rows).double()[None, None]
    # Interior points: pixel coordinate u = x * W - 0.5 lies in [0, W - 1], where bilinear is exact on a ramp.
    generator = torch.Generator().manual_seed(0)
    xs = 0.5 / width + torch.rand(20, generator=generator, dtype=torch.float64) * (1 - 1 / width)
    ys = 0.5 / height + torch.rand(20, generator=generator, dtype=torch.float64) * (1 - 1 / height)
    coords = torch.stack([xs, ys], dim=-1)[None]
    expected = 3.0 * (xs * width - 0.5) + 5.0 * (ys * height - 0.5)
    torch.testing.assert_close(point_sample(ramp, coords)[0, 0], expected, rtol=0, atol=1e-12)


def test_point_sample_zero_pads_outside_pixel_centres() -> None:
    ones = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    # x = 0 is half a pixel left of the first centre: half image, half zero padding. (0.5, 0.5) is inside.
    coords = torch.tensor([[[0.0, 0.5], [0.5, 0.5], [0.0, 0.0]]], dtype=torch.float64)
    expected = torch.tensor([0.5, 1.0, 0.25], dtype=torch.float64).expand(1, 2, 3)
    torch.testing.assert_close(point_sample(ones, coords), expected)


def test_uncertainty_points_shapes_range_and_split() -> None:
    logits = torch.randn(3, 1, 5, 7, generator=torch.Generator().manual_seed(1)) * 4
    num_points = 40
    points = sample_uncertainty_points(logits, num_points, 3.0, 0.75, torch.Generator().manual_seed(2))
    num_important = int(0.75 * num_points)
    assert points.candidates.shape == (3, 120, 2)
    assert points.importance.shape == (3, num_important, 2)
    assert points.random.shape == (3, num_points - num_important, 2)
    for part in points:
        assert part.dtype == torch.float32 and part.min() >= 0 and part.max() <= 1
    # The importance points are the candidates of smallest |logit|, most uncertain first.
    candidate_abs = point_sample(logits, points.candidates).squeeze(1).abs()
    chosen_abs = point_sample(logits, points.importance).squeeze(1).abs()
    expected = candidate_abs.sort(dim=1).values[:, :num_important]
    torch.testing.assert_close(chosen_abs, expected)
    # Every importance point is one of that mask's candidates.
    for row in range(3):
        assert (points.importance[row][:, None] == points.candidates[row][None]).all(-1).any(-1).all()
    coords = uncertainty_points(logits, num_points, 3.0, 0.75, torch.Generator().manual_seed(2))
    assert coords.shape == (3, num_points, 2)
    torch.testing.assert_close(coords, torch.cat([points.importance, points.random], dim=1))


def test_uncertainty_points_rejects_bad_ratios() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError):
        uncertainty_points(logits, 8, oversample_ratio=0.5)
    with pytest.raises(ValueError):
        uncertainty_points(logits, 8, importance_sample_ratio=1.5)


# Costs and matching.

def test_costs_match_direct_formulas() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 10, generator=generator) * 2
    labels = torch.rand(2, 10, generator=generator)
    bce = batch_sigmoid_ce_cost(logits, labels)
    dice = batch_dice_cost(logits, labels)
    for q in range(3):
        for n in range(2):
            expected_bce = F.binary_cross_entropy_with_logits(logits[q], labels[n])
            p = logits[q].sigmoid()
            expected_dice = 1 - (2 * (p * labels[n]).sum() + 1) / (p.sum() + labels[n].sum() + 1)
            torch.testing.assert_close(bce[q, n], expected_bce)
            torch.testing.assert_close(dice[q, n], expected_dice)


def test_hand_case_three_queries_two_targets() -> None:
    # Targets at 16x16: target 0 (class 1) is the left half, target 1 (class 0) the right half.
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :, :8] = True
    masks[1, :, 8:] = True
    # Predictions at 4x4: query 0 is the right half and class 0, query 1 the left half and class 1,
    # query 2 is empty and "no object".
    pred_masks = torch.full((1, 3, 4, 4), -10.0)
    pred_masks[0, 0, :, 2:] = 10.0
    pred_masks[0, 1, :, :2] = 10.0
    pred_logits = torch.full((1, 3, 5), -5.0)
    pred_logits[0, 0, 0] = pred_logits[0, 1, 1] = pred_logits[0, 2, 4] = 5.0
    matcher = HungarianMatcher(num_points=256)
    outputs = {"pred_logits": pred_logits, "pred_masks": pred_masks}
    targets = [{"labels": torch.tensor([1, 0]), "masks": masks}]
    [(pred_idx, target_idx)] = matcher(outputs, targets, torch.Generator().manual_seed(0))
    assert pred_idx.dtype == target_idx.dtype == torch.int64
    assert pred_idx.tolist() == [0, 1] and target_idx.tolist() == [1, 0]


def test_class_decides_between_identical_masks() -> None:
    # Queries 0 and 1 have the same mask; only query 1 predicts the target's class 2.
    pred_masks = torch.zeros(1, 2, 4, 4)
    pred_logits = torch.zeros(1, 2, 4)
    pred_logits[0, 1, 2] = 6.0
    targets = [{"labels": torch.tensor([2]), "masks": torch.ones(1, 16, 16)}]
    outputs = {"pred_logits": pred_logits, "pred_masks": pred_masks}
    [(pred_idx, target_idx)] = HungarianMatcher(num_points=64)(outputs, targets)
    assert pred_idx.tolist() == [1] and target_idx.tolist() == [0]


@pytest.mark.parametrize("seed", range(12))
def test_assignment_is_optimal_by_brute_force(seed: int) -> None:
    generator = torch.Generator().manual_seed(100 + seed)
    queries = int(torch.randint(1, 6, (1,), generator=generator))
    count = int(torch.randint(1, 4, (1,), generator=generator))
    outputs, targets = random_case(1, queries, [count], seed=seed)
    matcher = HungarianMatcher(num_points=64)
    [(pred_idx, target_idx)] = matcher(outputs, targets, [torch.Generator().manual_seed(seed)])
    cost = matcher.cost_matrix(outputs["pred_logits"][0], outputs["pred_masks"][0], targets[0]["labels"],
                               targets[0]["masks"], torch.Generator().manual_seed(seed))
    assert len(pred_idx) == len(target_idx) == min(queries, count)
    assert len(set(pred_idx.tolist())) == len(set(target_idx.tolist())) == len(pred_idx)
    assert pred_idx.tolist() == sorted(pred_idx.tolist())
    if count <= queries:
        assignments = [zip(rows, range(count)) for rows in itertools.permutations(range(queries), count)]
    else:
        assignments = [zip(range(queries), cols) for cols in itertools.permutations(range(count), queries)]
    best = min(sum(cost[q, n].item() for q, n in pairs) for pairs in assignments)
    assert math.isclose(cost[pred_idx, target_idx].sum().item(), best, rel_tol=1e-6, abs_tol=1e-6)


def test_empty_targets_give_empty_indices() -> None:
    outputs, targets = random_case(2, 4, [0, 2])
    indices = HungarianMatcher(num_points=32)(outputs, targets)
    assert indices[0][0].shape == indices[0][1].shape == (0,)
    assert indices[0][0].dtype == indices[0][1].dtype == torch.int64
    assert len(indices[1][0]) == 2


def test_matches_follow_batch_permutation_with_image_seeds() -> None:
    outputs, targets = random_case(4, 5, [2, 0, 3, 1], seed=7)
    seeds = [11, 22, 33, 44]
    matcher = HungarianMatcher(num_points=48)
    indices = matcher(outputs, targets, [image_generator(seed, 0, "cpu") for seed in seeds])
    order = [2, 0, 3, 1]
    permuted_outputs = {key: value[order] for key, value in outputs.items()}
    permuted = matcher(permuted_outputs, [targets[i] for i in order],
                       [image_generator(seeds[i], 0, "cpu") for i in order])
    for position, image in enumerate(order):
        assert torch.equal(permuted[position][0], indices[image][0])
        assert torch.equal(permuted[position][1], indices[image][1])


def test_generator_count_must_match_batch() -> None:
    outputs, targets = random_case(2, 3, [1, 1])
    with pytest.raises(ValueError):
        HungarianMatcher(num_points=8)(outputs, targets, [torch.Generator()])
