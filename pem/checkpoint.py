"""Our checkpoint format and its safe loading.

A checkpoint is ``{"format": "pem-edge/1", "preset": NAME, "scope": "model"|"backbone", "model": state_dict}``.

Checkpoints load with ``torch.load(weights_only=True)`` and are written atomically (temporary file, then rename).
Every load checks the weights for NaN/Inf (a diverged run or a damaged file): such a checkpoint is refused with one
line naming the tensors, unless ``allow_nonfinite`` (or the environment variable ``PEM_ALLOW_NONFINITE=1``, which
every command honours) asks to load it anyway for inspection.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pem.runtime.coco_panoptic import write_atomic
from pem.runtime.errors import PemError

FORMAT = "pem-edge/1"
ALLOW_NONFINITE_ENV = "PEM_ALLOW_NONFINITE"


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


def read_checkpoint(path: str | os.PathLike, allow_nonfinite: bool | None = None) -> dict[str, Any]:
    """Load any checkpoint file with ``weights_only=True`` and check its weights are finite.

    Raises CheckpointError naming the file when it cannot be read, is not a dict, holds a ``model`` entry that is
    not a dict, or holds non-finite weights (``allow_nonfinite``: None reads ``PEM_ALLOW_NONFINITE``; True warns
    and loads them anyway).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(error)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    for wrapper in ("model", "state_dict"):
        if wrapper in data and not isinstance(data[wrapper], dict):
            raise CheckpointError(f"{path}: its {wrapper!r} entry is a {type(data[wrapper]).__name__}, "
                                  "expected a dict of tensors")
    check_finite(weights_of(data), str(path), allow_nonfinite)
    return data


def _load_failure(error: Exception) -> str:
    """One line on why ``torch.load`` refused a file, without torch's advice to load it unsafely."""
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = f" ({detail.group(1).strip()})" if detail else ""
        return f"not a checkpoint of tensors that the safe loader accepts{reason}; it is refused, not executed"
    return text.splitlines()[0] if text else type(error).__name__


def weights_of(data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: its ``model`` or ``state_dict`` entry, else its top level."""
    for wrapper in ("model", "state_dict"):
        if isinstance(data.get(wrapper), dict):
            data = data[wrapper]
            break
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity, in state order."""
    return [name for name, tensor in state.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def check_finite(state: Mapping[str, torch.Tensor], source: str, allow_nonfinite: bool | None = None,
                 shown: int = 3) -> None:
    """Raise CheckpointError naming the first ``shown`` non-finite tensors of ``state`` and their count.

    ``allow_nonfinite`` None reads the environment variable ``PEM_ALLOW_NONFINITE``; when allowed, a warning is
    issued instead.
    """
    bad = nonfinite_tensors(state)
    if not bad:
        return
    names = ", ".join(bad[:shown]) + (f" and {len(bad) - shown} more" if len(bad) > shown else "")
    message = f"{source}: {len(bad)} of {len(state)} tensors hold NaN or Inf values ({names})"
    if allow_nonfinite is None:
        allow_nonfinite = os.environ.get(ALLOW_NONFINITE_ENV, "") not in ("", "0")
    if allow_nonfinite:
        warnings.warn(f"{message}; loaded anyway for inspection", stacklevel=3)
        return
    raise CheckpointError(f"{message}: the run that wrote it diverged or the file is damaged; "
                          f"set {ALLOW_NONFINITE_ENV}=1 to load it anyway for inspection")


def load_checkpoint(model: nn.Module, path: str | os.PathLike, allow_nonfinite: bool | None = None) -> dict[str, Any]:
    """Load one of our checkpoints into ``model`` (strict for ``scope="model"``, backbone keys for "backbone")."""
    data = read_checkpoint(path, allow_nonfinite)
    if data.get("format") != FORMAT:
        hint = ""
        keys = data.get("model", data) if isinstance(data.get("model", data), dict) else {}
        if any(str(k).startswith("sem_seg_head.") for k in keys):
            hint = " It looks like an official PEM (detectron2) checkpoint: convert it with `pem-convert` first."
        raise CheckpointError(f"{path} is not a pem-edge checkpoint (no format tag {FORMAT!r}).{hint}")
    preset = getattr(getattr(model, "config", None), "name", None)
    if preset is not None and data.get("preset") not in (None, preset):
        raise CheckpointError(f"{path} was written for preset {data['preset']!r}, the model is {preset!r}")
    state = data.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no 'model' dict of tensors")
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: {len(not_tensors)} 'model' entries are not tensors "
                              f"({', '.join(not_tensors[:3])}{' ...' if len(not_tensors) > 3 else ''})")
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
