"""``panoptic_pixel_stage_torch`` against the numpy oracle ``pem.runtime.fusion.panoptic_pixel_stage``, exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pem.kernels import PixelStage, panoptic_pixel_stage_torch
from pem.runtime.fusion import panoptic_pixel_stage
from tests.kernels.gpu_timing import cuda_milliseconds, report


def _assert_same(stage: PixelStage, scores: np.ndarray, keep: np.ndarray, logits: np.ndarray) -> None:
    expected = panoptic_pixel_stage(scores, keep, logits)
    assert stage.winner.dtype == torch.int32
    assert all(t.dtype == torch.int64 for t in stage[1:])
    for name in PixelStage._fields:
        np.testing.assert_array_equal(getattr(stage, name).cpu().numpy(), getattr(expected, name), err_msg=name)


def _run(scores: np.ndarray, keep: np.ndarray, logits: np.ndarray, device: str = "cpu") -> PixelStage:
    return panoptic_pixel_stage_torch(torch.from_numpy(scores).to(device), torch.from_numpy(keep).to(device),
                                      torch.from_numpy(logits).to(device))


def _case(seed: int, queries: int = 7, height: int = 9, width: int = 11, ties: bool = False,
          dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random scores/keep/logits; with ``ties``, scores and logits from small sets and duplicated queries."""
    rng = np.random.default_rng(seed)
    if ties:
        scores = rng.choice(np.array([0.5, 0.75, 0.9], dtype=dtype), queries)
        logits = rng.choice(np.arange(-4, 5, dtype=dtype) / 2, (queries, height, width))
        scores[queries // 2] = scores[0]
        logits[queries // 2] = logits[0]
    else:
        scores = rng.uniform(0.0, 1.0, queries).astype(dtype)
        logits = (rng.standard_normal((queries, height, width)) * 3).astype(dtype)
        logits[np.abs(logits) < 1e-3] = 0.5  # away from the sliver below 0 where exp implementations may differ
    keep = rng.uniform(size=queries) < 0.6
    keep[0] = True
    return scores, keep, logits


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_numpy(seed: int, ties: bool) -> None:
    _assert_same(_run(*_case(seed, ties=ties)), *_case(seed, ties=ties))


def test_nothing_kept_everything_kept_and_no_queries() -> None:
    scores, keep, logits = _case(10)
    for mask in (np.zeros_like(keep), np.ones_like(keep)):
        _assert_same(_run(scores, mask, logits), scores, mask, logits)
    empty = (scores[:0], keep[:0], logits[:0])
    _assert_same(_run(*empty), *empty)
    assert (_run(scores, np.zeros_like(keep), logits).winner == -1).all()


def test_mixed_dtypes_and_float64() -> None:
    scores, keep, logits = _case(11)
    _assert_same(_run(scores.astype(np.float64), keep, logits), scores.astype(np.float64), keep, logits)
    _assert_same(_run(scores, keep, logits.astype(np.float64)), scores, keep, logits.astype(np.float64))


def test_mask_pixel_is_sigmoid_at_least_half() -> None:
    """Logit -1e-7 gives sigmoid exactly 0.5 in float32 (a mask pixel); -1e-3 does not; 0 does."""
    scores = np.array([0.9, 0.8], dtype=np.float32)
    keep = np.array([True, True])
    logits = np.full((2, 1, 4), -5.0, dtype=np.float32)
    logits[0, 0] = [-1e-7, -1e-3, 0.0, 2.0]
    stage = _run(scores, keep, logits)
    _assert_same(stage, scores, keep, logits)
    assert stage.winner.tolist() == [[0, -1, 0, 0]]
    assert stage.mask_area.tolist() == [3, 0]


@pytest.mark.gpu
def test_gpu_matches_numpy_without_sync_and_timing() -> None:
    """The sync debug mode is on around the pixel stage only: the host-to-device copies that build its inputs are
    blocking copies, which go through ``c10::cuda::memcpy_and_sync``, and that calls ``warn_or_error_on_sync()``
    whenever the mode is not disabled (torch 2.14.1 include/c10/cuda/CUDAFunctions.h lines 79-88)."""
    for seed in range(3):
        for ties in (False, True):
            case = _case(seed, queries=100, height=256, width=512, ties=ties)
            on_gpu = [torch.from_numpy(a).to("cuda") for a in case]
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                stage = panoptic_pixel_stage_torch(*on_gpu)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            _assert_same(stage, *case)
    scores, keep, logits = _case(0, queries=100, height=1024, width=2048)
    on_gpu = [torch.from_numpy(a).cuda() for a in (scores, keep, logits)]
    timings = {"torch_cuda": cuda_milliseconds(lambda: panoptic_pixel_stage_torch(*on_gpu), repeats=5)}
    report("panoptic_pixel_stage", "Q=100 1024x2048 float32 (numpy reference not timed here)", timings)
