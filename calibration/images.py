"""Image folders for calibration and the accuracy search: listing, loading, and proof that sets are disjoint."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pem.runtime.errors import PemError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class CalibrationDataError(PemError, ValueError):
    """A calibration or search image set that cannot be used; the message says why."""


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The images of ``folder`` (its ``images/`` subfolder when it is a COCO-panoptic dataset), sorted by name.

    ``limit`` keeps the first ``limit`` of them. Raises CalibrationDataError for a missing or image-less folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationDataError(f"calibration folder not found: {folder}")
    if (folder / "images").is_dir():
        folder = folder / "images"
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationDataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths[:limit] if limit is not None else paths


def load_rgb(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of ``path`` by ``pem.runtime.images.read_image`` (EXIF orientation applied, as
    ``pem-predict`` reads it); CalibrationDataError names a corrupt or unreadable file."""
    from pem.runtime.images import ImageReadError, read_image

    try:
        return read_image(path).image
    except ImageReadError as error:
        raise CalibrationDataError(f"cannot read calibration image {error}") from None


def content_digest(path: str | Path) -> str:
    """sha256 of the file's bytes (two copies of one photograph under other names are the same image)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def require_disjoint(named_sets: Sequence[tuple[str, Iterable[str | Path]]]) -> None:
    """Raise CalibrationDataError when an image (by content) appears in two of the named sets."""
    seen: dict[str, tuple[str, Path]] = {}
    for set_name, paths in named_sets:
        for path in map(Path, paths):
            digest = content_digest(path)
            if digest in seen and seen[digest][0] != set_name:
                other_set, other_path = seen[digest]
                raise CalibrationDataError(
                    f"the {set_name} images and the {other_set} images must be disjoint: {path} and {other_path} "
                    f"are the same image"
                )
            seen.setdefault(digest, (set_name, path))
