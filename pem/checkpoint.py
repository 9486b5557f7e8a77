"""Our checkpoint format and its safe loading.

A checkpoint is ``{"format": "pem-edge/1", "preset": NAME, "scope": "model"|"backbone", "model": state_dict}``.

Checkpoints load with ``torch.load(weights_only=True)`` and are written atomically (temporary file, then rename).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pem.runtime.coco_panoptic import write_atomic
from pem.runtime.errors import PemError

FORMAT = "pem-edge/1"


class CheckpointError(PemError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    write_atomic(path, lambda handle: torch.save(obj, handle), ".tmp")


def save_checkpoint(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], preset: str, scope: str = "model",
    **extra: Any,
) -> None:
    """Write a checkpoint of ``state_dict`` (our key names) for ``preset``; ``extra`` entries are stored too."""
    atomic_torch_save({"format": FORMAT, "preset": preset, "scope": scope, "model": dict(state_dict), **extra}, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load any checkpoint file with ``weights_only=True``; raises CheckpointError naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints into ``model`` (strict for ``scope="model"``, backbone keys for "backbone")."""
    data = read_checkpoint(path)
    if data.get("format") != FORMAT:
        hint = ""
        keys = data.get("model", data) if isinstance(data.get("model", data), dict) else {}
        if any(str(k).startswith("sem_seg_head.") for k in keys):
            hint = " It looks like an official PEM (detectron2) checkpoint: convert it with `pem-convert` first."
        raise CheckpointError(f"{path} is not a pem-edge checkpoint (no format tag {FORMAT!r}).{hint}")
    preset = getattr(getattr(model, "config", None), "name", None)
    if preset is not None and data.get("preset") not in (None, preset):
        raise CheckpointError(f"{path} was written for preset {data['preset']!r}, the model is {preset!r}")
    state = data["model"]
    scope = data.get("scope", "model")
    target = model.backbone if scope == "backbone" else model
    check_state_dict(target.state_dict(), state, str(path))
    target.load_state_dict(state)
    return data


def check_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given) if tuple(given[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(describe_key_problems(source, missing, unexpected, mismatched))


def describe_key_problems(source: str, missing: list[str], unexpected: list[str], mismatched: list[str],
                          limit: int = 20) -> str:
    """A readable multi-line message listing (at most ``limit`` of) each kind of problem."""
    lines = [f"{source} does not fit the model:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            shown = "\n    ".join(items[:limit])
            more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
            lines.append(f"  {len(items)} {title}:\n    {shown}{more}")
    return "\n".join(lines)
