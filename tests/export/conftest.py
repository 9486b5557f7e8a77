"""Fixtures of the export tests: models with realistic weights, real photographs and synthetic scenes."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

import pem
from pem.modeling.pem_model import PEM

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY_WEIGHTS = FIXTURES / "synthetic_panoptic_tiny.pth"
WEIGHT_SEED = 7


@pytest.fixture(scope="session")
def official_model(official_weights: ModuleType, shared_dir: Path) -> Callable[[str, str], PEM]:
    """``build(preset, listing)``: the preset with the parity oracle's official-format weights of ``listing``
    (seed 7), converted by ``pem.convert``; eval mode, cached per (preset, listing)."""
    from pem.convert import convert_official

    cache: dict[tuple[str, str], PEM] = {}

    def build(preset: str, listing: str) -> PEM:
        if (preset, listing) not in cache:
            keys = shared_dir / "parity" / "keys" / f"{listing}_keys.txt"
            state = official_weights.make_state_dict(str(keys), WEIGHT_SEED)
            model = pem.build_model(preset)
            model.load_state_dict(convert_official(state, model.config, model.state_dict()).state_dict)
            cache[preset, listing] = model.eval()
        return cache[preset, listing]

    return build


@pytest.fixture(scope="session")
def tiny_model() -> PEM:
    """The trained ``synthetic_panoptic_tiny`` checkpoint (PQ 61.6 on held-out synthetic scenes)."""
    return pem.build_model("synthetic_panoptic_tiny", weights=str(TINY_WEIGHTS))


@pytest.fixture(scope="session")
def synthetic_scenes(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Three synthetic panoptic scenes, uint8 [256, 320, 3] RGB (the tiny model's training distribution)."""
    from pem.data.synthetic import generate_synthetic_dataset

    out = generate_synthetic_dataset(tmp_path_factory.mktemp("scenes"), 3, (256, 320), seed=11)
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted((out / "images").glob("*.jpg"))]
