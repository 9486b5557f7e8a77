"""Toy artifacts (contract-conforming ONNX graphs from ``graphs.py``) and test images for the runtime tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.runtime import graphs


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding every toy artifact."""
    folder = tmp_path_factory.mktemp("toy_artifacts")
    graphs.raw_graph(folder / "raw.onnx")
    graphs.raw_graph(folder / "raw_float.onnx", layout="float_nchw",
                     props=graphs.metadata("raw", layout="float_nchw"))
    graphs.raw_graph(folder / "raw_static.onnx", static_size=(64, 96),
                     props=graphs.metadata("raw", static_size=(64, 96)))
    graphs.raw_graph(folder / "raw_semantic.onnx", props=graphs.metadata("raw", preset="toy_semantic",
                                                                        panoptic_on=False))
    graphs.semantic_graph(folder / "semantic.onnx")
    graphs.panoptic_graph(folder / "panoptic.onnx")
    return folder


def quadrants(height: int = 60, width: int = 80) -> np.ndarray:
    """[H, W, 3] uint8 RGB: red top half, green bottom-left, blue bottom-right (the toy raw graph's three queries)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[: height // 2] = (200, 30, 30)
    image[height // 2 :, : width // 2] = (30, 200, 30)
    image[height // 2 :, width // 2 :] = (30, 30, 200)
    return image


@pytest.fixture()
def scene() -> np.ndarray:
    """A 60x80 quadrant image with a little noise."""
    noise = np.random.default_rng(0).integers(-10, 11, size=(60, 80, 3))
    return np.clip(quadrants().astype(np.int64) + noise, 0, 255).astype(np.uint8)
