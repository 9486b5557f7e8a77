"""The fusion resolution of a semantic/panoptic head, written once: its sizes, its scale, the final nearest resize
and the memory budget of the exact mode. Torch-free; the graph heads, ``pem.inference`` and the runtime read these.

Modes (``pem.runtime.contract.FUSION_SIZES``), for an image of original size H0 x W0 fed to the graph as h x w:

* ``original``: the official chain, fusion at H0 x W0 (exact; per-query/per-class tensors of the camera's size).
* ``input``: fusion at h x w (the mask logits upsampled to the padded input and cropped, not resized further);
  identical to ``original`` whenever h x w = H0 x W0.
* ``mask``: fusion at the mask stride, ceil(h / 4) x ceil(w / 4) (the mask logits cropped, never upsampled).

Below ``original`` the id maps are resized to H0 x W0 by :func:`resize_nearest`: original pixel ``i`` takes fusion
pixel ``floor((i + 0.5) * scale)`` (pixel centres, torch's ``nearest-exact``) with ``scale`` = fusion pixels per
original pixel = h / (stride * H0): integer gathers, O(H0 * W0).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from pem.runtime.contract import FUSION_ORIGINAL, FUSION_SIZES, MASK_STRIDE
from pem.runtime.errors import PemError
from pem.runtime.fusion import Segment

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "MEMORY_BUDGET_ENV",
    "MemoryBudgetError",
    "check_memory_budget",
    "full_size_bytes",
    "fusion_scale",
    "fusion_shape",
    "fusion_stride",
    "memory_budget_mb",
    "resize_nearest",
    "resize_panoptic",
]

MEMORY_BUDGET_ENV = "PEM_MEMORY_BUDGET_MB"
# half of an 8 GB Jetson Orin Nano (CPU and GPU share it; the network, the runtime and the OS need the rest)
DEFAULT_MEMORY_BUDGET_MB = 4096
# float32 [C, H0, W0] tensors alive at once in the exact chain (resized logits, their sigmoid, the weighted scores)
FULL_SIZE_COPIES = 3
INT32_ELEMENTS = 2**31 - 1  # ONNX Runtime's Resize (and TensorRT's) index tensors in int32


class MemoryBudgetError(PemError, MemoryError):
    """A frame whose full-size tensors in ``original`` mode would exceed the memory budget (exit code 2)."""


def _check_mode(fusion_size: str) -> None:
    if fusion_size not in FUSION_SIZES:
        raise ValueError(f"unknown fusion size {fusion_size!r}; known: {', '.join(FUSION_SIZES)}")


def fusion_stride(fusion_size: str) -> int:
    """Input pixels per fusion pixel below ``original``: 1 (``input``) or ``MASK_STRIDE`` (``mask``); 0 for
    ``original``, whose fusion size is the original image's, not a stride of the input."""
    _check_mode(fusion_size)
    return {"original": 0, "input": 1, "mask": MASK_STRIDE}[fusion_size]


def fusion_shape(fusion_size: str, resized: tuple[int, int], original: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the fused maps: ``original``, ``resized`` or ceil(resized / 4). Plain integer arithmetic
    (no ``int()``), so the exporter's symbolic sizes stay symbolic in a graph of free size."""
    stride = fusion_stride(fusion_size)
    if stride == 0:
        return original[0], original[1]
    return -(-resized[0] // stride), -(-resized[1] // stride)


def fusion_scale(fusion_size: str, resized: tuple[int, int], original: tuple[int, int]) -> tuple[float, float]:
    """(sy, sx): fusion pixels per original pixel along each axis (1.0 in ``original`` mode)."""
    stride = fusion_stride(fusion_size)
    if stride == 0:
        return 1.0, 1.0
    return resized[0] / (stride * original[0]), resized[1] / (stride * original[1])


def _nearest_index(size_out: int, scale: float, size_in: int) -> np.ndarray:
    """int64 [size_out]: ``min(floor((i + 0.5) * scale), size_in - 1)``."""
    return np.minimum(np.floor((np.arange(size_out) + 0.5) * scale).astype(np.int64), size_in - 1)


def resize_nearest(ids: np.ndarray, original: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """An integer id map [h, w] at the fusion resolution -> [H0, W0] of the same dtype (module docstring's rule).

    ``scale`` is :func:`fusion_scale`'s. A map already of the original size is returned as is.
    """
    if tuple(ids.shape) == tuple(original):
        return ids
    rows = _nearest_index(original[0], scale[0], ids.shape[0])
    cols = _nearest_index(original[1], scale[1], ids.shape[1])
    return np.take(np.take(ids, rows, axis=0), cols, axis=1)


def resize_panoptic(
    panoptic: np.ndarray, segments: list[Segment], original: tuple[int, int], scale: tuple[float, float]
) -> tuple[np.ndarray, list[Segment]]:
    """A panoptic id map [h, w] (0 void, ids 1..N) and its segments -> the map at [H0, W0] and the segments with
    the areas of that map (a segment no pixel keeps gets area 0; ids and order unchanged)."""
    resized = resize_nearest(panoptic, original, scale)
    if resized is panoptic:
        return panoptic, segments
    areas = np.bincount(resized.ravel(), minlength=len(segments) + 1)
    return resized, [dataclasses.replace(s, area=int(areas[s.id])) for s in segments]


def memory_budget_mb(value: float | None = None) -> float:
    """The memory budget in MiB: ``value`` when given, else ``PEM_MEMORY_BUDGET_MB`` when set, else
    :data:`DEFAULT_MEMORY_BUDGET_MB`. A value that is not a positive number raises :class:`MemoryBudgetError`."""
    text = os.environ.get(MEMORY_BUDGET_ENV) if value is None else str(value)
    if text is None:
        return float(DEFAULT_MEMORY_BUDGET_MB)
    try:
        budget = float(text)
    except ValueError:
        budget = 0.0
    if not budget > 0 or budget == float("inf"):
        where = "the memory budget" if value is not None else MEMORY_BUDGET_ENV
        raise MemoryBudgetError(f"{where}={text!r}: expected a positive number of MiB")
    return budget


def full_size_bytes(original: tuple[int, int], channels: int) -> int:
    """Bytes of the float32 [channels, H0, W0] tensors the exact chain holds at once (``FULL_SIZE_COPIES``)."""
    return FULL_SIZE_COPIES * 4 * int(channels) * int(original[0]) * int(original[1])


def check_memory_budget(
    fusion_size: str, original: tuple[int, int], channels: int, budget_mb: float | None = None
) -> None:
    """Refuse (:class:`MemoryBudgetError`, one line) an ``original``-mode frame whose full-size tensors would exceed
    the budget (:func:`memory_budget_mb`) or int32 indexing; other modes never hold such tensors and always pass.

    ``channels``: the per-pixel channels the head resizes to the original size (queries, or classes for semantic-only
    presets: the larger of the two).
    """
    if fusion_size != FUSION_ORIGINAL:
        return
    budget = memory_budget_mb(budget_mb)
    needed = full_size_bytes(original, channels)
    elements = int(channels) * int(original[0]) * int(original[1])
    if needed > budget * 2**20 or elements > INT32_ELEMENTS:
        raise MemoryBudgetError(
            f"a {original[0]}x{original[1]} frame needs about {needed / 2**20:,.0f} MiB of full-size tensors in "
            f"fusion size 'original' ({channels} channels), over the memory budget of {budget:,.0f} MiB "
            f"({MEMORY_BUDGET_ENV}) or int32 indexing: export with --fusion-size input"
        )
