"""Host-side test-time resize, exactly as the official test mapper does it (detectron2 ResizeShortestEdge).

Images are HxWx3 uint8 RGB. The resize uses Pillow's bilinear filter on uint8, as detectron2's
``ResizeTransform`` does for uint8 images.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def shortest_edge_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Output (height, width): the short side becomes ``min_size`` unless the long side would exceed ``max_size``.

    Same arithmetic as detectron2's ``ResizeShortestEdge.get_output_shape`` (round half up after scaling).
    """
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_shortest_edge(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [h, w, 3] uint8 resized with Pillow bilinear (a copy-free no-op when unchanged)."""
    check_image(image)
    height, width = image.shape[:2]
    new_h, new_w = shortest_edge_size(height, width, min_size, max_size)
    if (new_h, new_w) == (height, width):
        return image
    return resize_to(image, (new_h, new_w))


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [h, w, 3] uint8 at ``size`` = (h, w) with Pillow bilinear (the one host resize of the
    test-time chain; the image itself when the size is unchanged)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is a non-empty [H, W, 3] uint8 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an image of shape [H, W, 3] (3 colour channels), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (0..255), got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
