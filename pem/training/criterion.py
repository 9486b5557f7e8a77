"""PEM's training loss: Mask2Former's set criterion (CE + point-sampled BCE and dice) with deep supervision.

Randomness and DDP: the matcher's points and the loss points are random. ``SetCriterion.forward`` draws them from the
global RNG by default, or from one ``generator`` for the whole batch. With ``image_seeds`` (one non-negative int per
image, e.g. the dataset index mixed with the epoch or iteration), every point for image b at prediction layer l
(matcher points first, then its loss points) comes from ``image_generator(image_seeds[b], l, device)``. Layer l is the
aux index 0..L-1 and L = len(aux_outputs) for the final prediction. An image then gets the same matches and the same
per-mask loss terms whether it sits in a batch of 4 on one process or a batch of 2 on another; only the
normalizations (``num_masks`` and the CE class-weight sum, both averaged over processes) see the rest of the global
batch, so DDP over several processes gives the gradients of the same global batch on one process.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pem.training.matcher import HungarianMatcher
from pem.training.point_sampling import image_generator, point_sample, uncertainty_points

DEFAULT_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
_AUX_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<layer>\d+)$")

Prediction = Mapping[str, torch.Tensor]
Target = Mapping[str, torch.Tensor]


def sigmoid_ce_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """BCE-with-logits averaged over points, summed over masks, divided by ``num_masks``; [R, P] -> scalar float32."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of 1 - (2 sum(p t) + 1) / (sum p + sum t + 1), p = sigmoid(logits), divided by ``num_masks``.

    ``logits`` and ``labels`` are [R, P]; returns a float32 scalar.
    """
    probs, labels = logits.float().sigmoid(), labels.float()
    numerator = 2.0 * (probs * labels).sum(-1) + 1.0
    denominator = probs.sum(-1) + labels.sum(-1) + 1.0
    return (1.0 - numerator / denominator).sum() / num_masks


def _global_mean(value: torch.Tensor) -> torch.Tensor:
    """``value`` averaged over processes when torch.distributed is initialized (a copy; no gradient)."""
    value = value.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def count_masks(targets: Sequence[Target], device: torch.device | str) -> float:
    """Target masks in the batch, averaged over processes when torch.distributed is initialized, clamped to >= 1."""
    count = torch.tensor(float(sum(len(target["labels"]) for target in targets)), device=device)
    return max(_global_mean(count).item(), 1.0)


class SetCriterion(nn.Module):
    """Unweighted per-layer losses for PEM's 1 + L predictions; ``weighted_total`` applies ``weight_dict``.

    ``num_classes`` K (the classifier has K+1 outputs, the last "no object", weighted ``eos_coef`` in the CE).
    Mask losses use ``num_points`` PointRend points per matched mask (``oversample_ratio``,
    ``importance_sample_ratio``), chosen on the predicted logits. See the module docstring for the randomness.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float] | None = None,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        self.eos_coef = eos_coef
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(
        self,
        outputs: Mapping[str, torch.Tensor | Sequence[Prediction]],
        targets: Sequence[Target],
        generator: torch.Generator | None = None,
        image_seeds: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses for ``outputs`` (``pred_logits`` [B, Q, K+1], ``pred_masks`` [B, Q, h, w], optional ``aux_outputs``).

        ``targets``: B dicts, ``labels`` int64 [N] in 0..K-1 and ``masks`` [N, H, W] (bool or 0/1) at the padded input
        resolution. Returns float32 scalars ``loss_ce``, ``loss_mask``, ``loss_dice`` for the final prediction and
        ``loss_ce_i``, ``loss_mask_i``, ``loss_dice_i`` for aux prediction i. ``generator`` and ``image_seeds`` are
        exclusive; see the module docstring.
        """
        if generator is not None and image_seeds is not None:
            raise ValueError("pass either generator or image_seeds, not both")
        batch_size = outputs["pred_logits"].shape[0]
        if len(targets) != batch_size:
            raise ValueError(f"expected {batch_size} targets, got {len(targets)}")
        if image_seeds is not None and len(image_seeds) != batch_size:
            raise ValueError(f"expected {batch_size} image seeds, got {len(image_seeds)}")
        aux_outputs = list(outputs.get("aux_outputs", []))
        num_masks = count_masks(targets, outputs["pred_logits"].device)
        final = {"pred_logits": outputs["pred_logits"], "pred_masks": outputs["pred_masks"]}
        layers = [(len(aux_outputs), final, "")] + [(i, aux, f"_{i}") for i, aux in enumerate(aux_outputs)]
        losses = {}
        for layer, prediction, suffix in layers:
            generators = self._generators(layer, batch_size, prediction["pred_masks"].device, generator, image_seeds)
            for name, value in self.layer_losses(prediction, targets, num_masks, generators).items():
                losses[name + suffix] = value
        return losses

    def layer_losses(self, prediction: Prediction, targets: Sequence[Target], num_masks: float,
                     generators: Sequence[torch.Generator | None]) -> dict[str, torch.Tensor]:
        """Match one prediction and return its ``loss_ce``, ``loss_mask``, ``loss_dice``; one generator per image."""
        indices = self.matcher(prediction, targets, generators)
        with torch.autocast(prediction["pred_masks"].device.type, enabled=False):
            losses = {"loss_ce": self.loss_labels(prediction["pred_logits"], targets, indices)}
            losses.update(self.loss_masks(prediction["pred_masks"], targets, indices, num_masks, generators))
        return losses

    def loss_labels(self, pred_logits: torch.Tensor, targets: Sequence[Target],
                    indices: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Weighted-mean CE over all B*Q queries; unmatched queries target class K ("no object").

        The weighted mean's denominator (sum of the class weights of the targets) is averaged over processes, like
        ``num_masks``: on one process this is exactly ``F.cross_entropy(weight=...)``, and under DDP the averaged
        gradients equal those of the same global batch on one process (the official per-process mean does not).
        """
        device = pred_logits.device
        classes = torch.full(pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=device)
        for b, (target, (pred_idx, target_idx)) in enumerate(zip(targets, indices)):
            classes[b, pred_idx.to(device)] = target["labels"].to(device)[target_idx.to(device)]
        weight = self.empty_weight.to(device, torch.float32)
        losses = F.cross_entropy(pred_logits.float().transpose(1, 2), classes, weight=weight, reduction="none")
        return losses.sum() / _global_mean(weight[classes].sum().detach())

    def loss_masks(self, pred_masks: torch.Tensor, targets: Sequence[Target],
                   indices: Sequence[tuple[torch.Tensor, torch.Tensor]], num_masks: float,
                   generators: Sequence[torch.Generator | None]) -> dict[str, torch.Tensor]:
        """Point-sampled ``loss_mask`` (BCE) and ``loss_dice`` over the matched pairs, each summed / ``num_masks``."""
        device = pred_masks.device
        point_logits, point_labels = [], []
        for b, (target, (pred_idx, target_idx)) in enumerate(zip(targets, indices)):
            if pred_idx.numel() == 0:
                continue
            logits = pred_masks[b, pred_idx.to(device)].float().unsqueeze(1)
            masks = target["masks"].to(device)[target_idx.to(device)].float().unsqueeze(1)
            coords = uncertainty_points(logits, self.num_points, self.oversample_ratio, self.importance_sample_ratio,
                                        generators[b])
            point_logits.append(point_sample(logits, coords).squeeze(1))
            with torch.no_grad():
                point_labels.append(point_sample(masks, coords).squeeze(1))
        if not point_logits:
            zero = pred_masks.float().sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        logits, labels = torch.cat(point_logits), torch.cat(point_labels)
        return {
            "loss_mask": sigmoid_ce_loss(logits, labels, num_masks),
            "loss_dice": dice_loss(logits, labels, num_masks),
        }

    def weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sum of ``weight_dict[base] * loss``; ``base`` drops an aux ``_i`` suffix (``loss_ce_3`` -> ``loss_ce``)."""
        total = None
        for name, value in losses.items():
            weight = self.weight_dict.get(name)
            if weight is None:
                match = _AUX_SUFFIX.match(name)
                if match is None or match["base"] not in self.weight_dict:
                    raise KeyError(f"no weight for loss {name!r}")
                weight = self.weight_dict[match["base"]]
            term = value * weight
            total = term if total is None else total + term
        if total is None:
            raise ValueError("no losses to weight")
        return total

    @staticmethod
    def _generators(layer: int, batch_size: int, device: torch.device, generator: torch.Generator | None,
                    image_seeds: Sequence[int] | None) -> list[torch.Generator | None]:
        """Per-image generators for one layer: seeded from ``image_seeds``, else ``generator`` (or None) for all."""
        if image_seeds is None:
            return [generator] * batch_size
        return [image_generator(seed, layer, device) for seed in image_seeds]
