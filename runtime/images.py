"""Reading image files into [H, W, 3] uint8 RGB with Pillow.

EXIF orientation is applied. Other layouts are converted, and each conversion is reported as a note: grayscale
(replicated to 3 channels), an alpha channel (dropped), 16-bit samples (scaled to 8 bits, ``round(v / 257)``;
Pillow itself reduces 16-bit colour PNGs to their high bytes, which is reported too), other colour spaces (CMYK,
YCbCr, ... converted by Pillow). Only the first frame of a multi-frame file is read. Every failure (missing file,
not an image, truncated or corrupt data, empty image, too many pixels) is an :class:`ImageReadError` naming the file.

This is the one way pixels come in: ``pem-predict``, ``pem-demo``, ``pem-eval`` and the datasets, INT8 calibration
and its sensitivity search, the parity check and ``pem-bench`` all read files with :func:`read_image`.

Decompression-bomb guard: an image of more than ``max_pixels`` pixels is refused before it is decoded. The limit is
:data:`DEFAULT_MAX_PIXELS` (Pillow's own default, 89,478,485 pixels: a 9459 x 9459 image, about 256 MiB as RGB),
or the ``PEM_MAX_IMAGE_PIXELS`` environment variable, or the ``max_pixels`` argument. Pillow's global limit is
raised to a larger one asked for, so this guard is the one that applies.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pem.runtime.coco_panoptic import PathLike
from pem.runtime.errors import PemError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageRead",
    "ImageReadError",
    "is_image_file",
    "max_image_pixels",
    "read_image",
    "resolve_image_source",
]

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS (1024**3 // 4 // 3)
MAX_PIXELS_ENV = "PEM_MAX_IMAGE_PIXELS"

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


def max_image_pixels() -> int:
    """The pixel limit of :func:`read_image`: ``PEM_MAX_IMAGE_PIXELS`` when set (a positive integer), else
    :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ImageReadError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive number of pixels")
    return value


def resolve_image_source(spec: str) -> Path:
    """``skimage:NAME`` (a photograph shipped with scikit-image, e.g. ``skimage:astronaut.png``) or a file path ->
    the file's path."""
    if not spec.startswith("skimage:"):
        return Path(spec)
    try:
        from skimage.data import data_dir
    except ImportError:
        raise ImageReadError(f"{spec}: needs scikit-image (pip install scikit-image)") from None
    return Path(data_dir) / spec.removeprefix("skimage:")


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


def read_image(path: PathLike, max_pixels: int | None = None) -> ImageRead:
    """Read ``path`` as uint8 [H, W, 3] RGB (module docstring for conversions, errors and the pixel limit;
    ``max_pixels`` None takes :func:`max_image_pixels`)."""
    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            pixels = opened.width * opened.height
            if pixels > limit:
                raise ImageReadError(
                    f"{path}: {opened.height}x{opened.width} = {pixels:,} pixels is over the limit of {limit:,} "
                    f"(a decompression-bomb guard; raise it with {MAX_PIXELS_ENV})"
                )
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
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: over the pixel limit ({exc})") from None
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: truncated or corrupt image ({exc})") from None
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"{path}: empty image of shape {array.shape}")
    return ImageRead(np.ascontiguousarray(array), notes)
