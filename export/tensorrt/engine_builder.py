"""ONNX -> TensorRT engine and its manifest (``pem-export --format engine``).

Precision is baked into the ONNX (FP16 casts or INT8 Q/DQ, ``pem.export.precision``; ``pem.precision`` in its
metadata), so the network is built strongly typed: TensorRT 10.x with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``,
TensorRT 11 always (no FP16/INT8 builder flags, no calibrators). :func:`build_engine` checks the options and the
ONNX on the CPU first (precision, ``--shapes`` against the graph), then imports TensorRT, registers TensorRT's
standard plugins and, when ``plugins`` is on and TensorRT has ahead-of-time Python plugins (>= 10.9), rewrites the
graph for ``pem::DeformConv2d``/``pem::PrototypeGather`` and registers them (older TensorRT: TensorRT's own
``DeformConv`` plugin and the ``PrototypeGather`` ONNX function). It parses (errors list the failing nodes),
builds with one optimization profile, loads and saves the timing cache (atomically, merged with entries another
build wrote meanwhile), then writes the engine atomically and its manifest beside it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pem.export._deps import require
from pem.export.precision.registry import FP32, tensorrt_precisions
from pem.export.tensorrt.graph_rewrite import rewrite_for_plugins
from pem.export.tensorrt.plugins import MIN_TENSORRT, PLUGIN_VERSION, register_plugins
from pem.export.tensorrt.plugins.ptx import TritonCompatibilityError, check_triton
from pem.export.tensorrt.shapes import EngineShapes, engine_shapes, parse_shape_list
from pem.export.trt_support.versions import parse_version
from pem.runtime.backends.tensorrt import device_facts, import_cudart, import_tensorrt, make_logger
from pem.runtime.coco_panoptic import PathLike, write_atomic
from pem.runtime.contract import INPUT_ORIG_SIZE, PROTOTYPE_GATHER_DOMAIN
from pem.runtime.engine_manifest import EngineManifest, PluginInfo, write_manifest
from pem.runtime.errors import PemError
from pem.runtime.metadata import ArtifactMetadata

if TYPE_CHECKING:
    import onnx

__all__ = ["EngineBuildError", "EngineOptions", "build_engine", "check_plugin_toolchain",
           "engine_plugins", "format_parser_errors", "load_timing_cache", "make_manifest", "needs_strongly_typed_flag",
           "save_timing_cache", "write_engine"]

STANDARD_DEFORM_PLUGIN = "ModulatedDeformConv2d"  # TensorRT's plugin behind its ONNX DeformConv import


class EngineBuildError(PemError, RuntimeError):
    """TensorRT could not parse the ONNX or build the engine; the message carries TensorRT's reasons."""


@dataclass(frozen=True)
class EngineOptions:
    """How to build an engine.

    ``precision``: a TensorRT precision of the registry (fp32, fp16, int8); must match the ONNX's ``pem.precision``
    (precision is in the graph; export with that precision). ``shapes``: ``--shapes min,opt,max`` (``BxHxW`` or
    ``HxW`` each; None: the graph's fixed size). ``orig_sizes``: ``--orig-sizes`` range of the original image size
    (default 1x1 .. largest input). ``workspace_mb``: TensorRT's workspace pool limit (None: TensorRT's default, the
    device memory). ``timing_cache``: file reused and updated across builds. ``plugins``: our TensorRT plugins
    instead of TensorRT's DeformConv and the PrototypeGather function. ``command``: the command line, stored in the
    manifest so a version/GPU mismatch can tell how to rebuild. ``verbose``: keep TensorRT's whole log (VERBOSE and
    up) and print it to stderr when the parse or build fails (``--trt-verbose``). A fp32 build clears TensorRT's
    TF32 flag (on by default), so an FP32 engine computes in FP32 as ONNX Runtime does (``--verify``'s 1e-3
    tolerance).
    """

    precision: str = "fp32"
    shapes: str | None = None
    orig_sizes: str | None = None
    workspace_mb: int | None = None
    timing_cache: PathLike | None = None
    plugins: bool = True
    command: str | None = None
    verbose: bool = False

    def validate(self) -> None:
        """Raise ValueError (ShapeError for shapes) on options that cannot work, before anything is loaded."""
        if self.precision not in tensorrt_precisions():
            raise ValueError(f"TensorRT builds {', '.join(tensorrt_precisions())} graphs, not {self.precision!r}")
        if self.workspace_mb is not None and (not isinstance(self.workspace_mb, int) or self.workspace_mb < 1):
            raise ValueError(f"workspace_mb must be a positive number of MiB, got {self.workspace_mb!r}")
        if self.shapes is not None:
            parse_shape_list(self.shapes)
        if self.orig_sizes is not None:
            parse_shape_list(self.orig_sizes, "--orig-sizes", batch=False)
        if self.timing_cache is not None and Path(self.timing_cache).is_dir():
            raise ValueError(f"the timing cache must be a file, {self.timing_cache} is a folder")

    def record(self) -> dict[str, Any]:
        """The options as JSON values, for the manifest."""
        return {"precision": self.precision, "shapes": self.shapes, "orig_sizes": self.orig_sizes,
                "workspace_mb": self.workspace_mb, "plugins": self.plugins, "command": self.command,
                "timing_cache": None if self.timing_cache is None else str(self.timing_cache)}


def build_engine(onnx_path: PathLike, output_path: PathLike, options: EngineOptions | None = None) -> EngineManifest:
    """Build ``onnx_path`` into the engine ``output_path`` (and ``output_path.json``) on this machine's GPU.

    Raises ValueError for bad options or an ONNX that does not fit them (ArtifactError when it lacks PEM metadata),
    ImportError without TensorRT, cuda-python or (plugins on) Triton, saying how to install them, EngineBuildError
    when TensorRT fails (with its reasons).
    """
    options = options or EngineOptions()
    options.validate()
    onnx = require("onnx")
    source = Path(onnx_path)
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    metadata = ArtifactMetadata.from_props(props, str(source))
    check_precision(metadata.precision, options.precision, str(source))
    inputs = graph_inputs(model)
    if options.orig_sizes is not None and INPUT_ORIG_SIZE not in inputs:
        warnings.warn(f"--orig-sizes ignored: {source} fuses at fusion size {metadata.fusion_size!r} and has no "
                      f"{INPUT_ORIG_SIZE!r} input (any original size works)", RuntimeWarning, stacklevel=2)
    shapes = engine_shapes(inputs, metadata.input_layout, options.shapes, options.orig_sizes)
    trt = import_tensorrt()
    import_cudart()
    logger = make_logger(trt, keep_log=options.verbose)
    trt.init_libnvinfer_plugins(logger, "")
    gpu_name, capability = device_facts()
    if options.plugins and _has_aot_plugins(trt):
        check_plugin_toolchain(capability)
        report = rewrite_for_plugins(model)
        for node, reason in report.kept.items():
            warnings.warn(f"DeformConv node {node!r} stays on TensorRT's own plugin: {reason}", RuntimeWarning,
                          stacklevel=2)
        register_plugins()
    elif options.plugins:
        warnings.warn(f"TensorRT {trt.__version__} has no ahead-of-time Python plugins (TensorRT >= "
                      f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]}): building with TensorRT's own DeformConv plugin and "
                      "the PrototypeGather ONNX function", RuntimeWarning, stacklevel=2)
    start = time.perf_counter()
    try:
        serialized = _build_serialized(trt, logger, model.SerializeToString(), source, shapes, options)
    except EngineBuildError:
        if options.verbose:
            print("TensorRT's log of the failed build:\n" + "\n".join(logger.log_lines), file=sys.stderr)
        raise
    build_seconds = time.perf_counter() - start
    write_engine(output_path, serialized)
    manifest = make_manifest(
        props, options, shapes, engine_plugins(model), tensorrt_version=trt.__version__, gpu_name=gpu_name,
        compute_capability=capability, onnx_sha256=_sha256(source), engine_bytes=len(serialized),
        build_seconds=build_seconds,
    )
    write_manifest(output_path, manifest)
    return manifest


def check_plugin_toolchain(compute_capability: str) -> str:
    """Torch and a usable Triton for compiling the plugin kernels for ``compute_capability`` (``"8.7"``), checked
    before TensorRT starts (a failure inside TensorRT's ``aot_impl`` callback would surface as a vague build error)
    -> the Triton description. ImportError when torch or Triton is missing, EngineBuildError when this Triton's
    private compiler API cannot be read."""
    missing = [name for name in ("torch", "triton") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"PEM's TensorRT plugins compile their kernels with Triton (and pem.kernels imports torch) "
                          f"while the engine is built; missing: {', '.join(missing)}. Install them with "
                          "pip install -e \".[trt-plugins]\", or build without the plugins (--no-plugins)")
    major, minor = compute_capability.split(".")
    try:
        return check_triton(int(major) * 10 + int(minor))
    except TritonCompatibilityError as error:
        raise EngineBuildError(str(error)) from None


def check_precision(baked: str, precision: str, source: str) -> None:
    """The ONNX's precision (``pem.precision``: ``baked``) must be the one asked (TensorRT builds the graph as
    typed)."""
    if baked != precision:
        raise ValueError(f"{source} holds a {baked} graph but {precision} was asked: precision is baked into the "
                         f"ONNX, so export it with --precision {precision} (or build with --precision {baked})")


def graph_inputs(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Graph inputs (initializers excluded) -> dims, None for symbolic or unknown ones."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name not in initializers:
            dims = value.type.tensor_type.shape.dim
            inputs[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return inputs


def engine_plugins(model: onnx.ModelProto) -> tuple[PluginInfo, ...]:
    """The plugins an engine built from ``model`` uses: ours where nodes were rewritten for them (compiled into
    the engine) and TensorRT's standard deformable-convolution plugin for standard DeformConv nodes (version ''
    as TensorRT's parser picks it)."""
    plugins = set()
    for node in model.graph.node:
        attributes = {a.name for a in node.attribute}
        if node.domain == PROTOTYPE_GATHER_DOMAIN and "plugin_namespace" in attributes:
            plugins.add(PluginInfo(f"{PROTOTYPE_GATHER_DOMAIN}::{node.op_type}", PLUGIN_VERSION, True))
        elif node.domain in ("", "ai.onnx") and node.op_type == "DeformConv":
            plugins.add(PluginInfo(STANDARD_DEFORM_PLUGIN, "", False))
    return tuple(sorted(plugins, key=lambda p: p.name))


def make_manifest(props: Mapping[str, str], options: EngineOptions, shapes: EngineShapes,
                  plugins: Sequence[PluginInfo], *, tensorrt_version: str, gpu_name: str, compute_capability: str,
                  onnx_sha256: str, engine_bytes: int, build_seconds: float,
                  built_at: datetime | None = None) -> EngineManifest:
    """The manifest of an engine built from an ONNX with metadata ``props`` (pure: facts are passed in)."""
    when = (built_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return EngineManifest(
        tensorrt_version=tensorrt_version, gpu_name=gpu_name, compute_capability=compute_capability,
        precision=options.precision, profiles=dict(shapes.profiles), shape_values=dict(shapes.shape_values),
        onnx_sha256=onnx_sha256, plugins=tuple(plugins), metadata=dict(props),
        built_at=when.isoformat(timespec="seconds").replace("+00:00", "Z"), engine_bytes=engine_bytes,
        builder={**options.record(), "strongly_typed": True, "build_seconds": round(build_seconds, 1)},
    )


def write_engine(path: PathLike, data: bytes) -> None:
    """Write the serialized engine atomically (temporary file beside it, then rename)."""
    write_atomic(path, lambda handle: handle.write(data), ".engine")


def needs_strongly_typed_flag(tensorrt_version: str) -> bool:
    """Whether ``create_network`` needs STRONGLY_TYPED: yes on TensorRT 10.x; 11+ networks are always strongly typed
    (the flag is deprecated and ignored there)."""
    return parse_version(tensorrt_version)[0] < 11


def format_parser_errors(source: str, errors: Sequence[tuple[str, str, str]]) -> str:
    """One message for the parser's (node name, operator, description) errors."""
    lines = [f"TensorRT could not parse {source} ({len(errors)} error{'s' if len(errors) != 1 else ''}):"]
    for node, operator, description in errors:
        where = f"node {node!r} ({operator})" if node or operator else "graph"
        lines.append(f"  - {where}: {description.strip()}")
    lines.append("Check the graph with: pem-export --check MODEL.onnx --trt-version X.Y")
    return "\n".join(lines)


def _has_aot_plugins(trt: Any) -> bool:
    """Whether this TensorRT parses ahead-of-time Python plugins (>= 10.9 with ``tensorrt.plugin.aot_impl``)."""
    if parse_version(trt.__version__) < MIN_TENSORRT:
        return False
    try:
        import tensorrt.plugin as trtp
    except ImportError:
        return False
    return hasattr(trtp, "aot_impl")


def _build_serialized(trt: Any, logger: Any, model_bytes: bytes, source: Path, shapes: EngineShapes,
                      options: EngineOptions) -> bytes:
    """Parse, configure (profile, workspace, timing cache) and build -> the serialized engine."""
    builder = trt.Builder(logger)
    strong = needs_strongly_typed_flag(trt.__version__)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes, str(source)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise EngineBuildError(format_parser_errors(str(source), [(e.node_name(), e.node_operator(), e.desc())
                                                                   for e in errors]))
    config = builder.create_builder_config()
    if options.precision == FP32:  # BuilderFlag.TF32 is "enabled by default" (NvInfer.h, BuilderFlag::kTF32)
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    profile, needed = builder.create_optimization_profile(), False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if any(d < 0 for d in tensor.shape):
            dims = shapes.profiles[tensor.name]
            profile.set_shape(tensor.name, dims.min, dims.opt, dims.max)
            needed = True
        if tensor.is_shape_tensor:
            values = shapes.shape_values[tensor.name]
            profile.set_shape_input(tensor.name, values.min, values.opt, values.max)
            needed = True
    if needed:
        config.add_optimization_profile(profile)
    if options.timing_cache is not None:
        load_timing_cache(config, Path(options.timing_cache))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        details = "\n  ".join(logger.errors[-5:]) or "no details from TensorRT"
        raise EngineBuildError(f"TensorRT could not build an engine from {source}:\n  {details}")
    if options.timing_cache is not None:
        save_timing_cache(config, Path(options.timing_cache))
    return bytes(serialized)


def load_timing_cache(config: Any, path: Path) -> None:
    """Start from the cache file when it exists and fits this TensorRT/GPU, else from an empty cache (with a
    warning). ``config``: a ``trt.IBuilderConfig``. ``create_timing_cache`` may return None for a corrupt or foreign
    file (NvInfer.h @v10.9.0:9876-9889 leaves it open); that counts as a mismatch too."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        warnings.warn(f"{path} was written by another TensorRT version or GPU, or is damaged; starting a new timing "
                      "cache", RuntimeWarning, stacklevel=3)
        config.set_timing_cache(_fresh_timing_cache(config), ignore_mismatch=False)


def save_timing_cache(config: Any, path: Path) -> None:
    """Write the build's timing cache, merged into the file's current entries (another build may have added
    some meanwhile), atomically. A file TensorRT cannot read (None from ``create_timing_cache``) or cannot merge
    is replaced by this build's cache, with a warning."""
    cache = config.get_timing_cache()
    if path.is_file():
        merged = config.create_timing_cache(path.read_bytes())
        if merged is not None and merged.combine(cache, ignore_mismatch=False):
            cache = merged
        else:
            warnings.warn(f"{path} could not be merged (another TensorRT version or GPU, or damaged); it is "
                          "replaced by this build's timing cache", RuntimeWarning, stacklevel=3)
    data = bytes(cache.serialize())
    write_atomic(path, lambda handle: handle.write(data), ".cache")


def _fresh_timing_cache(config: Any) -> Any:
    cache = config.create_timing_cache(b"")
    if cache is None:
        raise EngineBuildError("TensorRT could not create an empty timing cache; build without --timing-cache")
    return cache


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
