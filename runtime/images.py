"""Reading image files into [H, W, 3] uint8 RGB with Pillow.

EXIF orientation is applied. Other layouts are converted, and each conversion is reported as a note: grayscale
(replicated to 3 channels), an alpha channel (dropped), 16-bit samples (scaled to 8 bits, ``round(v / 257)``;
Pillow itself reduces 16-bit colour PNGs to their high bytes, which is reported too), other colour spaces (CMYK,
YCbCr, ... converted by Pillow). Only the first frame of a multi-frame file is read. Every failure (missing file,
not an image, truncated or corrupt data, empty image) is an :class:`ImageReadError` naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pem.runtime.coco_panoptic import PathLike
from pem.runtime.errors import PemError

__all__ = ["IMAGE_SUFFIXES", "ImageRead", "ImageReadError", "is_image_file", "read_image"]

IMAGE_SUFFIXES = frozenset(Image.registered_extensions())
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_GREY_MODES = {"L", "1", "LA", "La"}
_WIDE_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class ImageReadError(PemError, ValueError):
    """A file that cannot be read as an image."""


@dataclass(frozen=True, eq=False)
class ImageRead:
    """``image`` uint8 [H, W, 3] RGB and the conversions applied to get it."""

    image: np.ndarray
    notes: list[str] = field(default_factory=list)


def is_image_file(path: Path) -> bool:
    """True when the suffix is one Pillow reads."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _raw_mode(image: Image.Image) -> str:
    """The raw mode of the first decoder tile ('' when unknown): tells 16-bit colour PNGs apart."""
    if not image.tile:
        return ""
    args = image.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if isinstance(args, tuple) and args else ""


def _wide_to_uint8(samples: np.ndarray) -> np.ndarray:
    """16/32-bit or float grey levels -> uint8: values up to 255 kept, up to 65535 divided by 257, above that
    scaled so that the maximum becomes 255."""
    samples = np.nan_to_num(samples.astype(np.float64), nan=0.0)
    samples = np.clip(samples, 0, None)
    peak = samples.max(initial=0.0)
    divisor = 1.0 if peak <= 255 else 257.0 if peak <= 65535 else peak / 255.0
    return np.clip(np.rint(samples / divisor), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode in _WIDE_MODES:
        notes.append(f"{'16-bit' if mode.startswith('I;16') else mode + '-mode'} grayscale image converted to 8-bit "
                     "RGB")
        grey = _wide_to_uint8(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        notes.append(f"alpha channel dropped ({mode} image)")
    if mode in _GREY_MODES:
        notes.append(f"grayscale image ({mode}) converted to RGB")
    elif mode not in ("RGB", "RGBA", "RGBa", "P", "PA"):
        notes.append(f"{mode} image converted to RGB")
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def read_image(path: PathLike) -> ImageRead:
    """Read ``path`` as uint8 [H, W, 3] RGB (module docstring for conversions and errors)."""
    path = Path(path)
    notes: list[str] = []
    try:
        with Image.open(path) as opened:
            if ";16" in _raw_mode(opened) and opened.mode == "RGB":
                notes.append("16-bit colour image reduced to 8 bits per channel")
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            array = _to_rgb(oriented, notes)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: truncated or corrupt image ({exc})") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"{path}: empty image of shape {array.shape}")
    return ImageRead(np.ascontiguousarray(array), notes)
