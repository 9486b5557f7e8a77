"""Training augmentation and test resize on hand-made samples: sizes, crops and the category-area constraint,
flip consistency, ColorAugSSD, padding, mask dropping, determinism."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from skimage.color import rgb2hsv

from pem.config import PEMConfig, get_preset
from pem.data import transforms
from pem.data.transforms import (
    TrainTransform,
    choose_crop,
    color_aug_ssd,
    hflip_sample,
    hsv_to_rgb,
    pad_sample,
    resize_and_crop,
    rgb_to_hsv,
)
from tests.data.checks import assert_masks_match_sem_seg

BIG = (10_000, 10_000)


def _sample(height: int, width: int, sem_seg: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """An RGB noise image; sem_seg (default: left half class 2, right half class 5, bottom rows 255) and its
    per-class masks."""
    rng = np.random.default_rng(seed)
    if sem_seg is None:
        sem_seg = np.full((height, width), 2, dtype=np.uint8)
        sem_seg[:, width // 2 :] = 5
        sem_seg[-2:] = 255
    labels = np.array([c for c in np.unique(sem_seg) if c != 255], dtype=np.int64)
    return {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "labels": labels,
        "masks": sem_seg[None] == labels[:, None, None].astype(np.uint8),
        "sem_seg": sem_seg,
        "file_name": "x.jpg",
        "image_id": 7,
    }


def _config(**train: Any) -> PEMConfig:
    config = get_preset("synthetic_panoptic_tiny")
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


@pytest.mark.parametrize(
    ("shape", "short_side", "max_size", "expected"),
    [((100, 200), 50, 1000, (50, 100)), ((100, 400), 100, 200, (50, 200)), ((90, 60), 120, 1000, (180, 120))],
)
def test_resize_shortest_edge(
    shape: tuple[int, int], short_side: int, max_size: int, expected: tuple[int, int]
) -> None:
    out = resize_and_crop(_sample(*shape), short_side, max_size, BIG, np.random.default_rng(0))
    assert out["image"].shape == (*expected, 3) and out["image"].dtype == np.uint8
    assert out["sem_seg"].shape == expected and out["masks"].shape == (2, *expected)
    assert set(np.unique(out["sem_seg"])) == {2, 5, 255}
    assert_masks_match_sem_seg(out)
    assert out["file_name"] == "x.jpg" and out["image_id"] == 7


def test_crop_size_and_small_images() -> None:
    out = resize_and_crop(_sample(64, 64), 64, 1000, (32, 48), np.random.default_rng(1))
    assert out["image"].shape == (32, 48, 3) and out["sem_seg"].shape == (32, 48)
    assert_masks_match_sem_seg(out)
    small = resize_and_crop(_sample(20, 30), 20, 1000, (32, 48), np.random.default_rng(1))
    assert small["image"].shape == (20, 30, 3)
    np.testing.assert_array_equal(small["image"], _sample(20, 30)["image"])


def test_crop_drops_vanished_masks() -> None:
    sem_seg = np.full((64, 64), 1, dtype=np.uint8)
    sem_seg[:, :8] = 4
    dropped = 0
    for seed in range(20):
        out = resize_and_crop(_sample(64, 64, sem_seg), 64, 1000, (64, 32), np.random.default_rng(seed))
        assert_masks_match_sem_seg(out)
        dropped += list(out["labels"]) == [1]
    assert dropped > 0


def test_category_area_constraint() -> None:
    sem_seg = np.zeros((48, 48), dtype=np.uint8)
    sem_seg[:24, :24] = 1  # class 0 covers everything but the top-left corner

    def fraction_ok(window: tuple[int, int, int, int], max_area: float) -> bool:
        y0, x0, h, w = window
        counts = np.bincount(sem_seg[y0 : y0 + h, x0 : x0 + w].ravel(), minlength=2)
        return bool(counts.min() > 0 and counts.max() < counts.sum() * max_area)

    constrained = [choose_crop(sem_seg, (32, 32), np.random.default_rng(s), 0.7) for s in range(50)]
    plain = [choose_crop(sem_seg, (32, 32), np.random.default_rng(s), 1.0) for s in range(50)]
    assert all(w[2:] == (32, 32) for w in constrained + plain)
    assert sum(fraction_ok(w, 0.7) for w in constrained) >= 45
    assert sum(fraction_ok(w, 0.7) for w in plain) <= 25


def test_category_area_constraint_ignores_255() -> None:
    sem_seg = np.full((40, 40), 255, dtype=np.uint8)
    sem_seg[:, :2] = 0
    sem_seg[:, 2:4] = 1  # only two narrow class columns; windows without both are rejected
    windows = [choose_crop(sem_seg, (40, 38), np.random.default_rng(s), 0.8) for s in range(20)]
    assert all(w[1] in (0, 1) for w in windows)  # counting 255 would reject every window and keep the last


def test_hflip_sample() -> None:
    sample = _sample(6, 9)
    flipped = hflip_sample(sample)
    np.testing.assert_array_equal(flipped["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(flipped["sem_seg"], sample["sem_seg"][:, ::-1])
    np.testing.assert_array_equal(flipped["masks"], sample["masks"][:, :, ::-1])
    assert_masks_match_sem_seg(flipped)


def test_train_transform_keeps_image_and_masks_aligned() -> None:
    sample = _sample(64, 64)
    grey = np.where(sample["sem_seg"] == 5, 200, 40).astype(np.uint8)
    sample["image"] = np.repeat(grey[..., None], 3, axis=2)  # grey: saturation and hue cannot move it
    flips = 0
    for seed in range(12):
        out = TrainTransform(_config(min_size_train=(64,), crop_size=(64, 64)), np.random.default_rng(seed))(sample)
        assert_masks_match_sem_seg(out)
        brightness = {int(label): out["image"][mask].mean() for label, mask in zip(out["labels"], out["masks"])}
        assert brightness[2] < brightness[5]
        flips += out["sem_seg"][0, 0] == 5
    assert 0 < flips < 12


def test_color_aug_ssd_dtype_range_determinism() -> None:
    image = _sample(32, 40)["image"]
    outputs = [color_aug_ssd(image, np.random.default_rng(seed)) for seed in range(8)]
    for out in outputs:
        assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(outputs[3], color_aug_ssd(image, np.random.default_rng(3)))
    assert sum(not np.array_equal(out, image) for out in outputs) >= 6
    assert len({out.tobytes() for out in outputs}) >= 6


def test_hsv_matches_skimage_and_round_trips() -> None:
    image = _sample(16, 16)["image"]
    hue, saturation, value = rgb_to_hsv(image)
    reference = rgb2hsv(image)
    hue_error = np.abs(hue / 360 - reference[..., 0])
    np.testing.assert_allclose(np.minimum(hue_error, 1 - hue_error), 0, atol=1e-5)
    np.testing.assert_allclose(saturation, reference[..., 1], atol=1e-5)
    np.testing.assert_allclose(value / 255, reference[..., 2], atol=1e-5)
    np.testing.assert_allclose(hsv_to_rgb(hue, saturation, value), image, atol=1e-3)
    red, green, blue = (np.array([[c]], dtype=np.uint8) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    assert [float(rgb_to_hsv(c)[0][0, 0]) for c in (red, green, blue)] == [0.0, 120.0, 240.0]


def test_pad_sample_values() -> None:
    out = pad_sample(_sample(20, 30), (32, 48))
    assert out["image"].shape == (32, 48, 3) and out["sem_seg"].shape == (32, 48) and out["masks"].shape[1:] == (32, 48)
    assert (out["image"][20:] == 128).all() and (out["image"][:, 30:] == 128).all()
    assert (out["sem_seg"][20:] == 255).all() and (out["sem_seg"][:, 30:] == 255).all()
    assert not out["masks"][:, 20:].any() and not out["masks"][:, :, 30:].any()
    np.testing.assert_array_equal(out["image"][:20, :30], _sample(20, 30)["image"])


def test_train_transform_pads_to_crop_and_is_deterministic() -> None:
    config = _config(min_size_train=(40,), max_size_train=200, crop_size=(64, 64), pad_to_crop=True)
    sample = _sample(40, 50)
    first = TrainTransform(config, np.random.default_rng(11))(sample)
    second = TrainTransform(config, np.random.default_rng(11))(sample)
    assert first["image"].shape == (64, 64, 3) and first["masks"].shape[1:] == (64, 64)
    assert (first["image"][40:] == 128).all() and (first["sem_seg"][40:] == 255).all()
    assert_masks_match_sem_seg(first)
    for key in ("image", "sem_seg", "masks", "labels"):
        np.testing.assert_array_equal(first[key], second[key])


def test_train_transform_on_official_preset() -> None:
    config = get_preset("ade20k_panoptic_r50")  # short side 320..1280 (max 2560), crop 640, padded
    out = TrainTransform(config, np.random.default_rng(0))(_sample(300, 400))
    assert out["image"].shape == (640, 640, 3) and out["image"].dtype == np.uint8
    assert out["masks"].dtype == bool and out["labels"].dtype == np.int64
    assert_masks_match_sem_seg(out)


def test_overlapping_masks_survive_resize() -> None:
    sample = _sample(32, 32)
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, :20], masks[1, 10:] = True, True
    sample.update(labels=np.array([4, 6]), masks=masks)
    out = resize_and_crop(sample, 64, 1000, BIG, np.random.default_rng(0))
    assert out["masks"].shape == (2, 64, 64)
    assert out["masks"][0, :40].all() and out["masks"][1, 20:].all() and (out["masks"].sum(0) == 2).any()


def test_test_transform_resizes_image_only() -> None:
    config = get_preset("synthetic_panoptic_tiny")  # test short side 256, max 512
    sample = _sample(100, 150)
    out = transforms.TestTransform(config)(sample)
    assert out["image"].shape == (256, 384, 3) and out["orig_size"] == (100, 150)
    assert out["sem_seg"] is sample["sem_seg"] and out["masks"] is sample["masks"]
