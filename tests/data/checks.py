"""Assertions shared by the data tests."""
from __future__ import annotations

from typing import Any

import numpy as np


def assert_masks_match_sem_seg(sample: dict[str, Any]) -> None:
    """Every mask is non-empty, and painting the masks with their labels over 255 gives ``sem_seg``."""
    painted = np.full(sample["sem_seg"].shape, 255, dtype=np.int64)
    for label, mask in zip(sample["labels"], sample["masks"]):
        assert mask.any()
        painted[mask] = label
    np.testing.assert_array_equal(painted, sample["sem_seg"])
