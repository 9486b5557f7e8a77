"""PEM -> ONNX: dynamo export of the wrapper, the custom op's function, simplification, metadata, atomic save.

Deformable convolution becomes the standard ``DeformConv`` (opset >= 19, via onnxscript's mapping of
``torchvision::deform_conv2d``); the prototype gather becomes ``pem::PrototypeGather`` with a model-local function.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pem.export._deps import require
from pem.export.custom_ops import attach_local_functions
from pem.export.errors import ExportError
from pem.export.wrapper import ExportWrapper
from pem.modeling.pem_model import PEM
from pem.ops.deform_conv import deform_conv2d_backend
from pem.runtime.contract import (
    FUSION_ORIGINAL,
    FUSION_SIZES,
    HEADS,
    IMAGE_AXES,
    IMAGE_INPUTS,
    INPUT_LAYOUTS,
    INPUT_ORIG_SIZE,
    LAYOUT_UINT8_NHWC,
    OUTPUTS,
    SCOPE_SEPARATOR,
)
from pem.runtime.metadata import graph_metadata, write_metadata

if TYPE_CHECKING:
    import onnx

MIN_OPSET = 19  # DeformConv
# names of the free dimensions: image batch/height/width, and the original size (from orig_size's values)
DIMENSION_NAMES = ("batch", "height", "width")
ORIGINAL_DIMENSION_NAMES = ("orig_height", "orig_width")
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


@dataclass(frozen=True)
class ExportOptions:
    """What to export.

    ``imgsz`` (h, w) is the input size of a static graph and the example size of a dynamic one; ``batch`` is the
    static batch size (a dynamic graph takes any). ``dynamic`` frees batch, height and width; ``dynamic_batch``
    frees the batch only (height and width stay ``imgsz``: the graph a server's dynamic batching and TensorRT batch
    profiles want, without resizing every frame to a free size).

    ``object_mask_threshold`` overrides the preset's panoptic keep threshold (baked into a panoptic graph) and
    ``overlap_threshold`` the host's overlap rule; both are stored in the metadata. ``simplify`` runs onnxslim.
    ``fusion_size`` (``pem.runtime.resolution``) is the resolution of the semantic/panoptic heads' fusion, stored in
    the metadata (a raw graph records it for the host chain); only ``original`` graphs take the ``orig_size`` input.
    The dataclass keeps the exact chain by default (the library's parity tests and callers rely on it);
    ``pem-export`` defaults to ``DEFAULT_FUSION_SIZE`` (``input``).
    """

    head: str = "raw"
    imgsz: tuple[int, int] = (512, 1024)
    dynamic: bool = False
    dynamic_batch: bool = False
    batch: int = 1
    input_layout: str = "uint8_nhwc"
    opset: int = MIN_OPSET
    simplify: bool = True
    object_mask_threshold: float | None = None
    overlap_threshold: float | None = None
    fusion_size: str = FUSION_ORIGINAL

    @property
    def takes_orig_size(self) -> bool:
        """True when the graph has the ``orig_size`` input (semantic/panoptic heads of fusion size ``original``)."""
        return self.head != "raw" and self.fusion_size == FUSION_ORIGINAL

    def validate(self) -> None:
        """Raise ExportError for values that cannot be exported."""
        if self.head not in HEADS:
            raise ExportError(f"unknown head {self.head!r}; known heads: {', '.join(HEADS)}")
        if self.input_layout not in INPUT_LAYOUTS:
            raise ExportError(f"unknown input layout {self.input_layout!r}; known: {', '.join(INPUT_LAYOUTS)}")
        if self.fusion_size not in FUSION_SIZES:
            raise ExportError(f"unknown fusion size {self.fusion_size!r}; known: {', '.join(FUSION_SIZES)}")
        if self.opset < MIN_OPSET:
            raise ExportError(f"opset {self.opset} is too old: DeformConv needs opset >= {MIN_OPSET}")
        if self.dynamic and self.dynamic_batch:
            raise ExportError("dynamic frees batch, height and width already; ask for dynamic or dynamic_batch")
        if self.batch < 1 or min(self.imgsz) < 1:
            raise ExportError(f"batch and image size must be positive, got batch {self.batch}, size {self.imgsz}")
        for name, value in (("object mask", self.object_mask_threshold), ("overlap", self.overlap_threshold)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ExportError(f"{name} threshold must be in [0, 1], got {value}")

    @property
    def shapes(self) -> dict[str, int | str]:
        """The ``pem.shapes`` metadata: ints, ``"dynamic"`` for the free dimensions."""
        if self.dynamic:
            return dict.fromkeys(DIMENSION_NAMES, "dynamic")
        return dict(zip(DIMENSION_NAMES, ("dynamic" if self.dynamic_batch else self.batch, *self.imgsz)))

    @property
    def free_batch(self) -> bool:
        """True when the graph takes any batch size."""
        return self.dynamic or self.dynamic_batch


def export_onnx(model: PEM, options: ExportOptions) -> onnx.ModelProto:
    """Export ``model`` (put in eval mode) as asked; returns the checked ModelProto with its metadata."""
    onnx = require("onnx")
    require("onnxscript")
    options.validate()
    _require_torchvision_deform_conv()
    model.eval()
    wrapper = ExportWrapper(model, options.head, options.input_layout, options.object_mask_threshold,
                            options.fusion_size)
    args, input_names, dynamic_shapes = _example_inputs(options)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            opset_version=options.opset,
            input_names=input_names,
            output_names=list(OUTPUTS[options.head]),
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    proto = program.model_proto
    name_nodes_by_scope(proto)
    attach_local_functions(proto)
    if options.simplify:
        proto = simplify(proto)
    read_shapes_after_cast(proto)
    _name_dimensions(proto, IMAGE_INPUTS[options.input_layout], options.input_layout)
    props = graph_metadata(
        model.config, options.head, options.input_layout, options.shapes, options.opset,
        options.object_mask_threshold, options.overlap_threshold, options.fusion_size,
    )
    write_metadata(proto, props)
    onnx.checker.check_model(proto)
    return proto


def read_shapes_after_cast(proto: onnx.ModelProto) -> None:
    """Point ``Shape``/``Size`` nodes that read a uint8 graph input at that input's ``Cast`` instead.

    A graph of free size reads its sizes from the image (the exporter's symbolic dimensions); TensorRT's shape layer
    takes no UINT8 tensor (TensorRT operators documentation, Shape: T1 has no uint8) and the lint reports it. The
    cast has the input's shape, so the values are the same.
    """
    onnx = require("onnx")
    nodes = proto.graph.node
    for value in proto.graph.input:
        if value.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        casts = [index for index, node in enumerate(nodes)
                 if node.op_type == "Cast" and list(node.input) == [value.name]]
        readers = [node for node in nodes if node.op_type in ("Shape", "Size") and node.input[0] == value.name]
        if not casts or not readers:
            continue
        cast = onnx.NodeProto()
        cast.CopyFrom(nodes[casts[0]])
        del nodes[casts[0]]
        nodes.insert(0, cast)  # it reads only the graph input: first keeps the order topological
        for node in readers:
            node.input[0] = cast.output[0]


def name_nodes_by_scope(proto: onnx.ModelProto) -> None:
    """Prefix every node name with the module path it came from (``model.backbone.stages.0.0/node_Conv_12``).

    The exporter records the path in metadata that the simplifier drops; names survive it, and the precision
    passes (FP32 islands, INT8 blocks) and TensorRT's layer names use them. Nodes of the wrapper itself get an empty
    path (``/node_permute``); nodes the simplifier creates later have no separator at all.
    """
    for node in proto.graph.node:
        scope = node_scope_from_metadata(node)
        if SCOPE_SEPARATOR not in node.name:
            node.name = f"{scope}{SCOPE_SEPARATOR}{node.name}"


def node_scope_from_metadata(node: onnx.NodeProto) -> str:
    """The innermost module path of ``node`` from the exporter's ``name_scopes`` metadata ('' if none)."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            scopes = [s for s in re.findall(r"'([^']*)'", prop.value) if s]
            # the last entry names the traced operation itself, the ones before it the enclosing modules
            return scopes[-2] if len(scopes) >= 2 else ""
    return ""


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim's simplification; the custom node and its local function come through unchanged."""
    onnxslim = require("onnxslim")
    with _quiet():
        slimmed = onnxslim.slim(proto)
    if slimmed is None:
        raise ExportError("onnxslim failed to simplify the graph (export with --no-simplify)")
    attach_local_functions(slimmed)
    return slimmed


def save_onnx(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``proto`` to ``path`` atomically (temporary file beside it, then rename); creates the folder."""
    from pem.runtime.coco_panoptic import write_atomic

    data = proto.SerializeToString()
    write_atomic(path, lambda handle: handle.write(data), ".onnx")


def _require_torchvision_deform_conv() -> None:
    """Load torchvision's ops (so the exporter knows ``torchvision::deform_conv2d``) or raise ExportError."""
    if deform_conv2d_backend() != "torchvision":
        raise ExportError(
            "export needs torchvision's deform_conv2d (to emit ONNX DeformConv): install torchvision and unset "
            "PEM_DISABLE_TORCHVISION_DEFORM"
        )
    import torchvision.ops  # noqa: F401  (registers torchvision::deform_conv2d before the exporter runs)


def _example_inputs(
    options: ExportOptions,
) -> tuple[tuple[torch.Tensor, ...], list[str], dict[str, dict[int, object]] | None]:
    """Example inputs, their names and the dynamic-shape spec.

    A graph of free batch is traced with batch >= 2, so that the batch dimension is not specialized to 1.
    """
    height, width = options.imgsz
    batch = max(options.batch, 2) if options.free_batch else options.batch
    generator = torch.Generator().manual_seed(0)
    if options.input_layout == LAYOUT_UINT8_NHWC:
        image = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator)
    else:
        image = torch.rand((batch, 3, height, width), generator=generator) * 255
    image_name = IMAGE_INPUTS[options.input_layout]
    args: tuple[torch.Tensor, ...] = (image,)
    names = [image_name]
    if options.takes_orig_size:
        args += (torch.tensor([height, width], dtype=torch.int64),)
        names.append(INPUT_ORIG_SIZE)
    if not options.free_batch:
        return args, names, None
    free_axes = IMAGE_AXES[options.input_layout][:3 if options.dynamic else 1]
    dynamic_shapes: dict[str, dict[int, object] | None] = {"image": dict.fromkeys(free_axes, torch.export.Dim.DYNAMIC)}
    if options.takes_orig_size:
        dynamic_shapes["orig_size"] = None
    return args, names, dynamic_shapes


def _name_dimensions(proto: onnx.ModelProto, image_name: str, layout: str) -> None:
    """Rename the exporter's symbols (s12, u0, ...) to batch/height/width/orig_height/orig_width in the graph's
    inputs, outputs and value infos, inside expressions too."""
    image = next(i for i in proto.graph.input if i.name == image_name)
    dims = image.type.tensor_type.shape.dim
    mapping = {dims[a].dim_param: name for a, name in zip(IMAGE_AXES[layout], DIMENSION_NAMES) if dims[a].dim_param}
    params = {d.dim_param for v in _value_infos(proto) for d in v.type.tensor_type.shape.dim}
    unbacked = sorted({s for p in params for s in re.findall(r"\bu\d+\b", p)}, key=lambda s: int(s[1:]))
    mapping.update(zip(unbacked, ORIGINAL_DIMENSION_NAMES))
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(s) for s in mapping) + r")\b")
    for value in _value_infos(proto):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)


def _value_infos(proto: onnx.ModelProto) -> Iterator[onnx.ValueInfoProto]:
    """Every typed value of the main graph."""
    yield from proto.graph.input
    yield from proto.graph.output
    yield from proto.graph.value_info


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and simplifier's progress prints, warnings and log lines (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir", "onnxslim", "torch.export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
