"""TensorRT version strings as ``(major, minor)`` tuples."""
from __future__ import annotations

import re

Version = tuple[int, int]

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+){0,2}$")


def parse_version(text: str) -> Version:
    """``"10.3"`` or ``"10.3.0.26"`` -> ``(10, 3)``; anything else raises ``ValueError``."""
    match = _VERSION.match(str(text).strip())
    if match is None:
        raise ValueError(f"unknown TensorRT version format {text!r} (expected X.Y, e.g. 10.3)")
    return int(match.group(1)), int(match.group(2))


def format_version(version: Version) -> str:
    """``(10, 3)`` -> ``"10.3"``."""
    return f"{version[0]}.{version[1]}"
