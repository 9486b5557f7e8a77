"""Shared fixtures: the parity oracle beside the checkout, real photographs, official-format weights."""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PEM_SHARED", REPO.parent / "shared"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``trt`` tests without TensorRT."""
    has_cuda = False
    if any("gpu" in item.keywords for item in items):
        import torch

        has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "trt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (or $PEM_SHARED); missing is a failure in CI and a skip elsewhere."""
    if not (SHARED / "parity").is_dir():
        message = f"parity oracle not found at {SHARED} (set PEM_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED


@pytest.fixture(scope="session")
def official_weights(shared_dir: Path) -> ModuleType:
    """The oracle's ``official_weights`` module (deterministic official-format state dicts)."""
    path = shared_dir / "parity" / "official_weights.py"
    spec = importlib.util.spec_from_file_location("official_weights", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("official_weights", module)
    spec.loader.exec_module(module)
    return module


def load_photo(name: str) -> np.ndarray:
    """A real photograph shipped with scikit-image, as [H, W, 3] uint8 RGB."""
    from skimage import io
    from skimage.data import data_dir

    image = io.imread(Path(data_dir) / name)
    return np.ascontiguousarray(image[..., :3])


TINY_WEIGHTS = REPO / "tests" / "fixtures" / "synthetic_panoptic_tiny.pth"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``export(head="panoptic", imgsz=(128, 128), dynamic=False, input_layout="uint8_nhwc",
    fusion_size="original", dynamic_batch=False)``: the trained ``synthetic_panoptic_tiny`` (PQ 61.6) as an FP32 ONNX
    file (static, of free size, or of free batch only), exported once per session for each setting."""
    cache: dict[tuple[str, tuple[int, int], bool, str, str, bool], Path] = {}

    def export(head: str = "panoptic", imgsz: tuple[int, int] = (128, 128), dynamic: bool = False,
               input_layout: str = "uint8_nhwc", fusion_size: str = "original", dynamic_batch: bool = False) -> Path:
        key = (head, tuple(imgsz), dynamic, input_layout, fusion_size, dynamic_batch)
        if key not in cache:
            import pem
            from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx

            model = pem.build_model("synthetic_panoptic_tiny", weights=str(TINY_WEIGHTS))
            layout = "" if input_layout == "uint8_nhwc" else f"_{input_layout}"
            free = "_dynamic" if dynamic else "_dynamic_batch" if dynamic_batch else ""
            name = f"tiny_{head}_{imgsz[0]}x{imgsz[1]}{free}{layout}_{fusion_size}.onnx"
            path = tmp_path_factory.mktemp("tiny_onnx") / name
            options = ExportOptions(head=head, imgsz=tuple(imgsz), dynamic=dynamic, input_layout=input_layout,
                                    fusion_size=fusion_size, dynamic_batch=dynamic_batch)
            save_onnx(export_onnx(model, options), path)
            cache[key] = path
        return cache[key]

    return export


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make(count, size=(128, 128), seed=0)``: a COCO-panoptic folder of synthetic scenes (``pem-data synthetic``),
    made once per session for each (count, size, seed)."""
    cache: dict[tuple[int, tuple[int, int], int], Path] = {}

    def make(count: int, size: tuple[int, int] = (128, 128), seed: int = 0) -> Path:
        key = (count, tuple(size), seed)
        if key not in cache:
            from pem.data.synthetic import generate_synthetic_dataset

            folder = tmp_path_factory.mktemp(f"synthetic_{count}_{seed}")
            cache[key] = generate_synthetic_dataset(folder / "data", count, tuple(size), seed)
        return cache[key]

    return make
