"""The official training augmentation and the test resize, on samples of numpy arrays (numpy + Pillow only).

A sample is a dict with ``image`` uint8 [H, W, 3] RGB, ``labels`` int64 [N] contiguous ids, ``masks`` bool
[N, H, W], ``sem_seg`` uint8 [H, W] (contiguous ids, 255 ignore) and any other keys (kept as they are).

Training, in the official order: ResizeShortestEdge ("choice" of short side, Pillow bilinear for the image and
nearest for labels), RandomCrop_CategoryAreaConstraint ("absolute" crop size), ColorAugSSD, horizontal flip with
probability 0.5, then, for ``pad_to_crop`` presets, padding bottom/right to the crop size (image 128, sem_seg 255,
masks False). Masks left empty by the crop are dropped with their labels. All randomness comes from the
``numpy.random.Generator`` given to the transform.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from pem.config import PEMConfig
from pem.runtime.preprocess import resize_shortest_edge, shortest_edge_size

IGNORE_LABEL = 255
IMAGE_PAD_VALUE = 128  # the official mappers pad the uint8 image with 128 before normalization
CROP_TRIES = 10

Sample = dict[str, Any]
Window = tuple[int, int, int, int]  # (y0, x0, height, width)


def resize_labels(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (Pillow) of a label plane uint8 or int32 [H, W] to ``size`` (h, w)."""
    if plane.shape == size:
        return plane
    return np.asarray(Image.fromarray(plane).resize((size[1], size[0]), Image.Resampling.NEAREST))


def _encode_masks(masks: np.ndarray) -> list[np.ndarray]:
    """Masks bool [N, H, W] -> label planes: one int32 plane (0 none, i + 1 mask i) when the masks are disjoint
    (every dataset here gives disjoint masks), else one uint8 plane per mask."""
    index = np.zeros(masks.shape[1:], dtype=np.int32)
    for position, mask in enumerate(masks, start=1):
        np.copyto(index, position, where=mask)
    if np.count_nonzero(index) != np.count_nonzero(masks):  # some pixel lies in two masks
        return [mask.astype(np.uint8) for mask in masks]
    return [index]


def _decode_masks(planes: list[np.ndarray], count: int) -> np.ndarray:
    """Inverse of :func:`_encode_masks`: label planes -> masks bool [count, h, w]."""
    if planes[0].dtype == np.int32:
        return planes[0][None] == np.arange(1, count + 1, dtype=np.int32)[:, None, None]
    return np.stack(planes).astype(bool)


def choose_crop(
    sem_seg: np.ndarray,
    crop_size: tuple[int, int],
    rng: np.random.Generator,
    single_category_max_area: float = 1.0,
    ignore_label: int = IGNORE_LABEL,
) -> Window:
    """A random "absolute" crop window of ``crop_size`` (clipped to the image) over ``sem_seg`` [H, W].

    Below ``single_category_max_area`` 1.0, up to 10 windows are drawn and the first where at least two categories
    (``ignore_label`` not counted) appear and none covers ``single_category_max_area`` or more of the counted
    pixels is taken; if none qualifies, the last one drawn is used (detectron2's
    RandomCrop_CategoryAreaConstraint)."""
    height, width = sem_seg.shape
    crop_h, crop_w = min(crop_size[0], height), min(crop_size[1], width)
    for _ in range(CROP_TRIES):
        y0 = int(rng.integers(height - crop_h + 1))
        x0 = int(rng.integers(width - crop_w + 1))
        if single_category_max_area >= 1.0:
            break
        values, counts = np.unique(sem_seg[y0 : y0 + crop_h, x0 : x0 + crop_w], return_counts=True)
        counts = counts[values != ignore_label]
        if len(counts) > 1 and counts.max() < counts.sum() * single_category_max_area:
            break
    return y0, x0, crop_h, crop_w


def resize_and_crop(
    sample: Sample,
    short_side: int,
    max_size: int,
    crop_size: tuple[int, int],
    rng: np.random.Generator,
    single_category_max_area: float = 1.0,
    ignore_label: int = IGNORE_LABEL,
) -> Sample:
    """Resize so the short side is ``short_side`` (long side at most ``max_size``), then crop a window from
    :func:`choose_crop`. Masks travel as one label plane (so the full-size resize costs one plane, not N) and
    come back at crop size; masks left empty are dropped with their labels."""
    image, labels = sample["image"], sample["labels"]
    size = shortest_edge_size(image.shape[0], image.shape[1], short_side, max_size)
    image = resize_shortest_edge(image, short_side, max_size)
    sem_seg = resize_labels(sample["sem_seg"], size)
    planes = [resize_labels(plane, size) for plane in _encode_masks(sample["masks"])]
    y0, x0, crop_h, crop_w = choose_crop(sem_seg, crop_size, rng, single_category_max_area, ignore_label)
    rows, cols = slice(y0, y0 + crop_h), slice(x0, x0 + crop_w)
    masks = _decode_masks([plane[rows, cols] for plane in planes], len(labels))
    keep = masks.any(axis=(1, 2))
    return {
        **sample,
        "image": np.ascontiguousarray(image[rows, cols]),
        "sem_seg": np.ascontiguousarray(sem_seg[rows, cols]),
        "masks": masks[keep],
        "labels": np.asarray(labels, dtype=np.int64)[keep],
    }


def _affine(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """uint8 -> uint8: ``image * alpha + beta`` clipped to 0..255 and truncated (as the official SSD transform)."""
    return np.clip(image.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB [..., 3] in 0..255 -> float32 hue in degrees [0, 360), saturation [0, 1], value [0, 255]."""
    rgb = image.astype(np.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = np.maximum(np.maximum(red, green), blue)  # channel-wise: much faster than a reduction over axis -1
    chroma = value - np.minimum(np.minimum(red, green), blue)
    safe = np.where(chroma > 0, chroma, np.float32(1))
    hue = np.where(
        value == red,
        60 * (green - blue) / safe,
        np.where(value == green, 120 + 60 * (blue - red) / safe, 240 + 60 * (red - green) / safe),
    )
    hue = np.where(chroma > 0, np.mod(hue, 360), 0).astype(np.float32)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1), 0).astype(np.float32)
    return hue, saturation, value


def hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`: float32 RGB [..., 3] in 0..255."""
    channels = []
    for offset in (5, 3, 1):  # red, green, blue
        k = np.mod(offset + hue / 60, 6)
        channels.append(value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.stack(channels, axis=-1).astype(np.float32)


def color_aug_ssd(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """ColorAugSSD on uint8 RGB [H, W, 3] -> uint8 RGB: brightness, then (contrast, saturation, hue) or
    (saturation, hue, contrast) with even odds; each step applies with probability 0.5.

    Brightness adds U(-32, 32), contrast scales by U(0.5, 1.5) (both clipped and truncated to uint8).
    Saturation scales S by U(0.5, 1.5) (clipped to 1) and hue adds an integer in [-18, 18] OpenCV units (2 degrees
    each, wrapping); both happen in one float RGB -> HSV -> RGB round trip, rounded back to uint8."""

    def contrast(img: np.ndarray) -> np.ndarray:
        return _affine(img, alpha=rng.uniform(*contrast_range)) if rng.integers(2) else img

    def saturation_hue(img: np.ndarray) -> np.ndarray:
        scale = rng.uniform(*saturation_range) if rng.integers(2) else None
        shift = int(rng.integers(-hue_delta, hue_delta + 1)) if rng.integers(2) else None
        if scale is None and shift is None:
            return img
        hue, sat, val = rgb_to_hsv(img)
        if scale is not None:
            sat = np.clip(sat * np.float32(scale), 0, 1)
        if shift is not None:
            hue = np.mod(hue + np.float32(2 * shift), 360)
        return np.clip(np.rint(hsv_to_rgb(hue, sat, val)), 0, 255).astype(np.uint8)

    if rng.integers(2):
        image = _affine(image, beta=rng.uniform(-brightness_delta, brightness_delta))
    if rng.integers(2):
        return saturation_hue(contrast(image))
    return contrast(saturation_hue(image))


def hflip_sample(sample: Sample) -> Sample:
    """Mirror image [H, W, 3], sem_seg [H, W] and masks [N, H, W] left-right."""
    return {
        **sample,
        "image": np.ascontiguousarray(sample["image"][:, ::-1]),
        "sem_seg": np.ascontiguousarray(sample["sem_seg"][:, ::-1]),
        "masks": np.ascontiguousarray(sample["masks"][:, :, ::-1]),
    }


def pad_sample(
    sample: Sample, size: tuple[int, int], image_value: int = IMAGE_PAD_VALUE, ignore_label: int = IGNORE_LABEL
) -> Sample:
    """Pad bottom/right to at least ``size`` (h, w): image with ``image_value``, sem_seg with ``ignore_label``,
    masks with False."""
    height, width = sample["sem_seg"].shape
    pad_h, pad_w = max(0, size[0] - height), max(0, size[1] - width)
    if not pad_h and not pad_w:
        return sample
    return {
        **sample,
        "image": np.pad(sample["image"], ((0, pad_h), (0, pad_w), (0, 0)), constant_values=image_value),
        "sem_seg": np.pad(sample["sem_seg"], ((0, pad_h), (0, pad_w)), constant_values=ignore_label),
        "masks": np.pad(sample["masks"], ((0, 0), (0, pad_h), (0, pad_w)), constant_values=False),
    }


class TrainTransform:
    """The official training augmentation of a preset (``config.train``), drawing from ``rng``.

    ``single_category_max_area`` is 1.0 in every official config (a plain random crop)."""

    def __init__(
        self,
        config: PEMConfig,
        rng: np.random.Generator,
        single_category_max_area: float = 1.0,
        ignore_label: int = IGNORE_LABEL,
    ) -> None:
        self.train = config.train
        self.rng = rng
        self.single_category_max_area = single_category_max_area
        self.ignore_label = ignore_label

    def __call__(self, sample: Sample) -> Sample:
        """Sample at source size -> sample of at most crop size (exactly crop size with ``pad_to_crop``)."""
        train = self.train
        short_side = int(self.rng.choice(train.min_size_train))
        sample = resize_and_crop(
            sample, short_side, train.max_size_train, train.crop_size, self.rng, self.single_category_max_area,
            self.ignore_label,
        )
        sample = {**sample, "image": color_aug_ssd(sample["image"], self.rng)}
        if self.rng.random() < 0.5:
            sample = hflip_sample(sample)
        if train.pad_to_crop:
            sample = pad_sample(sample, train.crop_size, ignore_label=self.ignore_label)
        return sample


class TestTransform:
    """The official test resize of a preset (``config.test`` min/max size) on the image only.

    Targets stay at the source size, where the official evaluation compares; ``orig_size`` (H, W) records it."""

    def __init__(self, config: PEMConfig) -> None:
        self.min_size = config.test.min_size
        self.max_size = config.test.max_size

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        return {
            **sample,
            "image": resize_shortest_edge(image, self.min_size, self.max_size),
            "orig_size": (image.shape[0], image.shape[1]),
        }
