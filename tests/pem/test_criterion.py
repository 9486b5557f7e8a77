"""pem.training.SetCriterion: hand-computed losses, empty targets, deep supervision, seeds and the real tiny model."""
from __future__ import annotations

import math

import pytest
import torch

from pem.builder import build_model
from pem.training import HungarianMatcher, SetCriterion, count_masks, dice_loss, sigmoid_ce_loss

EOS = 0.1


def make_criterion(num_classes: int = 2, num_points: int = 10) -> SetCriterion:
    return SetCriterion(num_classes, HungarianMatcher(num_points=num_points), num_points=num_points)


def random_case(batch: int, queries: int, counts: list[int], num_classes: int = 3, size: int = 16, aux: int = 0,
                seed: int = 0) -> tuple[dict, list[dict[str, torch.Tensor]]]:
    """Random outputs with ``aux`` aux predictions (leaf tensors, so their .grad can be read) and random targets."""
    generator = torch.Generator().manual_seed(seed)

    def prediction() -> dict[str, torch.Tensor]:
        return {
            "pred_logits": (torch.randn(batch, queries, num_classes + 1, generator=generator) * 2).requires_grad_(),
            "pred_masks": (torch.randn(batch, queries, size // 4, size // 4, generator=generator) * 3).requires_grad_(),
        }

    outputs: dict = prediction()
    if aux:
        outputs["aux_outputs"] = [prediction() for _ in range(aux)]
    targets = [
        {
            "labels": torch.randint(0, num_classes, (count,), generator=generator),
            "masks": torch.rand(count, size, size, generator=generator) > 0.5,
        }
        for count in counts
    ]
    return outputs, targets


def subset(outputs: dict, images: list[int]) -> dict:
    """The outputs of ``images`` (all prediction layers), detached."""
    result = {key: outputs[key].detach()[images] for key in ("pred_logits", "pred_masks")}
    result["aux_outputs"] = [{key: aux[key].detach()[images] for key in aux} for aux in outputs.get("aux_outputs", [])]
    return result


# The loss functions on explicit point values.

def test_sigmoid_ce_and_dice_by_hand() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    # BCE(x, t) = log(1 + e^x) - x t; mean over the 2 points of each mask, summed over masks, / num_masks = 4.
    row0 = (math.log(1 + math.exp(2)) - 2 + math.log(1 + math.exp(-1))) / 2
    row1 = (math.log(2) + math.log(1 + math.exp(3)) - 3) / 2
    assert sigmoid_ce_loss(logits, labels, 4.0).item() == pytest.approx((row0 + row1) / 4, rel=1e-6)
    # Dice per mask: 1 - (2 sum(p t) + 1) / (sum p + sum t + 1), p = sigmoid(x).
    p = [[1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))], [0.5, 1 / (1 + math.exp(-3))]]
    dice0 = 1 - (2 * p[0][0] + 1) / (p[0][0] + p[0][1] + 1 + 1)
    dice1 = 1 - (2 * (0.5 * p[1][0] + p[1][1]) + 1) / (p[1][0] + p[1][1] + 1.5 + 1)
    assert dice_loss(logits, labels, 4.0).item() == pytest.approx((dice0 + dice1) / 4, rel=1e-6)


# The criterion against hand computations.

def test_classification_loss_by_hand() -> None:
    # K = 2, two queries, one target of class 1. Both mask logits are 0 everywhere, so the mask costs tie and the
    # class decides: query 0 (p(class 1) high) is matched, query 1 targets "no object" (class 2, weight 0.1).
    q0, q1 = [0.0, 2.0, -1.0], [0.5, 0.0, 1.0]
    outputs = {"pred_logits": torch.tensor([[q0, q1]]), "pred_masks": torch.zeros(1, 2, 4, 4)}
    targets = [{"labels": torch.tensor([1]), "masks": torch.zeros(1, 16, 16, dtype=torch.bool)}]
    losses = make_criterion()(outputs, targets, torch.Generator().manual_seed(0))
    ce0 = math.log(sum(math.exp(v) for v in q0)) - q0[1]
    ce1 = math.log(sum(math.exp(v) for v in q1)) - q1[2]
    assert losses["loss_ce"].item() == pytest.approx((1.0 * ce0 + EOS * ce1) / (1.0 + EOS), rel=1e-6)


def test_mask_losses_by_hand_and_num_masks_normalisation() -> None:
    # Mask logits 0 everywhere: every sampled logit is 0 (zero padding keeps it 0) wherever the points fall, so
    # BCE = log 2 for any label, and with all-zero targets dice = 1 - 1 / (P * 0.5 + 1).
    # Image 0: one query, two targets -> one matched mask; image 1: no targets. num_masks = 2.
    num_points = 10
    outputs = {"pred_logits": torch.zeros(2, 1, 3), "pred_masks": torch.zeros(2, 1, 4, 4)}
    targets = [
        {"labels": torch.tensor([0, 1]), "masks": torch.zeros(2, 16, 16, dtype=torch.bool)},
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)},
    ]
    losses = make_criterion(num_points=num_points)(outputs, targets)
    assert losses["loss_mask"].item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx((1 - 1 / (num_points * 0.5 + 1)) / 2, rel=1e-6)


def test_mask_losses_use_the_matched_pairs() -> None:
    # Query 0 predicts the right half, query 1 the left half; target 0 is the left half, target 1 the right half.
    # The Hungarian pairs are (0, 1) and (1, 0): a loss that mixed up the pairing would be near 20 per point.
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :, :16] = True
    masks[1, :, 16:] = True
    pred_masks = torch.full((1, 2, 8, 8), -20.0)
    pred_masks[0, 0, :, 4:] = 20.0
    pred_masks[0, 1, :, :4] = 20.0
    outputs = {"pred_logits": torch.zeros(1, 2, 3), "pred_masks": pred_masks}
    targets = [{"labels": torch.tensor([0, 1]), "masks": masks}]
    losses = make_criterion(num_points=200)(outputs, targets, torch.Generator().manual_seed(0))
    assert losses["loss_mask"].item() < 2.0
    assert losses["loss_dice"].item() < 0.2


# Empty targets, gradients, deep supervision.

@pytest.mark.parametrize("counts", [[0, 2], [0, 0]])
def test_empty_targets_give_finite_losses_and_backward(counts: list[int]) -> None:
    outputs, targets = random_case(2, 4, counts, aux=2)
    criterion = make_criterion(num_classes=3)
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(value) for value in losses.values())
    criterion.weighted_total(losses).backward()
    assert outputs["pred_logits"].grad is not None and outputs["pred_masks"].grad is not None
    if counts == [0, 0]:
        assert losses["loss_mask"].item() == losses["loss_dice"].item() == 0.0


def test_gradients_reach_logits_and_masks_of_every_layer() -> None:
    outputs, targets = random_case(2, 4, [2, 1], aux=6)
    criterion = make_criterion(num_classes=3)
    criterion.weighted_total(criterion(outputs, targets)).backward()
    for prediction in [outputs, *outputs["aux_outputs"]]:
        for key in ("pred_logits", "pred_masks"):
            grad = prediction[key].grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_deep_supervision_keys_and_weighted_total() -> None:
    outputs, targets = random_case(2, 4, [2, 1], aux=6)
    criterion = make_criterion(num_classes=3)
    losses = criterion(outputs, targets, torch.Generator().manual_seed(0))
    names = ["loss_ce", "loss_mask", "loss_dice"]
    assert len(losses) == 21
    assert set(losses) == set(names) | {f"{name}_{i}" for name in names for i in range(6)}
    assert all(value.dtype == torch.float32 and value.dim() == 0 for value in losses.values())
    expected = sum(2.0 * losses[f"loss_ce{s}"] + 5.0 * losses[f"loss_mask{s}"] + 5.0 * losses[f"loss_dice{s}"]
                   for s in ["", *(f"_{i}" for i in range(6))])
    torch.testing.assert_close(criterion.weighted_total(losses), expected)
    with pytest.raises(KeyError):
        criterion.weighted_total({"loss_box": torch.tensor(1.0)})


def test_empty_weight_buffer_and_num_masks() -> None:
    criterion = make_criterion(num_classes=3)
    assert criterion.state_dict()["empty_weight"].tolist() == pytest.approx([1.0, 1.0, 1.0, EOS])
    targets = [{"labels": torch.tensor([0, 2])}, {"labels": torch.tensor([1])}]
    assert count_masks(targets, "cpu") == 3.0
    assert count_masks([{"labels": torch.zeros(0)}], "cpu") == 1.0


def test_float32_under_autocast() -> None:
    outputs, targets = random_case(2, 4, [2, 1], aux=1)
    half = {key: outputs[key].detach().bfloat16() for key in ("pred_logits", "pred_masks")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = make_criterion(num_classes=3)(half, targets)
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in losses.values())


# Randomness: generators and per-image seeds.

def test_seeded_runs_are_reproducible() -> None:
    outputs, targets = random_case(2, 4, [2, 1], aux=1)
    criterion = make_criterion(num_classes=3)
    first = criterion(outputs, targets, image_seeds=[5, 9])
    second = criterion(outputs, targets, image_seeds=[5, 9])
    third = criterion(outputs, targets, torch.Generator().manual_seed(1))
    fourth = criterion(outputs, targets, torch.Generator().manual_seed(1))
    for key in first:
        assert torch.equal(first[key], second[key]) and torch.equal(third[key], fourth[key])
    with pytest.raises(ValueError):
        criterion(outputs, targets, torch.Generator(), image_seeds=[5, 9])


def test_image_seeds_make_losses_independent_of_batch_order_and_split() -> None:
    counts, seeds = [2, 3, 1, 2], [101, 202, 303, 404]
    queries = 5
    outputs, targets = random_case(4, queries, counts, aux=2, seed=3)
    criterion = make_criterion(num_classes=3, num_points=32)
    full = criterion(outputs, targets, image_seeds=seeds)

    order = [3, 1, 0, 2]
    permuted = criterion(subset(outputs, order), [targets[i] for i in order], image_seeds=[seeds[i] for i in order])
    for key in full:
        torch.testing.assert_close(permuted[key], full[key])

    # Two "processes" with two images each: the per-mask sums add up, as do the CE weighted sums
    # (every target is matched since Q >= N, so the CE weight total is N + eos * (B*Q - N)).
    halves = [[0, 2], [3, 1]]
    parts = [criterion(subset(outputs, half), [targets[i] for i in half], image_seeds=[seeds[i] for i in half])
             for half in halves]
    masks = [sum(counts[i] for i in half) for half in halves]
    ce_weights = [n + EOS * (len(half) * queries - n) for half, n in zip(halves, masks)]
    for key in full:
        if key.startswith("loss_ce"):
            total_weight = sum(ce_weights)
            expected = sum(part[key] * weight for part, weight in zip(parts, ce_weights)) / total_weight
        else:
            expected = sum(part[key] * n for part, n in zip(parts, masks)) / sum(counts)
        torch.testing.assert_close(full[key], expected)


# The real tiny model.

def test_tiny_model_loss_and_backward() -> None:
    torch.manual_seed(0)
    model = build_model("synthetic_panoptic_tiny")
    model.train()
    num_classes = model.config.model.num_classes
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=generator) * 255
    targets = [
        {
            "labels": torch.randint(0, num_classes, (count,), generator=generator),
            "masks": torch.rand(count, 64, 64, generator=generator) > 0.5,
        }
        for count in (3, 1)
    ]
    # Fewer points than the official 12544 only to keep the test fast on CPU.
    criterion = SetCriterion(num_classes, HungarianMatcher(num_points=2048), num_points=2048)
    losses = criterion(model(images), targets, image_seeds=[0, 1])
    assert len(losses) == 21
    total = criterion.weighted_total(losses)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(grad is not None and torch.isfinite(grad).all() for grad in grads)
    assert sum(float(grad.abs().sum()) > 0 for grad in grads) > 0.9 * len(grads)
