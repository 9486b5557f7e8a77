"""The ``metadata_props`` an exported graph carries (keys from ``pem.runtime.contract``): build, write, read."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from typing import TYPE_CHECKING

from pem import __version__
from pem.config import PEMConfig
from pem.runtime.contract import (
    FORMAT,
    FUSION_ORIGINAL,
    META_CLASSES,
    META_FORMAT,
    META_FUSION_SIZE,
    META_HEAD,
    META_INPUT_LAYOUT,
    META_NORMALIZATION,
    META_PRECISION,
    META_PRESET,
    META_PRODUCER,
    META_SHAPES,
    META_TEST,
)

if TYPE_CHECKING:
    import onnx

PRODUCER_PACKAGES = ("torch", "torchvision", "onnx", "onnxscript", "onnxslim")


def producer_versions(opset: int) -> dict[str, str | int]:
    """Versions of pem and of the installed packages that shape the graph, and the default-domain opset."""
    versions: dict[str, str | int] = {"pem": __version__}
    for package in PRODUCER_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["opset"] = opset
    return versions


def graph_metadata(
    config: PEMConfig,
    head: str,
    input_layout: str,
    shapes: dict[str, int | str],
    opset: int,
    object_mask_threshold: float | None = None,
    overlap_threshold: float | None = None,
    fusion_size: str = FUSION_ORIGINAL,
) -> dict[str, str]:
    """The string metadata of a graph exported from ``config``.

    ``shapes`` is ``{"batch", "height", "width"}`` with ints or ``"dynamic"``. The thresholds (None = the
    preset's) are stored in ``pem.test`` as the values the graph and the host use. ``fusion_size`` is one of
    ``pem.runtime.contract.FUSION_SIZES``.
    """
    test = dataclasses.asdict(config.test)
    if object_mask_threshold is not None:
        test["object_mask_threshold"] = float(object_mask_threshold)
    if overlap_threshold is not None:
        test["overlap_threshold"] = float(overlap_threshold)
    classes = [
        {"id": c.id, "name": c.name, "isthing": c.isthing, "color": list(c.color), "dataset_id": c.dataset_id}
        for c in config.categories
    ]
    normalization = {
        "mean": list(config.pixel_mean), "std": list(config.pixel_std), "size_divisibility": config.size_divisibility
    }
    return {
        META_FORMAT: FORMAT,
        META_PRESET: config.name,
        META_HEAD: head,
        META_INPUT_LAYOUT: input_layout,
        META_FUSION_SIZE: fusion_size,
        META_CLASSES: json.dumps(classes),
        META_TEST: json.dumps(test),
        META_NORMALIZATION: json.dumps(normalization),
        META_PRECISION: "fp32",
        META_SHAPES: json.dumps(shapes),
        META_PRODUCER: json.dumps(producer_versions(opset)),
    }


def write_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Set ``props`` in ``model.metadata_props``, replacing entries with the same keys and keeping the others."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """``model.metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}
