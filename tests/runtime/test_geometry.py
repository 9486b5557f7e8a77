"""Host geometry: OpenCV and numpy bilinear resizes against torch's F.interpolate and a per-pixel reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pem.inference import to_original_size
from pem.runtime.geometry import padded_size, resize_bilinear, resize_bilinear_numpy, resize_mask_logits

SIZES = [
    ((16, 24), (64, 96)),  # 4x upsampling (mask logits to the padded size)
    ((64, 96), (32, 48)),  # exact 2x reduction (OpenCV switches to area averaging there)
    ((64, 96), (37, 51)),  # non-integer reduction
    ((50, 70), (17, 23)),
    ((33, 47), (100, 9)),  # up on one axis, down on the other
    ((1, 1), (5, 7)),
    ((20, 20), (20, 20)),
]


def reference_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per-pixel loop in float64: sample at ``(i + 0.5) * in / out - 0.5`` clamped to [0, in - 1], two taps."""
    channels, height, width = x.shape
    out = np.zeros((channels, *size))
    for i in range(size[0]):
        sy = max((i + 0.5) * height / size[0] - 0.5, 0.0)
        y0 = min(int(sy), height - 1)
        y1, fy = min(y0 + 1, height - 1), sy - y0
        for j in range(size[1]):
            sx = max((j + 0.5) * width / size[1] - 0.5, 0.0)
            x0 = min(int(sx), width - 1)
            x1, fx = min(x0 + 1, width - 1), sx - x0
            top = (1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1]
            bottom = (1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]
            out[:, i, j] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize(("size_in", "size_out"), SIZES)
def test_resize_matches_reference_and_torch(size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    x = np.random.default_rng(0).standard_normal((3, *size_in)).astype(np.float32) * 10
    reference = reference_resize(x.astype(np.float64), size_out)
    expected = F.interpolate(torch.from_numpy(x)[None], size=size_out, mode="bilinear", align_corners=False)[0]
    for resized in (resize_bilinear(x, size_out), resize_bilinear_numpy(x, size_out)):
        assert resized.dtype == np.float32 and resized.shape == (3, *size_out)
        np.testing.assert_allclose(resized, reference, atol=2e-5, rtol=0)
        # torch computes the source positions in float32: a few 1e-5 relative on reductions
        np.testing.assert_allclose(resized, expected.numpy(), atol=5e-4, rtol=0)


def test_resize_float64_and_many_channels() -> None:
    x = np.random.default_rng(1).standard_normal((600, 9, 13))
    out = resize_bilinear(x, (20, 7))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, resize_bilinear_numpy(x, (20, 7)), atol=1e-9)


def test_resize_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        resize_bilinear(np.zeros((4, 4)), (2, 2))


def test_padded_size() -> None:
    assert padded_size(64, 65, 32) == (64, 96)
    assert padded_size(1, 32, 32) == (32, 32)


@pytest.mark.parametrize(("resized", "original"), [((64, 85), (48, 64)), ((256, 341), (600, 800)),
                                                  ((100, 100), (100, 100))])
def test_mask_chain_matches_the_torch_reference(resized: tuple[int, int], original: tuple[int, int]) -> None:
    padded = padded_size(*resized, 32)
    masks = np.random.default_rng(2).standard_normal((5, padded[0] // 4, padded[1] // 4)).astype(np.float32) * 8
    expected = to_original_size(torch.from_numpy(masks), padded, resized, original).numpy()
    got = resize_mask_logits(masks, padded, resized, original)
    assert got.shape == (5, *original)
    np.testing.assert_allclose(got, expected, atol=5e-4, rtol=0)
    assert np.mean((got >= 0) == (expected >= 0)) > 0.9999
