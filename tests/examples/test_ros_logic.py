"""The ROS 2 node's logic without ROS: image messages -> RGB, real predictions -> label images and segment JSON.

``ImageFields`` is our own holder with the fields of ``sensor_msgs/msg/Image``; the predictions are the trained
tiny model's, through the real Predictor on ONNX Runtime.
"""
from __future__ import annotations

import array
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pem.runtime import Predictor, Result
from tests.examples.conftest import EXAMPLES, load_module, scenes

logic = load_module(EXAMPLES / "ros2_node" / "pem_ros_logic.py")


@dataclasses.dataclass
class ImageFields:
    """The fields of ``sensor_msgs/msg/Image`` that carry pixels."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


def message(rgb: np.ndarray, encoding: str, pad: int = 0) -> ImageFields:
    """``rgb`` [H, W, 3] uint8 encoded as ``encoding``, each row followed by ``pad`` bytes of padding."""
    channels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
                "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)]), "mono8": rgb[..., :1]}
    pixels = channels[encoding].reshape(rgb.shape[0], -1)
    rows = np.concatenate([pixels, np.full((rgb.shape[0], pad), 99, np.uint8)], axis=1)
    return ImageFields(rgb.shape[0], rgb.shape[1], encoding, 0, rows.shape[1], rows.tobytes())


def decode_labels(fields: Any) -> np.ndarray:
    """The [H, W] integer array a label-image message holds."""
    dtype = logic.LABEL_DTYPES[fields.encoding]
    assert fields.step % dtype.itemsize == 0
    return np.frombuffer(fields.data, dtype=dtype).reshape(fields.height, fields.step // dtype.itemsize)[
        :, : fields.width]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return scenes(3, (128, 128), seed=11)


@pytest.fixture(scope="module")
def results(example_model: Path, frames: list[np.ndarray]) -> list[Result]:
    """The node's path for each frame: a bgr8 message with padded rows -> RGB -> Predictor."""
    with Predictor(example_model, providers=["cpu"]) as predictor:
        return [predictor(logic.image_to_rgb(message(frame, "bgr8", pad=5))) for frame in frames]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_decode_to_the_same_rgb(frames: list[np.ndarray], encoding: str, pad: int) -> None:
    rgb = logic.image_to_rgb(message(frames[0], encoding, pad))
    assert rgb.dtype == np.uint8 and rgb.shape == (128, 128, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, frames[0])


def test_bgr8_and_rgb8_messages_give_the_same_array(frames: list[np.ndarray]) -> None:
    rgb8 = message(frames[1], "rgb8")
    bgr8 = message(frames[1], "bgr8", pad=1)
    bgr8.data = array.array("B", bgr8.data)  # what rclpy delivers
    np.testing.assert_array_equal(logic.image_to_rgb(bgr8), logic.image_to_rgb(rgb8))


def test_mono8_repeats_the_grey_level(frames: list[np.ndarray]) -> None:
    rgb = logic.image_to_rgb(message(frames[0], "mono8", pad=2))
    np.testing.assert_array_equal(rgb, np.repeat(frames[0][..., :1], 3, axis=2))


def test_unsupported_encoding_is_a_clear_error(frames: list[np.ndarray]) -> None:
    msg = dataclasses.replace(message(frames[0], "rgb8"), encoding="yuv422")
    with pytest.raises(ValueError, match=r"unsupported image encoding 'yuv422' \(supported: rgb8, bgr8, rgba8, "
                                         r"bgra8, mono8\)"):
        logic.image_to_rgb(msg)


def test_short_data_and_short_step_are_clear_errors(frames: list[np.ndarray]) -> None:
    msg = message(frames[0], "bgr8")
    with pytest.raises(ValueError, match=r"bgr8 image 128x128 with step 384 needs 49152 bytes of data, got 49151"):
        logic.image_to_rgb(dataclasses.replace(msg, data=msg.data[:-1]))
    with pytest.raises(ValueError, match=r"step 383 is shorter than a row \(384 bytes\)"):
        logic.image_to_rgb(dataclasses.replace(msg, step=383))


def test_the_frames_hold_things_and_stuff(results: list[Result]) -> None:
    kinds = {segment.isthing for result in results for segment in result.segments}
    assert kinds == {True, False}


@pytest.mark.parametrize("encoding", ["mono16", "32SC1"])
def test_panoptic_label_image_round_trips_to_the_segment_ids(results: list[Result], encoding: str) -> None:
    for result in results:
        fields = logic.label_image(result, "panoptic", encoding)
        itemsize = 2 if encoding == "mono16" else 4
        assert (fields.height, fields.width, fields.encoding) == (128, 128, encoding)
        assert fields.is_bigendian == 0 and fields.step == 128 * itemsize and len(fields.data) == 128 * 128 * itemsize
        np.testing.assert_array_equal(decode_labels(fields), result.panoptic)


def test_semantic_label_image_round_trips_and_matches_the_segments(results: list[Result]) -> None:
    for result in results:
        labels = decode_labels(logic.label_image(result, "semantic", "mono16"))
        np.testing.assert_array_equal(labels, result.semantic)
        for segment in result.segments:
            assert set(np.unique(labels[result.panoptic == segment.id])) == {segment.category_id}


def test_segments_json_areas_are_the_pixel_counts(results: list[Result]) -> None:
    for result in results:
        data = json.loads(logic.segments_json(result, "camera_optical", (1712345678, 250), "panoptic"))
        assert data["frame_id"] == "camera_optical" and data["stamp"] == {"sec": 1712345678, "nanosec": 250}
        assert (data["height"], data["width"], data["labels"]) == (128, 128, "panoptic")
        assert data["preset"] == "synthetic_panoptic_tiny" and data["timings"]["infer_ms"] > 0
        ids, counts = np.unique(result.panoptic[result.panoptic > 0], return_counts=True)
        segments = data["segments"]
        assert [s["id"] for s in segments] == ids.tolist()
        assert [s["area"] for s in segments] == counts.tolist()
        for segment in segments:
            rows, cols = np.nonzero(result.panoptic == segment["id"])
            assert segment["bbox"] == [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1,
                                       int(np.ptp(rows)) + 1]
            info = result.metadata.classes[segment["category_id"]]
            assert (segment["label"], segment["isthing"], segment["dataset_id"]) == (info.name, info.isthing,
                                                                                    info.dataset_id)
            assert 0.0 < segment["score"] <= 1.0


def test_semantic_only_result(results: list[Result]) -> None:
    semantic_only = dataclasses.replace(results[0], panoptic=None, segments=[])
    with pytest.raises(ValueError, match="gives no panoptic map"):
        logic.label_image(semantic_only, "panoptic")
    segments = json.loads(logic.segments_json(semantic_only, kind="semantic"))["segments"]
    ids, counts = np.unique(results[0].semantic[results[0].semantic != 255], return_counts=True)  # 255: void
    assert {s["category_id"]: s["area"] for s in segments} == dict(zip(ids.tolist(), counts.tolist()))


def test_label_image_rejects_bad_requests(results: list[Result]) -> None:
    with pytest.raises(ValueError, match="unknown label encoding 'mono8'"):
        logic.label_image(results[0], "panoptic", "mono8")
    with pytest.raises(ValueError, match="unknown label kind 'instance'"):
        logic.label_image(results[0], "instance")
    shifted = dataclasses.replace(results[0], panoptic=results[0].panoptic + 70_000)
    with pytest.raises(ValueError, match="does not fit mono16"):
        logic.label_image(shifted, "panoptic", "mono16")
    np.testing.assert_array_equal(decode_labels(logic.label_image(shifted, "panoptic", "32SC1")), shifted.panoptic)


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is not None, reason="ROS 2 is installed here")
def test_node_without_ros_says_what_is_missing() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "ros2_node" / "pem_ros2_node.py")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pem_ros2_node needs ROS 2's Python packages (rclpy, sensor_msgs, std_msgs): install ROS 2 and source "
        "/opt/ros/<distro>/setup.bash, then run it again (No module named 'rclpy')"]
