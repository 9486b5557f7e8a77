"""The tiny model exported once per session (panoptic head, uint8 256x256) for the TensorRT tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY_WEIGHTS = FIXTURES / "synthetic_panoptic_tiny.pth"
SIZE = (256, 256)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthetic_panoptic_tiny`` with its trained weights as a static panoptic ONNX (3 DeformConv nodes, 6
    ``pem::PrototypeGather`` nodes)."""
    import pem
    from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx

    model = pem.build_model("synthetic_panoptic_tiny", weights=str(TINY_WEIGHTS)).eval()
    path = tmp_path_factory.mktemp("tensorrt") / "tiny_panoptic.onnx"
    save_onnx(export_onnx(model, ExportOptions(head="panoptic", imgsz=SIZE)), path)
    return path


@pytest.fixture(scope="session")
def tiny_feed() -> dict[str, np.ndarray]:
    """A synthetic scene uint8 [1, 256, 256, 3] (the tiny model's training distribution) and an original size
    other than the input's (the panoptic head's inputs)."""
    from pem.data.synthetic import synthetic_scene

    image = synthetic_scene(np.random.default_rng(3), SIZE, min_area=64)[0]
    return {"image": image[None], "orig_size": np.array([300, 280], dtype=np.int64)}
