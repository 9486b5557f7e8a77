"""Fixtures of the example tests: the trained tiny model exported to ONNX once, synthetic scenes, example modules."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
IMGSZ = (128, 128)


def load_module(path: Path) -> ModuleType:
    """Import the example file ``path`` as a top-level module named after its stem (as ``python3 path`` would)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def scenes(count: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``count`` synthetic panoptic scenes, uint8 [H, W, 3] RGB (the tiny model's training distribution)."""
    from pem.data.synthetic import synthetic_scene

    return [synthetic_scene(np.random.default_rng([seed, i]), size, 24)[0] for i in range(1, count + 1)]


@pytest.fixture(scope="session")
def example_model(tiny_onnx: Callable[..., Path]) -> Path:
    """The trained ``synthetic_panoptic_tiny`` checkpoint exported with the panoptic head, static 128x128 input."""
    return tiny_onnx("panoptic", IMGSZ)
