"""Host-side geometry of the official test-time chain: bilinear resizes of [C, H, W] float maps.

``resize_bilinear`` matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` without
antialiasing: output pixel ``i`` samples the input at ``(i + 0.5) * in / out - 0.5`` (clamped at 0) from its two
neighbours, upsampling and downsampling alike. OpenCV's ``cv2.resize(INTER_LINEAR)`` uses the same half-pixel
rule and the same two taps (for an exact 2x reduction it switches to area averaging, which is the same
average of the same two pixels), so it is used when OpenCV is installed; a numpy version of the same rule runs
otherwise. Both compute the sample positions in double precision; torch computes the scale in float32, so they
differ from torch by float rounding only (about 1e-5 relative on downsampling).
"""
from __future__ import annotations

import numpy as np

__all__ = ["padded_size", "resize_bilinear", "resize_bilinear_numpy", "resize_mask_logits"]


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """(height, width) rounded up to a multiple of ``divisor`` (the graph's zero padding)."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def _axis_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices i0, i1 int64 [size_out] and weight of i1 float64 [size_out] for one axis."""
    src = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    i1 = np.minimum(i0 + 1, size_in - 1)
    return i0, i1, src - i0


def resize_bilinear_numpy(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[C, H, W] float -> [C, h, w] in the same dtype, the torch bilinear rule in numpy (module docstring)."""
    out_h, out_w = size
    dtype = x.dtype
    y0, y1, wy = _axis_taps(x.shape[1], out_h)
    wy = wy.astype(dtype)[None, :, None]
    rows = x[:, y0, :] * (1 - wy) + x[:, y1, :] * wy
    x0, x1, wx = _axis_taps(x.shape[2], out_w)
    wx = wx.astype(dtype)[None, None, :]
    return (rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx).astype(dtype, copy=False)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[C, H, W] float32/float64 -> [C, h, w] (same dtype), torch's bilinear rule; OpenCV when installed."""
    if x.ndim != 3:
        raise ValueError(f"expected [C, H, W], got shape {x.shape}")
    if tuple(x.shape[1:]) == tuple(size):
        return x
    try:
        import cv2
    except ImportError:
        return resize_bilinear_numpy(x, size)
    out = np.empty((x.shape[0], *size), dtype=x.dtype)
    for channel, plane in enumerate(x):
        out[channel] = cv2.resize(plane, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out


def resize_mask_logits(
    masks: np.ndarray, padded: tuple[int, int], image_size: tuple[int, int], output_size: tuple[int, int]
) -> np.ndarray:
    """[C, h', w'] maps at the graph's mask stride -> [C, H0, W0]: upsample to the padded input size, crop to the
    resized image, resize to the original size (both bilinear, the official ``sem_seg_postprocess`` chain)."""
    upsampled = resize_bilinear(masks, padded)
    cropped = np.ascontiguousarray(upsampled[:, : image_size[0], : image_size[1]])
    return resize_bilinear(cropped, output_size)
