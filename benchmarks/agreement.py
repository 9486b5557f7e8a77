"""Agreement of two panoptic id maps after matching their segments by overlap (numpy only).

Two runs of one model (FP32 and a low precision, or two backends) may number the same segments differently, so
ids are not compared directly: segments are paired one to one, largest overlap first, and a pixel agrees when its
two segments are a pair (void, id 0, pairs only with void).
"""
from __future__ import annotations

import numpy as np


def matched_pixel_agreement(expected: np.ndarray, got: np.ndarray) -> float:
    """Fraction in [0, 1] of pixels whose segments match; ``expected`` and ``got`` are integer id maps [H, W]."""
    if expected.shape != got.shape or expected.size == 0:
        raise ValueError(f"need two non-empty id maps of one shape, got {expected.shape} and {got.shape}")
    left = np.unique(expected.astype(np.int64), return_inverse=True)
    right = np.unique(got.astype(np.int64), return_inverse=True)
    pairs, overlaps = np.unique(left[1].ravel() * len(right[0]) + right[1].ravel(), return_counts=True)
    left_ids, right_ids = left[0][pairs // len(right[0])], right[0][pairs % len(right[0])]
    used_left: set[int] = set()
    used_right: set[int] = set()
    agreeing = 0
    for index in np.argsort(-overlaps, kind="stable"):
        a, b = int(left_ids[index]), int(right_ids[index])
        if a in used_left or b in used_right or (a == 0) != (b == 0):
            continue
        used_left.add(a)
        used_right.add(b)
        agreeing += int(overlaps[index])
    return agreeing / expected.size
