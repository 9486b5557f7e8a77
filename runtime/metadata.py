"""The metadata an exported PEM artifact carries (keys in :mod:`pem.runtime.contract`): written and read here.

The writer (:func:`graph_metadata`, :func:`write_metadata`) and the reader (:meth:`ArtifactMetadata.from_props`) sit
together so the two sides of the contract cannot drift. ONNX graphs carry it as ``metadata_props``, engines in the
JSON manifest beside them. Every problem is an :class:`ArtifactError` (a ValueError) naming the artifact and key.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pem.runtime.contract import (
    FORMAT,
    FUSION_ORIGINAL,
    FUSION_SIZES,
    HEADS,
    INPUT_LAYOUTS,
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
from pem.runtime.errors import PemError

if TYPE_CHECKING:
    import onnx

__all__ = ["ArtifactError", "ArtifactMetadata", "ClassInfo", "ModelDescription", "graph_metadata", "read_metadata",
           "write_metadata"]


class ArtifactError(PemError, ValueError):
    """An artifact that cannot be used: unknown format, missing or malformed metadata, wrong preset or I/O."""


@dataclass(frozen=True)
class ClassInfo:
    """One class: ``id`` the contiguous index in [0, K) the model predicts, ``dataset_id`` the dataset's own id
    (COCO-panoptic category id, Cityscapes label id), ``color`` RGB 0..255."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]
    dataset_id: int


@dataclass(frozen=True)
class ArtifactMetadata:
    """What the runtime needs from an artifact's metadata.

    ``static_size`` is the (height, width) a graph with a fixed spatial input size takes, None when dynamic.
    ``panoptic_on`` says whether the preset fuses panoptic output (a ``raw`` head then yields both views).
    ``fusion_size``: the resolution of the fusion (``pem.runtime.contract.FUSION_SIZES``; ``original`` when the
    artifact does not record it).
    """

    source: str
    preset: str
    head: str
    input_layout: str
    classes: tuple[ClassInfo, ...]
    min_size: int
    max_size: int
    object_mask_threshold: float
    overlap_threshold: float
    panoptic_on: bool
    size_divisibility: int
    static_size: tuple[int, int] | None
    precision: str
    fusion_size: str = FUSION_ORIGINAL

    @property
    def num_classes(self) -> int:
        """K, the number of classes (the graph's class logits have K + 1 columns)."""
        return len(self.classes)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        """Contiguous ids of the thing classes."""
        return tuple(c.id for c in self.classes if c.isthing)

    @property
    def class_colors(self) -> list[tuple[int, int, int]]:
        """RGB colour of each contiguous class id."""
        return [c.color for c in self.classes]

    @property
    def has_panoptic(self) -> bool:
        """True when results carry a panoptic map (``panoptic`` head, or ``raw`` head of a panoptic preset)."""
        return self.head == "panoptic" or (self.head == "raw" and self.panoptic_on)

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> ArtifactMetadata:
        """Parse the string key/value metadata of the artifact called ``source`` (a path, for messages)."""
        fmt = props.get(META_FORMAT)
        if fmt is None:
            raise ArtifactError(
                f"{source} has no PEM metadata ({META_FORMAT!r} is missing): export it with pem-export"
            )
        if fmt != FORMAT:
            raise ArtifactError(f"{source}: unsupported artifact format {fmt!r} (this runtime reads {FORMAT!r})")
        head = _text(props, META_HEAD, source)
        if head not in HEADS:
            raise ArtifactError(f"{source}: unknown head {head!r} under {META_HEAD!r} (known: {', '.join(HEADS)})")
        layout = _text(props, META_INPUT_LAYOUT, source)
        if layout not in INPUT_LAYOUTS:
            raise ArtifactError(
                f"{source}: unknown input layout {layout!r} under {META_INPUT_LAYOUT!r} "
                f"(known: {', '.join(INPUT_LAYOUTS)})"
            )
        test = _json_object(props, META_TEST, source)
        normalization = _json_object(props, META_NORMALIZATION, source)
        shapes = _json_object(props, META_SHAPES, source) if META_SHAPES in props else {}
        panoptic_on = _field(test, "panoptic_on", bool, META_TEST, source, default=head == "panoptic")
        fusion_size = props.get(META_FUSION_SIZE, FUSION_ORIGINAL)
        if fusion_size not in FUSION_SIZES:
            raise ArtifactError(f"{source}: unknown fusion size {fusion_size!r} under {META_FUSION_SIZE!r} "
                                f"(known: {', '.join(FUSION_SIZES)})")
        return cls(
            source=source,
            preset=_text(props, META_PRESET, source),
            head=head,
            input_layout=layout,
            classes=_classes(props, source),
            min_size=_field(test, "min_size", int, META_TEST, source),
            max_size=_field(test, "max_size", int, META_TEST, source),
            object_mask_threshold=_field(test, "object_mask_threshold", float, META_TEST, source, default=0.8),
            overlap_threshold=_field(test, "overlap_threshold", float, META_TEST, source, default=0.8),
            panoptic_on=panoptic_on,
            size_divisibility=_field(normalization, "size_divisibility", int, META_NORMALIZATION, source, default=32),
            static_size=_static_size(shapes),
            precision=props.get(META_PRECISION, "fp32"),
            fusion_size=fusion_size,
        )


def _text(props: Mapping[str, str], key: str, source: str) -> str:
    value = props.get(key)
    if not value:
        raise ArtifactError(f"{source}: metadata key {key!r} is missing")
    return value


def _json_object(props: Mapping[str, str], key: str, source: str) -> Any:
    text = _text(props, key, source)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{source}: metadata {key!r} is not valid JSON: {exc}") from None


def _field(data: Any, name: str, kind: type, key: str, source: str, default: Any = None) -> Any:
    """``data[name]`` checked to be of ``kind`` (ints accepted for floats); ``default`` when absent and not None."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: metadata {key!r} must be a JSON object, got {type(data).__name__}")
    if name not in data:
        if default is None:
            raise ArtifactError(f"{source}: metadata {key!r} lacks {name!r}")
        return default
    value = data[name]
    accepted = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, accepted):
        raise ArtifactError(f"{source}: metadata {key!r}[{name!r}] must be {kind.__name__}, got {value!r}")
    return kind(value)


def _classes(props: Mapping[str, str], source: str) -> tuple[ClassInfo, ...]:
    rows = _json_object(props, META_CLASSES, source)
    if not isinstance(rows, list) or not rows:
        raise ArtifactError(f"{source}: metadata {META_CLASSES!r} must be a non-empty list of classes")
    classes = []
    for index, row in enumerate(rows):
        try:
            color = tuple(int(v) for v in row["color"])
            info = ClassInfo(int(row["id"]), str(row["name"]), bool(row["isthing"]), color, int(row["dataset_id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{source}: {META_CLASSES!r}[{index}] needs id, name, isthing, color (RGB) and dataset_id: {exc!r}"
            ) from None
        if info.id != index or len(color) != 3 or not all(0 <= v <= 255 for v in color):
            raise ArtifactError(f"{source}: {META_CLASSES!r}[{index}] is malformed: {row!r}")
        classes.append(info)
    return tuple(classes)


def _static_size(shapes: Any) -> tuple[int, int] | None:
    """(height, width) when both are fixed integers in ``pem.shapes``, else None."""
    if not isinstance(shapes, dict):
        return None
    height, width = shapes.get("height"), shapes.get("width")
    if isinstance(height, int) and isinstance(width, int) and not isinstance(height, bool):
        return height, width
    return None


PRODUCER_PACKAGES = ("torch", "torchvision", "onnx", "onnxscript", "onnxslim")


def producer_versions(opset: int) -> dict[str, str | int]:
    """Versions of pem and of the installed packages that shape the graph, and the default-domain opset."""
    from pem import __version__

    versions: dict[str, str | int] = {"pem": __version__}
    for package in PRODUCER_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["opset"] = opset
    return versions


class ModelDescription(Protocol):
    """What the metadata writer reads from a model's configuration (``pem.config.PEMConfig`` is one)."""

    name: str
    categories: Sequence[ClassInfo]
    pixel_mean: Sequence[float]
    pixel_std: Sequence[float]
    size_divisibility: int

    @property
    def test(self) -> Any:
        """A dataclass of the test-time settings (resize rules, fusion thresholds)."""


def graph_metadata(
    config: ModelDescription,
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
