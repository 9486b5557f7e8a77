"""Non-finite deformable-conv offsets contribute zero (the official CUDA kernel's bounds test), on every path:
torchvision's kernel behind ``pem.ops``, the reference, the Triton kernel (interpreter), ONNX Runtime's DeformConv."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pem.ops.deform_conv import deform_conv2d, deform_conv2d_reference

REPO = Path(__file__).resolve().parents[2]
ATOL = 1e-5


def _case(seed: int = 0) -> dict[str, torch.Tensor]:
    """PEM geometry (3x3, padding 1, mask): offsets with NaN, +Inf and -Inf in about a third of the taps, in dy
    only, dx only or both; ``expected`` is the reference with those taps' mask set to zero (and offsets to 0)."""
    generator = torch.Generator().manual_seed(seed)
    batch, channels, outs, height, width = 2, 12, 10, 9, 11
    offset = torch.randn(batch, 18, height, width, generator=generator) * 2
    kinds = torch.randint(0, 9, (batch, 9, height, width), generator=generator)
    bad_value = torch.tensor([math.nan, math.inf, -math.inf])[kinds % 3]
    dy_bad, dx_bad = (kinds < 2) | (kinds == 4), (kinds == 2) | (kinds == 4) | (kinds == 5)
    offset[:, 0::2][dy_bad] = bad_value[dy_bad]
    offset[:, 1::2][dx_bad] = bad_value[dx_bad]
    case = {
        "input": torch.randn(batch, channels, height, width, generator=generator),
        "offset": offset,
        "mask": torch.rand(batch, 9, height, width, generator=generator),
        "weight": torch.randn(outs, channels, 3, 3, generator=generator) / math.sqrt(channels * 9),
    }
    tap_ok = ~(dy_bad | dx_bad)
    case["expected"] = deform_conv2d_reference(case["input"], torch.where(torch.isfinite(offset), offset, 0.0),
                                               case["weight"], padding=(1, 1), mask=case["mask"] * tap_ok)
    assert (~tap_ok).float().mean() > 0.25 and torch.isfinite(case["expected"]).all()
    return case


def _run(function: object, case: dict[str, torch.Tensor]) -> torch.Tensor:
    return function(case["input"], case["offset"], case["weight"], padding=(1, 1), mask=case["mask"])


@pytest.mark.parametrize("backend", ["torchvision", "reference"])
def test_pem_ops_paths_give_zero_for_nonfinite_offsets(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEM_DISABLE_TORCHVISION_DEFORM", "1" if backend == "reference" else "0")
    case = _case()
    out = _run(deform_conv2d, case)
    assert float((out - case["expected"]).abs().max()) <= ATOL


def test_gradients_stay_finite() -> None:
    case = {k: v.requires_grad_() if k != "expected" else v for k, v in _case(1).items()}
    _run(deform_conv2d_reference, case).sum().backward()
    for name in ("input", "offset", "mask", "weight"):
        assert torch.isfinite(case[name].grad).all(), name
    assert float(case["offset"].grad[~torch.isfinite(case["offset"])].abs().max()) == 0.0


def test_triton_kernel_gives_zero_for_nonfinite_offsets(interpreter: None) -> None:
    from pem.kernels import deform_conv2d_triton

    case = _case(2)
    assert float((_run(deform_conv2d_triton, case) - case["expected"]).abs().max()) <= ATOL


def test_onnx_runtime_deformconv_gives_zero_for_nonfinite_offsets() -> None:
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    case = _case(3)
    names = ("input", "weight", "offset", "mask")
    node = helper.make_node("DeformConv", ["input", "weight", "offset", "", "mask"], ["out"], kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1])
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(case[n].shape)) for n in names]
    graph = helper.make_graph([node], "deform", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {n: case[n].numpy() for n in names})
    assert float(np.abs(out - case["expected"].numpy()).max()) <= ATOL


def test_all_nan_offsets_do_not_crash_the_process() -> None:
    """torchvision's CPU kernel alone dies with SIGSEGV (exit 139) on this input; pem.ops gives zeros."""
    code = ("import torch; from pem.ops.deform_conv import deform_conv2d, deform_conv2d_backend; "
            "torch.manual_seed(0); out = deform_conv2d(torch.randn(1, 4, 16, 16), "
            "torch.full((1, 18, 16, 16), float('nan')), torch.randn(4, 4, 3, 3), padding=(1, 1)); "
            "print(deform_conv2d_backend(), tuple(out.shape), float(out.abs().max()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PEM_DISABLE_TORCHVISION_DEFORM": "0"})
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["torchvision", "(1,", "4,", "16,", "16)", "0.0"]
