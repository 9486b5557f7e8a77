"""Synthetic panoptic scenes for the precision tests (the tiny model's training distribution)."""
from __future__ import annotations

import numpy as np

from pem.data.synthetic import synthetic_scene


def scenes(count: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``count`` uint8 [H, W, 3] RGB scenes drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [synthetic_scene(rng, size, 48)[0] for _ in range(count)]
