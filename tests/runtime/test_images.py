"""Image files -> uint8 RGB: conversions with notes, EXIF orientation, and errors naming the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pem.runtime.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image


def test_rgb_is_read_as_is(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    read = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(read.image, rgb)
    assert read.notes == []


def test_conversions_are_noted(tmp_path: Path) -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(grey).save(tmp_path / "grey.png")
    read = read_image(tmp_path / "grey.png")
    np.testing.assert_array_equal(read.image, np.repeat(grey[..., None], 3, axis=2))
    assert "grayscale" in read.notes[0]

    rgba = np.full((4, 5, 4), 100, dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    read = read_image(tmp_path / "rgba.png")
    assert read.image.shape == (4, 5, 3) and "alpha channel dropped" in read.notes[0]

    wide = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    cv2.imwrite(str(tmp_path / "grey16.png"), wide)
    read = read_image(tmp_path / "grey16.png")
    np.testing.assert_array_equal(read.image[..., 0], np.rint(wide / 257).astype(np.uint8))
    assert "16-bit grayscale" in read.notes[0]

    cv2.imwrite(str(tmp_path / "rgb16.png"), np.full((4, 5, 3), 40000, dtype=np.uint16))
    read = read_image(tmp_path / "rgb16.png")
    assert read.image.dtype == np.uint8 and read.image.max() == 40000 >> 8
    assert "16-bit colour" in read.notes[0]

    Image.fromarray(np.full((4, 5, 3), 90, np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    read = read_image(tmp_path / "cmyk.jpg")
    assert read.image.shape == (4, 5, 3) and "CMYK" in read.notes[0]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = np.zeros((10, 30, 3), dtype=np.uint8)
    image[:, :5] = 255  # a white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 90 degrees counter-clockwise: viewers rotate it clockwise
    Image.fromarray(image).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    read = read_image(tmp_path / "rotated.jpg")
    assert read.image.shape == (30, 10, 3)
    assert read.image[:5].mean() > 200 and read.image[-5:].mean() < 50


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    cases = {"text.jpg": "not an image", "empty.png": "not an image", "truncated.png": "truncated or corrupt",
             "missing.png": "file not found", ".": "is a folder"}
    for name, message in cases.items():
        with pytest.raises(ImageReadError, match=message) as info:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_pixel_limit_guards_against_decompression_bombs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(path)
    assert DEFAULT_MAX_PIXELS == 89_478_485  # Pillow's own default limit
    with pytest.raises(ImageReadError, match=r"a.png: 20x30 = 600 pixels is over the limit of 599 .*PEM_MAX_IMAGE"):
        read_image(path, max_pixels=599)
    assert read_image(path, max_pixels=600).image.shape == (20, 30, 3)
    monkeypatch.setenv("PEM_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ImageReadError, match="over the limit of 100 "):
        read_image(path)
    monkeypatch.setenv("PEM_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageReadError, match="PEM_MAX_IMAGE_PIXELS='lots': expected a positive number"):
        read_image(path)
