"""How far a reduced-precision graph is from its FP32 source on one image, both run by ONNX Runtime on the CPU.

Float outputs and pixel counts: relative L2 error; label outputs (classes, winning query per pixel): the share of
equal elements. ONNX Runtime's CPU provider computes most FP16 nodes in FP32 after inserting casts, so for an FP16
graph this measures the graph's casts and storage, not FP16 arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pem.runtime.contract import COUNT_OUTPUTS
from pem.runtime.predictor import Predictor


@dataclass(frozen=True)
class PrecisionComparison:
    """``float_rel_l2`` (float outputs and pixel counts) and ``integer_agreement`` (labels; 0..1) by output name."""

    float_rel_l2: dict[str, float] = field(default_factory=dict)
    integer_agreement: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per output."""
        out = [f"  {name}: relative L2 error {error:.3g} vs FP32" for name, error in self.float_rel_l2.items()]
        out += [f"  {name}: {100 * share:.3f}% equal to FP32" for name, share in self.integer_agreement.items()]
        return out


def compare_with_fp32(fp32_model: str | Path, other_model: str | Path, image: np.ndarray) -> PrecisionComparison:
    """Run both graphs on ``image`` (uint8 [H, W, 3] RGB, pre-processed by the runtime) and compare the outputs."""
    with Predictor(fp32_model, providers=["cpu"]) as reference, Predictor(other_model, providers=["cpu"]) as other:
        feed, _ = reference.preprocess(image)
        expected = reference.backend.infer(feed)
        got = other.backend.infer(feed)
    floats, integers = {}, {}
    for name, want in expected.items():
        have = got[name]
        if want.shape != have.shape:
            raise ValueError(f"output {name!r} has shape {have.shape}, the FP32 graph's has {want.shape}")
        if np.issubdtype(want.dtype, np.floating) or name in COUNT_OUTPUTS:
            floats[name] = relative_l2(have, want)
        else:
            integers[name] = float(np.mean(have == want)) if want.size else 1.0
    return PrecisionComparison(floats, integers)


def relative_l2(value: np.ndarray, reference: np.ndarray) -> float:
    """||value - reference|| / ||reference|| in float64."""
    reference = reference.astype(np.float64)
    return float(np.linalg.norm(value.astype(np.float64) - reference) / max(np.linalg.norm(reference), 1e-30))
