"""The JSON manifest written beside a TensorRT engine (``model.engine`` -> ``model.engine.json``), read and checked.

A serialized engine only runs on the TensorRT version and the GPU it was built for, and says nothing about the
model. The manifest records what the runtime needs to know before deserializing: TensorRT version, GPU name and
compute capability, precision, the optimization profile (min/opt/max shapes per input, min/opt/max values of
shape-tensor inputs such as ``orig_size``), the ONNX file's sha256, the plugins the engine uses, the ONNX model's
``metadata_props`` (preset, classes, thresholds: the runtime reads them exactly like an ONNX model's metadata),
build time and builder options. Pure Python: written by ``pem.export.tensorrt``, read by the ``tensorrt`` backend.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pem.runtime.coco_panoptic import PathLike, write_atomic
from pem.runtime.contract import (
    IMAGE_AXES,
    IMAGE_INPUTS,
    LAYOUT_UINT8_NHWC,
    META_HEAD,
    META_INPUT_LAYOUT,
    META_PRESET,
    PROTOTYPE_GATHER_DOMAIN,
)
from pem.runtime.metadata import ArtifactError

__all__ = [
    "MANIFEST_FORMAT",
    "EngineManifest",
    "PluginInfo",
    "ProfileRange",
    "compatibility_problems",
    "manifest_path",
    "read_manifest",
    "rebuild_command",
    "write_manifest",
]

MANIFEST_FORMAT = "pem-engine/1"
MANIFEST_SUFFIX = ".json"


@dataclass(frozen=True)
class ProfileRange:
    """min <= opt <= max, element by element: the dims of an input tensor, or the values of a shape tensor."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, value: tuple[int, ...]) -> bool:
        """Whether ``value`` has this rank and lies between min and max in every element."""
        return len(value) == len(self.min) and all(lo <= v <= hi for lo, v, hi in zip(self.min, value, self.max))

    def describe(self) -> str:
        """``1x256x256 .. 1x512x512`` (min .. max)."""
        return f"{_dims(self.min)} .. {_dims(self.max)}"


@dataclass(frozen=True)
class PluginInfo:
    """A plugin the engine uses: ``name`` as TensorRT registers it (``pem::DeformConv2d`` or, in the empty
    namespace, ``ModulatedDeformConv2d``), its version, and ``embedded``: True when the kernel is compiled into the
    engine (TensorRT ahead-of-time Python plugins), so nothing must be registered to run it."""

    name: str
    version: str
    embedded: bool


@dataclass(frozen=True)
class EngineManifest:
    """Everything known about an engine file; see the module docstring. ``compute_capability`` is ``"8.7"``,
    ``built_at`` ISO 8601 UTC, ``engine_bytes`` the engine file's size (a stale manifest beside a rebuilt engine
    shows as a size mismatch), ``builder`` the builder options (JSON values; ``command`` the command line)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: dict[str, ProfileRange]
    shape_values: dict[str, ProfileRange]
    onnx_sha256: str
    plugins: tuple[PluginInfo, ...]
    metadata: dict[str, str]
    built_at: str
    engine_bytes: int
    builder: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk (with the ``format`` tag)."""
        data = asdict(self)
        data["plugins"] = [asdict(p) for p in self.plugins]
        return {"format": MANIFEST_FORMAT, **data}

    @classmethod
    def from_json(cls, data: Any, source: str) -> EngineManifest:
        """Parse the JSON object of ``source`` (a path, for messages); ArtifactError when it is not a manifest."""
        if not isinstance(data, dict) or "format" not in data:
            raise ArtifactError(f"{source} is not a PEM engine manifest (no 'format' key); "
                                f"pem-export --format engine writes one beside every engine")
        if data["format"] != MANIFEST_FORMAT:
            raise ArtifactError(f"{source}: unsupported engine manifest format {data['format']!r} "
                                f"(this runtime reads {MANIFEST_FORMAT!r})")
        try:
            return cls(
                tensorrt_version=_text(data, "tensorrt_version"),
                gpu_name=_text(data, "gpu_name"),
                compute_capability=_text(data, "compute_capability"),
                precision=_text(data, "precision"),
                profiles=_ranges(data["profiles"]),
                shape_values=_ranges(data["shape_values"]),
                onnx_sha256=_text(data, "onnx_sha256"),
                plugins=tuple(PluginInfo(str(p["name"]), str(p["version"]), bool(p["embedded"]))
                              for p in data["plugins"]),
                metadata={str(k): str(v) for k, v in dict(data["metadata"]).items()},
                built_at=_text(data, "built_at"),
                engine_bytes=int(data["engine_bytes"]),
                builder=dict(data.get("builder", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: malformed engine manifest ({type(exc).__name__}: {exc})") from None


def manifest_path(engine_path: PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def write_manifest(engine_path: PathLike, manifest: EngineManifest) -> Path:
    """Write the manifest of ``engine_path`` atomically (temporary file, then rename); returns its path."""
    path = manifest_path(engine_path)
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), MANIFEST_SUFFIX)
    return path


def read_manifest(engine_path: PathLike) -> EngineManifest:
    """The manifest beside ``engine_path``; ArtifactError when it is missing, not JSON, foreign or malformed, or
    when its recorded engine size differs from the engine file's (a manifest left from another build)."""
    engine = Path(engine_path)
    path = manifest_path(engine)
    if not path.is_file():
        raise ArtifactError(f"{engine} has no manifest ({path.name} is missing): pem-export --format engine writes "
                            "it beside the engine, keep the two together or rebuild the engine")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is corrupt (not valid JSON: {exc}); rebuild the engine") from None
    manifest = EngineManifest.from_json(data, str(path))
    if engine.is_file() and engine.stat().st_size != manifest.engine_bytes:
        raise ArtifactError(f"{path} describes an engine of {manifest.engine_bytes} bytes but {engine.name} has "
                            f"{engine.stat().st_size}: the manifest belongs to another build; rebuild the engine")
    return manifest


def rebuild_command(manifest: EngineManifest) -> str:
    """The command line that built the engine (recorded by pem-export), or one rebuilt from the metadata."""
    command = manifest.builder.get("command")
    if command:
        return str(command)
    preset = manifest.metadata.get(META_PRESET, "PRESET")
    head = manifest.metadata.get(META_HEAD, "raw")
    layout = manifest.metadata.get(META_INPUT_LAYOUT, LAYOUT_UINT8_NHWC)
    image = manifest.profiles.get(IMAGE_INPUTS.get(layout, ""))
    axes = IMAGE_AXES.get(layout, IMAGE_AXES[LAYOUT_UINT8_NHWC])
    shape_option = "" if image is None else " --shapes " + ",".join(
        _dims(tuple(dims[a] for a in axes)) for dims in (image.min, image.opt, image.max))
    return (f"pem-export --config {preset} --weights YOUR_WEIGHTS.pth --head {head} --format engine "
            f"--precision {manifest.precision}{shape_option} --output model.engine")


def compatibility_problems(manifest: EngineManifest, tensorrt_version: str, gpu_name: str, compute_capability: str,
                           available_plugins: Collection[str] | None = None) -> list[str]:
    """Why the engine of ``manifest`` cannot run here, in words for users (empty when it can).

    ``tensorrt_version`` is this machine's (``tensorrt.__version__``), ``gpu_name`` and ``compute_capability``
    (``"8.7"``) its GPU's; ``available_plugins`` the registered plugin names (``ns::name``, or the bare name in
    the empty namespace), None to skip that check. Plugins compiled into the engine are never missing.
    """
    rebuild = f"rebuild the engine on this machine with:\n    {rebuild_command(manifest)}"
    problems = []
    if manifest.tensorrt_version != tensorrt_version:
        problems.append(f"the engine was built with TensorRT {manifest.tensorrt_version}, this machine has TensorRT "
                        f"{tensorrt_version}; TensorRT engines are not portable between TensorRT versions: {rebuild}")
    if manifest.compute_capability != compute_capability:
        problems.append(f"the engine was built for {manifest.gpu_name} (compute capability "
                        f"{manifest.compute_capability}), this GPU is {gpu_name} (compute capability "
                        f"{compute_capability}); engines only run on the GPU architecture they were built for: "
                        f"{rebuild}")
    elif manifest.gpu_name != gpu_name:
        problems.append(f"the engine was built on the GPU {manifest.gpu_name!r}, this one is {gpu_name!r} (same "
                        f"compute capability {compute_capability}); TensorRT tunes an engine for the GPU model it is "
                        f"built on and does not support moving it to another: {rebuild}")
    if available_plugins is not None:
        missing = [p for p in manifest.plugins if not p.embedded and p.name not in available_plugins]
        for plugin in missing:
            problems.append(f"the engine uses the plugin {plugin.name} (version {plugin.version}), which is not "
                            f"registered here; {_plugin_hint(plugin)}")
    return problems


def _plugin_hint(plugin: PluginInfo) -> str:
    if plugin.name.startswith(f"{PROTOTYPE_GATHER_DOMAIN}::"):
        return ("install pem-edge with its export extra (pip install 'pem-edge[export]') so that "
                "pem.export.tensorrt.plugins registers it, or rebuild the engine with the plugins compiled in")
    return ("TensorRT's standard plugins live in libnvinfer_plugin: install it (Jetson: apt install "
            "libnvinfer-plugin10; desktop: pip install tensorrt) next to libnvinfer")


def _dims(values: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in values)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _ranges(data: Any) -> dict[str, ProfileRange]:
    ranges = {}
    for name, item in dict(data).items():
        bounds = [tuple(int(v) for v in item[key]) for key in ("min", "opt", "max")]
        if len({len(b) for b in bounds}) != 1:
            raise ValueError(f"profile of {name!r} mixes ranks: {bounds}")
        ranges[str(name)] = ProfileRange(*bounds)
    return ranges
