"""PEM training: Hungarian matcher, PointRend point sampling and the Mask2Former set criterion (needs torch, scipy)."""
from __future__ import annotations

from pem.training.criterion import DEFAULT_WEIGHTS, SetCriterion, count_masks, dice_loss, sigmoid_ce_loss
from pem.training.matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost, per_image_generators
from pem.training.point_sampling import (
    UncertaintyPoints,
    image_generator,
    point_sample,
    random_points,
    sample_uncertainty_points,
    uncertainty_points,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "HungarianMatcher",
    "SetCriterion",
    "UncertaintyPoints",
    "batch_dice_cost",
    "batch_sigmoid_ce_cost",
    "count_masks",
    "dice_loss",
    "image_generator",
    "per_image_generators",
    "point_sample",
    "random_points",
    "sample_uncertainty_points",
    "sigmoid_ce_loss",
    "uncertainty_points",
]
