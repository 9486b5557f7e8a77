"""Graph-level rules of TensorRT's ONNX importer that the operator tables do not show.

Each rule was read in onnx/onnx-tensorrt at tag ``release/10.1-GA`` (commit 96e781103cfc, the newest release at or
below TensorRT 10.3 whose sources could be read here; 10.2 and 10.3 changed no rule below according to
docs/Changelog.md) and, where noted, in the newest stored ``ModelImporter.cpp`` (the copy with
``kENABLE_PLUGIN_OVERRIDE``, i.e. TensorRT >= 10.15). ``RULES`` lists them with file, commit and lines; each has a
planted graph in ``tests/export_lint/test_parser_rules.py``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pem.export.trt_support.onnx_graph import STANDARD_DOMAINS, dtype_name, require_onnx
from pem.export.trt_support.versions import Version

if TYPE_CHECKING:
    import numpy as np
    import onnx

TAG = "onnx/onnx-tensorrt @96e7811 (release/10.1-GA)"
NEWEST = "newest stored ModelImporter.cpp (kENABLE_PLUGIN_OVERRIDE era, >= 10.15)"

# ONNX element types importerUtils.cpp convertDtype maps to a TensorRT type (table spelling of onnx_graph.dtype_name)
CONVERTIBLE = frozenset({"DOUBLE", "FP32", "INT8", "UINT8", "FP16", "BF16", "BOOL", "INT32", "INT64", "FP8", "INT4"})

# (op, input index) -> element types the op's importer refuses with notInvalidType ("Found unsupported input type")
REFUSED_INPUT_TYPES: dict[tuple[str, int], tuple[tuple[str, ...], str]] = {
    ("ArgMax", 0): (("UINT8",), "importerUtils.cpp L66-69 (argMinMaxHelper)"),
    ("ArgMin", 0): (("UINT8",), "importerUtils.cpp L66-69 (argMinMaxHelper)"),
    ("Clip", 0): (("UINT8",), "onnxOpImporters.cpp L563-565"),
    ("Concat", 0): (("UINT8",), "onnxOpImporters.cpp L651"),
    ("Einsum", 0): (("UINT8",), "onnxOpImporters.cpp L1745-1747"),
    ("Expand", 0): (("UINT8",), "onnxOpImporters.cpp L1811-1813"),
    ("Gather", 0): (("UINT8",), "onnxOpImporters.cpp L1926"),
    ("GatherElements", 0): (("UINT8",), "onnxOpImporters.cpp L1945-1947"),
    ("Gemm", 0): (("INT32", "INT64"), "onnxOpImporters.cpp L2011"),
    ("MatMul", 0): (("INT32", "INT64"), "onnxOpImporters.cpp L3409"),
    ("Pad", 0): (("UINT8",), "onnxOpImporters.cpp L3786-3788"),
    ("Resize", 0): (("BOOL", "UINT8"), "onnxOpImporters.cpp L4389-4391"),
    ("Slice", 0): (("UINT8",), "onnxOpImporters.cpp L5285-5287"),
    ("ScatterElements", 0): (("UINT8",), "importerUtils.cpp L2039-2042 (addScatterLayer, reduction 'none')"),
    ("Where", 1): (("UINT8",), "onnxOpImporters.cpp L6028-6030"),
    ("Where", 2): (("UINT8",), "onnxOpImporters.cpp L6031"),
    **{(op, 0): (("BOOL", "UINT8"), "importerUtils.cpp L1456-1460 (reduceTensor)")
       for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                  "ReduceProd", "ReduceSum", "ReduceSumSquare")},
}
# Resize modes -> how many trailing dimensions the importer lets them scale (canUseNDResize)
RESIZE_INNERMOST = {"linear": 3, "cubic": 2}
RESIZE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
REDUCE_OPS = tuple(op for op, index in REFUSED_INPUT_TYPES if op.startswith("Reduce"))
SQUEEZE_DYNAMIC_AXES = (10, 7)  # docs/Changelog.md 'TensorRT 10.7 GA': dynamic axes for Squeeze and Unsqueeze
RANGE_TYPES = ("INT32", "INT64", "FP32")
PLUGIN_STRING_ATTRIBUTES = ("plugin_version", "plugin_namespace")


@dataclass(frozen=True)
class GraphView:
    """The top-level graph with tensor types, constant values and its input/output names."""

    model: onnx.ModelProto
    types: dict[str, onnx.TypeProto]
    constants: dict[str, np.ndarray]

    @property
    def outputs(self) -> set[str]:
        """Names of the graph outputs."""
        return {value.name for value in self.model.graph.output}

    def dtype(self, name: str) -> str | None:
        """Element type of tensor ``name`` in table spelling (``None`` when unknown or absent)."""
        return dtype_name(self.types.get(name)) if name else None

    def nodes(self) -> Iterator[tuple[str, onnx.NodeProto]]:
        """``(display name, node)`` of every top-level node."""
        for index, node in enumerate(self.model.graph.node):
            yield node.name or f"{node.op_type}#{index}", node

    def standard_nodes(self, *op_types: str) -> Iterator[tuple[str, onnx.NodeProto]]:
        """:meth:`nodes` of the standard ONNX domain whose op type is one of ``op_types``."""
        for name, node in self.nodes():
            if node.op_type in op_types and node.domain in STANDARD_DOMAINS:
                yield name, node


@dataclass(frozen=True)
class Violation:
    """One node (or graph tensor) that breaks a rule; ``severity`` is ``error`` or ``warning``."""

    node: str
    op_type: str
    domain: str
    message: str
    severity: str = "error"


@dataclass(frozen=True)
class ParserRule:
    """One importer check: its name, where it was read, the releases it applies to, and the check."""

    name: str
    source: str
    check: Callable[[GraphView], list[Violation]]
    until: Version | None = None  # first release that no longer applies it

    def applies(self, version: Version) -> bool:
        """Whether TensorRT ``version`` applies this rule."""
        return self.until is None or version < self.until


def _attribute(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((attribute for attribute in node.attribute if attribute.name == name), None)


def _text(node: onnx.NodeProto, name: str, default: str) -> str:
    attribute = _attribute(node, name)
    return attribute.s.decode() if attribute is not None else default


def _uint8_intermediate(view: GraphView) -> list[Violation]:
    found = []
    for name, node in view.nodes():
        for output in node.output:
            if not output or output in view.outputs or view.dtype(output) != "UINT8":
                continue
            if node.op_type == "Constant":
                found.append(Violation(name, node.op_type, node.domain, f"UINT8 constant '{output}': refused by "
                                       f"10.1-GA; accepted by the {NEWEST}", "warning"))
            else:
                found.append(Violation(name, node.op_type, node.domain, f"output '{output}' is an intermediate UINT8 "
                                       "tensor ('TensorRT does not support UINT8 types for intermediate tensors'); "
                                       "cast to a wider type before any other op"))
    return found


def _unconvertible_io(view: GraphView) -> list[Violation]:
    graph = view.model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    found = []
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            dtype = view.dtype(value.name)
            if value.name not in initializers and dtype is not None and dtype not in CONVERTIBLE:
                found.append(Violation(value.name, "", "", f"graph {kind} '{value.name}' is {dtype}, which "
                                       "convertDtype cannot map to a TensorRT type"))
    return found


def _refused_input_types(view: GraphView) -> list[Violation]:
    found = []
    for name, node in view.nodes():
        if node.domain not in STANDARD_DOMAINS:
            continue
        for index, tensor in enumerate(node.input):
            refused, where = REFUSED_INPUT_TYPES.get((node.op_type, index), ((), ""))
            dtype = view.dtype(tensor)
            if node.op_type == "ScatterElements" and _text(node, "reduction", "none") != "none":
                continue  # reductions import through TensorRT's ScatterElements plugin (onnxOpImporters.cpp L5195-5199)
            if dtype in refused:
                found.append(Violation(name, node.op_type, node.domain, f"input {index} is {dtype}: the importer "
                                       f"refuses {'/'.join(refused)} here ({where})"))
    return found


def _deform_conv_uniform_float(view: GraphView) -> list[Violation]:
    found = []
    for name, node in view.standard_nodes("DeformConv"):
        typed = {role: view.dtype(tensor) for role, tensor in zip(("input", "weight", "offset", "bias", "mask"),
                                                                  node.input) if tensor}
        first = typed.get("input")
        if first is not None and first not in ("FP32", "FP16"):
            found.append(Violation(name, node.op_type, node.domain, f"input is {first}; DeformConv takes FP32 or FP16"))
        mixed = {role: dtype for role, dtype in typed.items() if dtype is not None and dtype != first}
        if first is not None and mixed:
            found.append(Violation(name, node.op_type, node.domain, f"input is {first} but "
                                   f"{', '.join(f'{role} is {dtype}' for role, dtype in mixed.items())}; all "
                                   "DeformConv inputs must be all FP32 or all FP16"))
    return found


def _resize_transform(view: GraphView) -> list[Violation]:
    found = []
    for name, node in view.standard_nodes("Resize"):
        mode = _text(node, "coordinate_transformation_mode", "half_pixel")
        if mode not in RESIZE_TRANSFORMS:
            found.append(Violation(name, node.op_type, node.domain, f"coordinate_transformation_mode '{mode}' is "
                                   f"not imported (supported: {', '.join(RESIZE_TRANSFORMS)})"))
    return found


def _resize_dims(view: GraphView) -> list[Violation]:
    """Linear (cubic) Resize with constant scales: only the last 3 (2) dimensions may have a scale other than 1."""
    found = []
    for name, node in view.standard_nodes("Resize"):
        mode = _text(node, "mode", "nearest")
        scales = view.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if mode not in RESIZE_INNERMOST or scales is None or _attribute(node, "axes") is not None:
            continue
        leading = [float(v) for v in scales.reshape(-1)[: max(scales.size - RESIZE_INNERMOST[mode], 0)]]
        if any(value != 1.0 for value in leading):
            found.append(Violation(name, node.op_type, node.domain, f"{mode} Resize with scales "
                                   f"{[float(v) for v in scales.reshape(-1)]}: only the last "
                                   f"{RESIZE_INNERMOST[mode]} dimensions may be resized"))
    return found


def _constant_axes(ops: tuple[str, ...], message: str) -> Callable[[GraphView], list[Violation]]:
    def check(view: GraphView) -> list[Violation]:
        found = []
        for name, node in view.standard_nodes(*ops):
            axes = node.input[1] if len(node.input) > 1 else ""
            if axes and axes not in view.constants:
                found.append(Violation(name, node.op_type, node.domain, f"axes '{axes}' {message}"))
        return found

    return check


def _range_types(view: GraphView) -> list[Violation]:
    found = []
    for name, node in view.standard_nodes("Range"):
        types = [view.dtype(tensor) for tensor in node.input[:3]]
        if None in types:
            continue
        if len(set(types)) > 1:
            found.append(Violation(name, node.op_type, node.domain, f"start, limit and delta are {', '.join(types)}; "
                                   "they must have one type"))
        elif types[0] not in RANGE_TYPES:
            found.append(Violation(name, node.op_type, node.domain, f"Range of {types[0]}; only "
                                   f"{', '.join(RANGE_TYPES)} are imported"))
    return found


def _plugin_attribute_types(view: GraphView) -> list[Violation]:
    onnx = require_onnx()
    found = []
    for name, node in view.nodes():
        for attribute_name in PLUGIN_STRING_ATTRIBUTES:
            attribute = _attribute(node, attribute_name)
            if attribute is not None and attribute.type != onnx.AttributeProto.STRING:
                kind = onnx.AttributeProto.AttributeType.Name(attribute.type)
                found.append(Violation(name, node.op_type, node.domain, f"attribute {attribute_name} is {kind}; the "
                                       "importer reads it as a string (an empty one for any other type), so the "
                                       "plugin is not found"))
    return found


RULES: tuple[ParserRule, ...] = (
    ParserRule("uint8_intermediate", f"{TAG} ModelImporter.cpp L241-254 (parseNode: 'UINT8 is only allowed as "
               f"network inputs and outputs'); {NEWEST} also accepts Constant nodes (Gather/QuantizeLinear only with "
               "the DLA UINT8 quantization flag)", _uint8_intermediate),
    ParserRule("unconvertible_io_dtype", f"{TAG} importerUtils.cpp L314-335 (convertDtype), called for graph inputs "
               "at ModelImporter.cpp L362 and outputs at L785", _unconvertible_io),
    ParserRule("refused_input_type", f"{TAG} importerUtils.cpp L21-32 (notInvalidType) and the per-op calls named "
               "in the message", _refused_input_types),
    ParserRule("deform_conv_uniform_float", f"{TAG} onnxOpImporters.cpp L1208-1240 (DeformConv: 'Inputs must be "
               "either all FLOAT or all FLOAT16')", _deform_conv_uniform_float),
    ParserRule("resize_coordinate_transform", f"{TAG} onnxOpImporters.cpp L4428-4478 (Resize: 'Unsupported "
               "coordinate transformation mode')", _resize_transform),
    ParserRule("resize_linear_dims", f"{TAG} onnxOpImporters.cpp L4611-4623 (Resize with constant scales: 'only "
               "supports linear resizing on the outermost 3 dimensions', cubic 2) and importerUtils.cpp L265-279 "
               "(canUseNDResize: every scale before the last n must be 1)", _resize_dims),
    ParserRule("reduce_axes_initializer", f"{TAG} importerUtils.cpp L1465-1475 (reduceTensor: 'Axis input must be "
               "an initializer!'); the 10.8 and 10.15 tables still say '`axes` must be an initializer'",
               _constant_axes(REDUCE_OPS, "must be an initializer or a Constant (a build-time value)")),
    ParserRule("squeeze_axes_constant", f"{TAG} onnxOpImporters.cpp L5616-5619 (Squeeze: 'Squeeze axes input must "
               "be an initializer!') and L5886-5890 (Unsqueeze: 'Axes input for unsqueeze operation should be a "
               "constant tensor'); lifted in 10.7 (docs/Changelog.md 'TensorRT 10.7 GA': dynamic axes support for "
               "Squeeze and Unsqueeze)",
               _constant_axes(("Squeeze", "Unsqueeze"), "must be a build-time constant before TensorRT 10.7"),
               until=SQUEEZE_DYNAMIC_AXES),
    ParserRule("range_types", f"{TAG} onnxOpImporters.cpp L4180-4193 (Range: 'types for start, limit, and delta "
               "must be identical'; 'only supports int32, int64, and float input types')", _range_types),
    ParserRule("plugin_attribute_types", f"{TAG} onnxOpImporters.cpp L6442-6443 (FallbackPluginImporter) and "
               f"OnnxAttrs.cpp L50-55 (get<std::string> returns the attribute's s field); {NEWEST} "
               "isNodeInPluginRegistry reads them the same way", _plugin_attribute_types),
)


def check_parser_rules(view: GraphView, version: Version) -> list[tuple[ParserRule, Violation]]:
    """Every violation of the rules TensorRT ``version`` applies, with its rule."""
    return [(rule, violation) for rule in RULES if rule.applies(version) for violation in rule.check(view)]
