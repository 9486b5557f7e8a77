"""Size and count arguments of the command-line tools: ``640``, ``640x480`` or ``640,480`` (height first)."""
from __future__ import annotations

import argparse

from pem.runtime.errors import PemError


class SizeError(PemError, argparse.ArgumentTypeError, ValueError):
    """A malformed size: argparse prints its message; other callers can catch it as a ValueError."""


def parse_size(text: str) -> tuple[int, int]:
    """``"H"``, ``"HxW"`` or ``"H,W"`` -> (H, W) of positive integers; ``SizeError`` otherwise."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise SizeError(f"bad size {text!r}: use H, HxW or H,W") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise SizeError(f"bad size {text!r}: use H, HxW or H,W with positive numbers")
    return values[0], values[1]


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse ``type=``); argparse.ArgumentTypeError otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value
