"""What the PEM ROS 2 node computes, without ROS: image message -> RGB array, Result -> label image and JSON.

An "image message" is any object with the fields of ``sensor_msgs/msg/Image`` (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``), so this module is tested with a plain dataclass and imports numpy only.
``data`` is anything exposing the buffer protocol: ``array.array('B')`` as rclpy delivers it, bytes, bytearray.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from pem.runtime import Result

__all__ = ["CHANNELS", "LABEL_DTYPES", "LABEL_KINDS", "ImageMessage", "LabelImage", "image_to_rgb", "label_image",
           "segments_json"]

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
LABEL_DTYPES = {"mono16": np.dtype("<u2"), "32SC1": np.dtype("<i4")}
LABEL_KINDS = ("panoptic", "semantic")


class ImageMessage(Protocol):
    """The fields of ``sensor_msgs/msg/Image`` this module reads."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


@dataclass(frozen=True)
class LabelImage:
    """The fields of a ``sensor_msgs/msg/Image`` holding one integer label per pixel, little-endian."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def image_to_rgb(msg: ImageMessage) -> np.ndarray:
    """uint8 [H, W, 3] RGB from an rgb8, bgr8, rgba8, bgra8 or mono8 message (alpha dropped, grey repeated).

    Rows may be padded (``step`` > width * channels). Raises ValueError for another encoding, a ``step`` shorter
    than a row, or ``data`` whose size is not ``height * step``.
    """
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(CHANNELS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * channels
    if step < row:
        raise ValueError(f"{msg.encoding} image of width {width}: step {step} is shorter than a row ({row} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != height * step:
        raise ValueError(f"{msg.encoding} image {width}x{height} with step {step} needs {height * step} bytes of "
                         f"data, got {data.size}")
    pixels = data.reshape(height, step)[:, :row].reshape(height, width, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    order = [2, 1, 0] if msg.encoding.startswith("bgr") else [0, 1, 2]
    return np.ascontiguousarray(pixels[..., order])


def label_image(result: Result, kind: str = "panoptic", encoding: str = "mono16") -> LabelImage:
    """The result's ``kind`` map as label-image fields.

    ``panoptic``: segment ids (0 void), the ``id`` of the JSON segments; ``semantic``: the model's contiguous class
    ids in [0, K) (255 void), the JSON ``category_id``. ``encoding``: ``mono16`` (uint16) or ``32SC1`` (int32).
    Raises ValueError for an unknown kind or encoding, a panoptic map the artifact does not give, or labels that
    do not fit the encoding.
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r} (use {' or '.join(LABEL_KINDS)})")
    dtype = LABEL_DTYPES.get(encoding)
    if dtype is None:
        raise ValueError(f"unknown label encoding {encoding!r} (use {' or '.join(LABEL_DTYPES)})")
    labels = result.panoptic if kind == "panoptic" else result.semantic
    if labels is None:
        raise ValueError(f"{result.metadata.source} gives no panoptic map (head {result.metadata.head!r}); "
                         "publish semantic labels instead")
    if labels.max(initial=0) > np.iinfo(dtype).max:
        raise ValueError(f"label {int(labels.max())} does not fit {encoding}")
    height, width = labels.shape
    data = np.ascontiguousarray(labels, dtype=dtype).tobytes()
    return LabelImage(height, width, encoding, 0, width * dtype.itemsize, data)


def segments_json(result: Result, frame_id: str = "", stamp: tuple[int, int] = (0, 0), kind: str = "panoptic") -> str:
    """The segments of ``result`` as a JSON object string.

    Keys: ``frame_id`` and ``stamp`` ({sec, nanosec}) of the input image, ``height``, ``width``, ``preset``,
    ``labels`` (``kind``: what the label image holds), ``segments`` (:meth:`Result.summary`: id, label (class
    name), category_id, dataset_id, isthing, area in pixels, score, bbox [x, y, w, h]; per class present, without
    id, score and bbox, for a semantic-only artifact) and ``timings`` in ms.
    """
    height, width = result.semantic.shape
    data = {"frame_id": frame_id, "stamp": {"sec": int(stamp[0]), "nanosec": int(stamp[1])}, "height": height,
            "width": width, "preset": result.metadata.preset, "labels": kind, "segments": result.summary(),
            "timings": {name: round(ms, 3) for name, ms in result.timings.items()}}
    return json.dumps(data)
