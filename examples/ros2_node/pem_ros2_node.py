#!/usr/bin/env python3
"""ROS 2 node: PEM segmentation of an image topic with the torch-free runtime.

Subscribes to ``sensor_msgs/Image`` on the ``image_topic`` parameter (default ``image``) with sensor-data QoS
(best effort, keep last 1: frames that arrive while the model runs replace each other, so results stay fresh) and
publishes, with the input's header (stamp, frame_id):

* ``~/labels`` (``sensor_msgs/Image``, ``mono16`` or ``32SC1``): panoptic segment ids (0 void) or semantic class
  ids (255 void), the ``labels`` parameter says which;
* ``~/segments`` (``std_msgs/String``): the segments as JSON (``pem_ros_logic.segments_json``).

Parameters: ``model`` (path of an ONNX file written by pem-export, required), ``image_topic`` (``image``),
``labels`` (``auto``: panoptic when the artifact gives it, else semantic; ``panoptic``; ``semantic``),
``label_encoding`` (``mono16`` or ``32SC1``), ``providers`` (onnxruntime providers, e.g. ``cuda,cpu``; empty =
CUDA when available). Run: ``python3 pem_ros2_node.py --ros-args -p model:=model.onnx -r image:=/camera/image_raw``.
"""
from __future__ import annotations

import array
import sys
from typing import Any

from pem_ros_logic import LABEL_DTYPES, LABEL_KINDS, image_to_rgb, label_image, segments_json

from pem.runtime import Predictor

NODE_NAME = "pem_segmentation"
MISSING_ROS = ("pem_ros2_node needs ROS 2's Python packages (rclpy, sensor_msgs, std_msgs): install ROS 2 and "
               "source /opt/ros/<distro>/setup.bash, then run it again")


class SegmentationRelay:
    """Image in, labels and segments out; ``node`` is an ``rclpy`` node, the message classes are passed in."""

    def __init__(self, node: Any, predictor: Predictor, image_type: type, string_type: type, kind: str,
                 encoding: str, sensor_qos: Any, publish_qos: Any, image_topic: str) -> None:
        self.node = node
        self.predictor = predictor
        self.image_type = image_type
        self.string_type = string_type
        self.kind = kind
        self.encoding = encoding
        self.labels = node.create_publisher(image_type, "~/labels", publish_qos)
        self.segments = node.create_publisher(string_type, "~/segments", publish_qos)
        self.subscription = node.create_subscription(image_type, image_topic, self.on_image, sensor_qos)

    def on_image(self, msg: Any) -> None:
        """Segment one frame and publish both outputs; an undecodable frame is logged (throttled) and skipped."""
        try:
            rgb = image_to_rgb(msg)
        except ValueError as exc:
            self.node.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        result = self.predictor(rgb)
        fields = label_image(result, self.kind, self.encoding)
        out = self.image_type()
        out.header = msg.header
        out.height, out.width, out.encoding = fields.height, fields.width, fields.encoding
        out.is_bigendian, out.step = fields.is_bigendian, fields.step
        out.data = array.array("B", fields.data)  # an array.array skips the per-byte checks of a list
        self.labels.publish(out)
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.segments.publish(self.string_type(data=segments_json(result, msg.header.frame_id, stamp, self.kind)))


def read_parameters(node: Any) -> dict[str, Any]:
    """Declare and check the node's parameters (module docstring); raises ValueError for a bad value."""
    params = {name: node.declare_parameter(name, default).value for name, default in
              (("model", ""), ("image_topic", "image"), ("labels", "auto"), ("label_encoding", "mono16"),
               ("providers", ""))}
    if not params["model"]:
        raise ValueError("set the parameter model (--ros-args -p model:=/path/model.onnx)")
    if params["labels"] not in ("auto", *LABEL_KINDS):
        raise ValueError(f"labels must be auto, {' or '.join(LABEL_KINDS)}, not {params['labels']!r}")
    if params["label_encoding"] not in LABEL_DTYPES:
        raise ValueError(f"label_encoding must be {' or '.join(LABEL_DTYPES)}, not {params['label_encoding']!r}")
    params["providers"] = [p.strip() for p in params["providers"].split(",") if p.strip()] or None
    return params


def open_predictor(params: dict[str, Any]) -> tuple[Predictor, str]:
    """The predictor of ``params["model"]`` and the label kind to publish (``auto`` -> panoptic when the artifact
    gives a panoptic map, else semantic). Raises ValueError when panoptic labels are asked of a semantic-only
    artifact, and what :class:`Predictor` raises for a bad model."""
    predictor = Predictor(params["model"], providers=params["providers"])
    has_panoptic = predictor.metadata.has_panoptic
    if params["labels"] == "panoptic" and not has_panoptic:
        predictor.close()
        raise ValueError(f"{params['model']} gives semantic output only: use labels:=semantic")
    if params["labels"] == "auto":
        return predictor, "panoptic" if has_panoptic else "semantic"
    return predictor, params["labels"]


def main(argv: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or shutdown; 2 when ROS 2 is missing or a parameter or the model is wrong."""
    try:
        import rclpy
        from rclpy.executors import ExternalShutdownException
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
    except ImportError as exc:
        print(f"{MISSING_ROS} ({exc})", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    node = rclpy.create_node(NODE_NAME)
    code = 0
    try:
        params = read_parameters(node)
        predictor, kind = open_predictor(params)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        node.get_logger().error(str(exc))
        code = 2
    else:
        with predictor:
            sensor_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
            SegmentationRelay(node, predictor, Image, String, kind, params["label_encoding"], sensor_qos,
                              QoSProfile(depth=1), params["image_topic"])
            node.get_logger().info(f"{params['model']}: {params['image_topic']} -> ~/labels ({kind}, "
                                   f"{params['label_encoding']}), ~/segments")
            try:
                rclpy.spin(node)
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
    node.destroy_node()
    rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
