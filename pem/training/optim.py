"""Optimizer and schedule as the official configs set them.

AdamW; backbone learning rate x``backbone_lr_multiplier``; no weight decay on norm layers and embeddings;
cosine decay from ``base_lr`` to ``end_lr`` over ``max_iter`` without warm-up; full-model gradient clipping.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pem.config import TrainConfig
from pem.modeling.layers import FrozenBatchNorm2d

_NORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm, FrozenBatchNorm2d)


def parameter_groups(model: nn.Module, train: TrainConfig, base_lr: float) -> list[dict]:
    """One group per (learning rate, weight decay) pair, each with its parameters."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            lr = base_lr * (train.backbone_lr_multiplier if module_name.startswith("backbone") else 1.0)
            decay = 0.0 if isinstance(module, (*_NORM_TYPES, nn.Embedding)) else train.weight_decay
            groups.setdefault((lr, decay), []).append(parameter)
    return [{"params": params, "lr": lr, "initial_lr": lr, "weight_decay": decay}
            for (lr, decay), params in groups.items()]


def build_optimizer(model: nn.Module, train: TrainConfig, base_lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups`` (betas and eps are PyTorch's defaults, as detectron2 leaves them)."""
    return torch.optim.AdamW(parameter_groups(model, train, base_lr or train.base_lr), lr=base_lr or train.base_lr)


def cosine_factor(step: int, max_iter: int, base_lr: float, end_lr: float) -> float:
    """Multiplier of ``base_lr`` at ``step``: end + (base - end) * (1 + cos(pi * step / max_iter)) / 2, over base."""
    progress = min(step, max_iter) / max(max_iter, 1)
    lr = end_lr + (base_lr - end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr / base_lr


def build_scheduler(optimizer: torch.optim.Optimizer, max_iter: int, base_lr: float,
                    end_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step cosine schedule; every group keeps its own ratio (backbone x0.1) to the base rate."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, max_iter, base_lr, end_lr)
    )
