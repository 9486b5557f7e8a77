"""COCO-panoptic files in numpy and Pillow: id <-> RGB colours, PNG read/write, the JSON index.

A COCO-panoptic PNG is an RGB image whose colour encodes the segment id as ``id = R + 256 * G + 256**2 * B``;
id 0 is void. Ids therefore lie in [0, 2**24). The JSON holds ``annotations`` (one per image: ``image_id``,
``file_name`` of the PNG, ``segments_info`` with ``id``, ``category_id`` and, for ground truth, ``iscrowd``) and
``categories`` (``id``, ``isthing``, ...).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pem.runtime.errors import PemError

__all__ = [
    "MAX_SEGMENT_ID",
    "PanopticFileError",
    "PathLike",
    "id2rgb",
    "load_panoptic_json",
    "read_panoptic_png",
    "rgb2id",
    "write_json_atomic",
    "write_panoptic_png",
]

MAX_SEGMENT_ID = 256**3 - 1

PathLike = str | os.PathLike[str]


class PanopticFileError(PemError, ValueError):
    """A COCO-panoptic PNG or JSON that is missing, unreadable or malformed; the message names the file."""


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids, integer [...] in [0, 2**24), to colours uint8 [..., 3] with ``id = R + 256 G + 256**2 B``."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"segment ids must be an integer array, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise ValueError(f"segment ids must lie in [0, {MAX_SEGMENT_ID}], got [{ids.min()}, {ids.max()}]")
    ids = ids.astype(np.int64)
    return np.stack([ids & 0xFF, (ids >> 8) & 0xFF, (ids >> 16) & 0xFF], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Colours uint8 [..., 3] to segment ids int64 [...] in [0, 2**24), ``id = R + 256 G + 256**2 B``."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"expected a uint8 array [..., 3], got dtype {rgb.dtype} shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def _read_umask() -> int:
    """The process umask (read once, at import: changing it is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def process_umask() -> int:
    """The process umask, as read at import."""
    return _UMASK


def write_atomic(path: PathLike, write: Callable[[Any], None], suffix: str) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path`` in one step."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_panoptic_png(path: PathLike, ids: np.ndarray) -> None:
    """Write segment ids, integer [H, W] in [0, 2**24), as a COCO-panoptic RGB PNG (atomically; creates folders)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"segment ids must be [H, W], got shape {ids.shape}")
    image = Image.fromarray(id2rgb(ids))
    write_atomic(path, lambda handle: image.save(handle, format="PNG"), ".png")


def read_panoptic_png(path: PathLike) -> np.ndarray:
    """Read a COCO-panoptic PNG into segment ids int64 [H, W]; ValueError naming the file if it is missing,
    unreadable or not an RGB image."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            rgb = np.asarray(image) if mode == "RGB" else None
    except FileNotFoundError as exc:
        raise PanopticFileError(f"panoptic PNG not found: {path}") from exc
    except IsADirectoryError as exc:
        raise PanopticFileError(f"panoptic PNG is a folder, not a file: {path}") from exc
    except Exception as exc:
        raise PanopticFileError(f"cannot read panoptic PNG {path}: {exc}") from exc
    if rgb is None:
        raise PanopticFileError(f"panoptic PNG {path} must be an RGB image, got mode {mode!r}")
    return rgb2id(rgb)


def _check_list(data: dict[str, Any], key: str, path: PathLike) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise PanopticFileError(f"{path}: expected a list under {key!r}, got {type(value).__name__}")
    return value


def _check_annotation(ann: Any, index: int, path: PathLike) -> None:
    if not isinstance(ann, dict):
        raise PanopticFileError(f"{path}: annotations[{index}] is not an object")
    for key in ("image_id", "file_name", "segments_info"):
        if key not in ann:
            raise PanopticFileError(f"{path}: annotations[{index}] has no {key!r}")
    if not isinstance(ann["segments_info"], list):
        raise PanopticFileError(f"{path}: annotations[{index}]['segments_info'] is not a list")
    for segment in ann["segments_info"]:
        if not isinstance(segment, dict) or "id" not in segment or "category_id" not in segment:
            raise PanopticFileError(
                f"{path}: annotations[{index}] (image_id {ann['image_id']!r}) has a segment without 'id' and "
                f"'category_id': {segment!r}"
            )


def load_panoptic_json(path: PathLike, require_categories: bool = True) -> dict[str, Any]:
    """Load a COCO-panoptic JSON and check its structure: ``annotations`` (each with ``image_id``, ``file_name``
    and ``segments_info`` whose entries have ``id`` and ``category_id``) and, unless ``require_categories`` is
    False (prediction files), ``categories`` (each with ``id`` and ``isthing``). Errors are ValueErrors naming the
    file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError as exc:
        raise PanopticFileError(f"panoptic JSON not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise PanopticFileError(f"{path} is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PanopticFileError(f"cannot read panoptic JSON {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PanopticFileError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    for index, ann in enumerate(_check_list(data, "annotations", path)):
        _check_annotation(ann, index, path)
    if require_categories:
        for index, category in enumerate(_check_list(data, "categories", path)):
            if not isinstance(category, dict) or "id" not in category or "isthing" not in category:
                raise PanopticFileError(f"{path}: categories[{index}] needs 'id' and 'isthing', got {category!r}")
    return data


def write_json_atomic(path: PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (strict: no NaN/inf) atomically; creates missing folders."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), ".json")
