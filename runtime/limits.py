"""Range-checked argument types of the command-line tools: absurd requests fail at parse time, before allocation.

Each factory returns an argparse ``type=`` callable whose error (``argparse.ArgumentTypeError``) names the range;
argparse prints it as one line after the usage and exits 2. The ranges are meant to be stated in ``--help``.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from pem.runtime.sizes import SizeError, parse_size

__all__ = ["MAX_IMAGE_SIDE", "MIN_MODEL_SIDE", "float_in", "int_in", "size_in"]

# The backbones' deepest feature level has stride 32: a smaller input leaves it a single pixel (a 7x7 export finds
# nothing and its parity check "passes" with 0 segments), so 32 px is the smallest model input worth exporting.
MIN_MODEL_SIDE = 32
# 8192 px a side: 4x a Cityscapes frame's width; one uint8 RGB image of 8192x8192 is 192 MiB, its float32 feed 768 MiB.
MAX_IMAGE_SIDE = 8192


def size_in(low: int, high: int) -> Callable[[str], tuple[int, int]]:
    """An ``H``, ``HxW`` or ``H,W`` argument with both sides in ``[low, high]`` -> (H, W)."""

    def parse(text: str) -> tuple[int, int]:
        try:
            height, width = parse_size(text)
        except SizeError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if not (low <= height <= high and low <= width <= high):
            raise argparse.ArgumentTypeError(f"size {text!r} out of range: each side must be in {low}..{high} px")
        return height, width

    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An integer argument in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} out of range {low}..{high}")
        return value

    return parse


def float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``); NaN and infinities are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text} out of range {bracket}{low:g}, {high:g}]")
        return value

    return parse
