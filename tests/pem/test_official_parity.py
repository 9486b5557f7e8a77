"""Binding parity with the official implementation: ``../shared/parity`` vectors through pem-convert."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pem
from pem.convert import main as convert_main
from pem.runtime.fusion import semantic_inference

PRESET = "cityscapes_semantic_stdc2"


@pytest.fixture(scope="module")
def vector(shared_dir: Path) -> dict[str, np.ndarray]:
    with np.load(shared_dir / "parity" / "vectors" / f"{PRESET}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted(official_weights: ModuleType, shared_dir: Path, vector: dict, tmp_path_factory) -> Path:
    state = official_weights.make_state_dict(str(shared_dir / "parity" / "keys" / f"{PRESET}_keys.txt"),
                                             int(vector["weight_seed"]))
    assert official_weights.fingerprint(state) == pytest.approx(float(vector["weights_fingerprint"]), rel=1e-9)
    folder = tmp_path_factory.mktemp("parity")
    torch.save({"model": state}, folder / "official.pth")
    assert convert_main(["--config", PRESET, str(folder / "official.pth"), str(folder / "ours.pth")]) == 0
    return folder / "ours.pth"


def _relative_l2(got: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.from_numpy(ref).double()
    return float((got.double() - ref_t).norm() / ref_t.norm())


@pytest.fixture(scope="module")
def outputs64(converted: Path, vector: dict) -> dict[str, torch.Tensor]:
    model = pem.build_model(PRESET, weights=str(converted)).double()
    with torch.no_grad():
        return model(torch.from_numpy(vector["image"]).permute(0, 3, 1, 2).double())


def test_float64_reproduces_official_outputs(outputs64: dict, vector: dict) -> None:
    for key in ("pred_logits", "pred_masks"):
        assert outputs64[key].shape == vector[key].shape
        assert _relative_l2(outputs64[key], vector[key]) <= 1e-6, key


def test_float32_reproduces_official_outputs(converted: Path, vector: dict) -> None:
    model = pem.build_model(PRESET, weights=str(converted))
    with torch.no_grad():
        out = model(torch.from_numpy(vector["image"]).permute(0, 3, 1, 2).float())
    margins = json.loads(str(vector["margins_json"]))
    assert min(m["argmax_gap_min"] for m in margins) > 1e-6  # so float32 must not flip a prototype choice here
    for key in ("pred_logits", "pred_masks"):
        assert _relative_l2(out[key], vector[key]) <= 1e-4, key


def test_semantic_inference_matches_official(outputs64: dict, vector: dict) -> None:
    masks = F.interpolate(outputs64["pred_masks"], scale_factor=4, mode="bilinear", align_corners=False)
    prob = semantic_inference(outputs64["pred_logits"][0].numpy(), masks[0].numpy())
    sampled = prob[:, vector["sem_rows"]][:, :, vector["sem_cols"]]
    assert _relative_l2(torch.from_numpy(sampled[None]), vector["sem_prob_sub"]) <= 1e-6
    decisive = vector["sem_margin"][0] > 1e-4
    assert decisive.mean() > 0.9
    assert np.array_equal(prob.argmax(0)[decisive], vector["sem_argmax"][0][decisive])
