"""The TensorRT backend: a serialized engine (``.engine``/``.plan``) and its JSON manifest, on one CUDA GPU.

Opening reads the manifest first (``pem.runtime.engine_manifest``) and refuses, with the reasons in words, an
engine built for another TensorRT version or GPU or needing an unregistered plugin. TensorRT's standard plugins
are registered before deserializing, and the plugin libraries the caller passes (by default those of the
``pem.tensorrt_plugins`` entry-point group: PEM's own when ``pem.export`` is installed) for engines whose manifest
lists a PEM plugin that is not compiled in; ``pem-export`` engines carry the plugin kernels
(ahead-of-time) and need neither Python nor Triton to run them.

Buffers come from cuda-python (``cuda.bindings.runtime``): device memory per tensor, pinned host staging, one
non-blocking stream per execution context, ``execute_async_v3``. Dynamic input shapes are set per call
(``set_input_shape``) within the engine's profile; shape-tensor inputs (``orig_size``) are read by TensorRT from
pinned host memory. ``last_timings`` holds the stage times measured with CUDA events:
``h2d_ms`` (input copies), ``compute_ms`` (the engine) and ``d2h_ms`` (output copies).

``providers``: None, or one entry ``"tensorrt"`` / ``("tensorrt", {"device_id": 0, "cuda_graph": False})``.
``cuda_graph=True`` captures the engine launch in a CUDA graph per input shape and replays it (less CPU launch
overhead; falls back to plain launches with a warning where capture fails). :meth:`TensorRTBackend.new_context`
gives another execution context on the same engine (its own stream, buffers and graphs), e.g. one per camera.
A context is not thread-safe: use one per thread.

TensorRT and cuda-python are imported when a backend is opened, never at import time.
"""
from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

from pem.runtime.backends.base import Backend, TensorInfo
from pem.runtime.contract import PROTOTYPE_GATHER_DOMAIN
from pem.runtime.engine_manifest import EngineManifest, compatibility_problems, read_manifest, rebuild_command
from pem.runtime.metadata import ArtifactError

__all__ = ["TensorRTBackend", "cuda_call", "device_facts", "import_cudart", "import_tensorrt", "make_logger",
           "registered_plugins"]

TENSORRT_HINT = ("TensorRT's Python package is not installed. Jetson: it comes with JetPack (sudo apt install "
                 "python3-libnvinfer); desktop: pip install tensorrt (wheels from pypi.nvidia.com). "
                 "See docs/tensorrt.md")
CUDA_HINT = "cuda-python is not installed: pip install cuda-python (or the extra pem-edge[trt])"
PLUGIN_ENTRY_POINT_GROUP = "pem.tensorrt_plugins"
PROVIDER_NAMES = ("tensorrt", "trt")


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or ImportError saying how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError(f"{TENSORRT_HINT} ({exc})") from None
    return tensorrt


def import_cudart() -> Any:
    """``cuda.bindings.runtime``, or ImportError saying how to install it."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise ImportError(f"{CUDA_HINT} ({exc})") from None
    return runtime


def cuda_call(result: tuple) -> Any:
    """Unpack a cuda-python ``(error, *values)`` result: the value(s), or RuntimeError naming the error."""
    error, *values = result
    if int(error) != 0:
        cudart = import_cudart()
        message = cudart.cudaGetErrorString(error)[1]
        raise RuntimeError(f"CUDA error {int(error)} ({getattr(error, 'name', error)}): {message.decode()}")
    return values[0] if len(values) == 1 else tuple(values) or None


def device_facts(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability ``"8.7"``) of CUDA device ``device``."""
    props = cuda_call(import_cudart().cudaGetDeviceProperties(device))
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return name, f"{props.major}.{props.minor}"


def make_logger(trt: Any, severity: Any = None, keep_log: bool = False) -> Any:
    """A ``trt.ILogger`` printing messages at ``severity`` (default WARNING) and up and keeping the errors in
    ``errors`` (for messages); with ``keep_log``, every message (VERBOSE included) in ``log_lines`` as
    ``"LEVEL: message"`` (``--trt-verbose``). Defined here so that importing this module needs no TensorRT."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.log_lines: list[str] = []
            self.threshold = severity if severity is not None else trt.ILogger.WARNING

        def log(self, level: Any, message: str) -> None:
            if keep_log:
                self.log_lines.append(f"{level.name}: {message}")
            if int(level) <= int(trt.ILogger.ERROR):
                self.errors.append(message)
            if int(level) <= int(self.threshold):
                print(f"[TensorRT] {level.name}: {message}", file=sys.stderr)

    return CollectingLogger()


def registered_plugins(trt: Any) -> set[str]:
    """Names (``ns::name``, or the bare name in the empty namespace) of the plugin creators registered now."""
    registry = trt.get_plugin_registry()
    creators = getattr(registry, "all_creators_recursive", None) or registry.all_creators  # recursive: >= 10.10
    names = set()
    for creator in creators:
        name, namespace = getattr(creator, "name", None), getattr(creator, "plugin_namespace", "")
        if name:
            names.add(f"{namespace}::{name}" if namespace else name)
    return names


@dataclass
class _SharedEngine:
    """The deserialized engine that several contexts use (with the runtime and the logger it must outlive);
    released with its last user."""

    logger: Any
    runtime: Any
    engine: Any
    manifest: EngineManifest
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> None:
        with self.lock:
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                self.engine = self.runtime = None


@dataclass
class _Buffer:
    """A device allocation and its pinned host staging area (grown, never shrunk)."""

    device: int = 0
    host: int = 0
    nbytes: int = 0


@dataclass
class _Tensor:
    """One engine I/O tensor: numpy dtype, whether TensorRT reads it on the host (shape tensors), its buffer."""

    name: str
    dtype: np.dtype
    is_input: bool
    on_host: bool
    buffer: _Buffer = field(default_factory=_Buffer)


class TensorRTBackend(Backend):
    """A TensorRT engine with its manifest (see the module docstring)."""

    name = "tensorrt"

    def __init__(self, artifact: str | Path, providers: Sequence[Any] | None = None,
                 plugin_loaders: Sequence[Callable[[], object]] | None = None) -> None:
        """``plugin_loaders``: callables that register the plugin libraries an engine without embedded kernels needs
        (None: those of the ``pem.tensorrt_plugins`` entry-point group, e.g. PEM's own when ``pem.export`` is
        installed); called only when the engine's manifest names a plugin that is not embedded."""
        super().__init__(str(artifact))
        path = Path(artifact)
        if not path.is_file():
            raise FileNotFoundError(f"artifact not found: {path}")
        device, self._use_graphs = _provider_options(providers)
        manifest = read_manifest(path)
        trt, cudart = import_tensorrt(), import_cudart()
        cuda_call(cudart.cudaSetDevice(device))
        logger = make_logger(trt)
        trt.init_libnvinfer_plugins(logger, "")
        if any(p.name.startswith(f"{PROTOTYPE_GATHER_DOMAIN}::") and not p.embedded for p in manifest.plugins):
            for load in _plugin_loaders() if plugin_loaders is None else plugin_loaders:
                with contextlib.suppress(ImportError):  # the manifest check below names what is still missing
                    load()
        problems = compatibility_problems(manifest, trt.__version__, *device_facts(device), registered_plugins(trt))
        if problems:
            raise ArtifactError(f"{path} cannot run here:\n  - " + "\n  - ".join(problems))
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            details = "; ".join(logger.errors[-3:]) or "no details from TensorRT"
            raise ArtifactError(f"TensorRT {trt.__version__} could not deserialize {path} ({details}); rebuild it "
                                f"on this machine with:\n    {rebuild_command(manifest)}")
        self._attach(_SharedEngine(logger, runtime, engine, manifest), device)

    def _attach(self, shared: _SharedEngine, device: int) -> None:
        """Create this object's execution context, stream and events on ``shared``'s engine."""
        self._trt, self._cudart = import_tensorrt(), import_cudart()
        self._shared, self._device = shared, device
        shared.acquire()
        engine = shared.engine
        self._context = engine.create_execution_context()
        if self._context is None:
            shared.release()
            raise RuntimeError(f"TensorRT could not create an execution context for {self.artifact} "
                               "(out of GPU memory?)")
        self._stream = cuda_call(self._cudart.cudaStreamCreateWithFlags(self._cudart.cudaStreamNonBlocking))
        self._events = [cuda_call(self._cudart.cudaEventCreate()) for _ in range(4)]
        self._graphs: dict[tuple, Any] = {}
        self._tensors: dict[str, _Tensor] = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT
            dtype = np.dtype(self._trt.nptype(engine.get_tensor_dtype(name)))
            on_host = engine.get_tensor_location(name) == self._trt.TensorLocation.HOST
            self._tensors[name] = _Tensor(name, dtype, is_input, on_host)
            shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            (self._inputs if is_input else self._outputs).append(TensorInfo(name, dtype, shape))
        self._metadata = dict(shared.manifest.metadata)

    @property
    def manifest(self) -> EngineManifest:
        """The engine's manifest."""
        return self._shared.manifest

    @property
    def description(self) -> str:
        m = self._shared.manifest
        graphs = ", CUDA graphs" if self._use_graphs else ""
        return f"tensorrt {self._trt.__version__} [{m.gpu_name}, sm {m.compute_capability}, {m.precision}{graphs}]"

    def new_context(self) -> TensorRTBackend:
        """Another execution context on this engine (own stream, buffers, CUDA graphs); close it when done."""
        if self._closed:
            raise RuntimeError(f"{self.name} backend for {self.artifact} is closed")
        twin = TensorRTBackend.__new__(TensorRTBackend)
        Backend.__init__(twin, self.artifact)
        twin._use_graphs = self._use_graphs
        twin._attach(self._shared, self._device)
        return twin

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        cuda_call(cudart.cudaSetDevice(self._device))
        key = self._bind_inputs(feed)
        outputs = self._bind_outputs()
        stream, (start, copied, computed, done) = self._stream, self._events
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart.cudaEventRecord(start, stream))
        for tensor in self._tensors.values():
            if tensor.is_input and not tensor.on_host:
                nbytes = feed[tensor.name].nbytes
                cuda_call(cudart.cudaMemcpyAsync(tensor.buffer.device, tensor.buffer.host, nbytes, h2d, stream))
        cuda_call(cudart.cudaEventRecord(copied, stream))
        self._execute(key)
        cuda_call(cudart.cudaEventRecord(computed, stream))
        for name, (_, nbytes) in outputs.items():
            buffer = self._tensors[name].buffer
            cuda_call(cudart.cudaMemcpyAsync(buffer.host, buffer.device, nbytes, d2h, stream))
        cuda_call(cudart.cudaEventRecord(done, stream))
        cuda_call(cudart.cudaEventSynchronize(done))
        self.last_timings = {
            "h2d_ms": cuda_call(cudart.cudaEventElapsedTime(start, copied)),
            "compute_ms": cuda_call(cudart.cudaEventElapsedTime(copied, computed)),
            "d2h_ms": cuda_call(cudart.cudaEventElapsedTime(computed, done)),
        }
        return {name: self._host_view(name, shape).copy() for name, (shape, _) in outputs.items()}

    def _bind_inputs(self, feed: Mapping[str, np.ndarray]) -> tuple:
        """Check the feed against the profile, set the input shapes and stage the values -> the CUDA-graph key."""
        manifest = self._shared.manifest
        key = []
        for name, array in feed.items():
            tensor = self._tensors[name]
            shape = tuple(int(d) for d in array.shape)
            profile = manifest.profiles.get(name)
            if profile is not None and not profile.contains(shape):
                raise ValueError(f"{self.artifact}: input {name!r} of shape {'x'.join(map(str, shape))} is outside "
                                 f"the engine's profile {profile.describe()}; rebuild with --shapes covering it")
            values = manifest.shape_values.get(name)
            if values is not None and not values.contains(tuple(int(v) for v in array.reshape(-1))):
                raise ValueError(f"{self.artifact}: {name} = {array.tolist()} is outside the engine's range "
                                 f"{values.describe()}; rebuild with --orig-sizes covering it")
            if not self._context.set_input_shape(name, shape):
                raise ValueError(f"{self.artifact}: TensorRT rejected the shape {shape} of input {name!r}")
            self._ensure(tensor, array.nbytes)
            np.copyto(self._host_view(name, shape), array)
            if tensor.on_host:
                # Re-pointed on every call, as Polygraphy's TrtRunner points shape tensors at each call's array
                # (polygraphy 0.53.6 backend/trt/runner.py:366-419): NvInferRuntime.h (@v10.9.0:4446-4448) reads
                # host shape values at enqueueV3 and does not promise getTensorShape sees an in-place change.
                self._set_address(tensor)
            key.append((name, shape, array.tobytes() if tensor.on_host else b""))
        return tuple(key)

    def _bind_outputs(self) -> dict[str, tuple[tuple[int, ...], int]]:
        """Allocate the outputs for the current input shapes -> name: (shape, nbytes)."""
        outputs = {}
        for tensor in self._tensors.values():
            if tensor.is_input:
                continue
            shape = tuple(int(d) for d in self._context.get_tensor_shape(tensor.name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{self.artifact}: TensorRT cannot infer the shape of output {tensor.name!r}")
            nbytes = int(np.prod(shape, dtype=np.int64)) * tensor.dtype.itemsize
            self._ensure(tensor, nbytes)
            outputs[tensor.name] = (shape, nbytes)
        return outputs

    def _ensure(self, tensor: _Tensor, nbytes: int) -> None:
        """Grow ``tensor``'s buffers to ``nbytes`` and (re)bind a moved device address; a move drops the CUDA
        graphs. Host (shape-tensor) inputs are bound by :meth:`_bind_inputs` on every call."""
        buffer, cudart = tensor.buffer, self._cudart
        if nbytes > buffer.nbytes or not buffer.host:
            self._free(buffer)
            size = max(nbytes, 1)
            buffer.host = cuda_call(cudart.cudaMallocHost(size))
            buffer.device = 0 if tensor.on_host else cuda_call(cudart.cudaMalloc(size))
            buffer.nbytes = size
            self._drop_graphs()
            if not tensor.on_host:
                self._set_address(tensor)

    def _set_address(self, tensor: _Tensor) -> None:
        """Point TensorRT at ``tensor``'s buffer: pinned host memory for shape tensors, device memory otherwise."""
        address = tensor.buffer.host if tensor.on_host else tensor.buffer.device
        if not self._context.set_tensor_address(tensor.name, address):
            raise RuntimeError(f"{self.artifact}: TensorRT rejected the address of {tensor.name!r}")

    def _host_view(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The pinned host staging area of ``name`` as an array of ``shape``."""
        tensor = self._tensors[name]
        count = int(np.prod(shape, dtype=np.int64))
        raw = (ctypes.c_char * tensor.buffer.nbytes).from_address(tensor.buffer.host)
        return np.frombuffer(raw, dtype=tensor.dtype, count=count).reshape(shape)

    def _execute(self, key: tuple) -> None:
        """Run the engine on the stream: replay the CUDA graph of ``key``, or launch (and capture one)."""
        cudart, stream = self._cudart, self._stream
        graph = self._graphs.get(key) if self._use_graphs else None
        if graph is not None:
            cuda_call(cudart.cudaGraphLaunch(graph, stream))
            return
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError(f"TensorRT failed to run {self.artifact}; see the TensorRT messages above")
        if self._use_graphs:
            self._graphs[key] = self._capture()

    def _capture(self) -> Any:
        """A CUDA graph of one engine launch (after a plain one, as TensorRT asks), or None with graphs disabled."""
        cudart, stream = self._cudart, self._stream
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            cuda_call(cudart.cudaStreamBeginCapture(stream, mode))
            launched = self._context.execute_async_v3(int(stream))
            graph = cuda_call(cudart.cudaStreamEndCapture(stream))
            if not launched:
                raise RuntimeError("the engine launch failed during capture")
            executable = cuda_call(cudart.cudaGraphInstantiate(graph, 0))
            cuda_call(cudart.cudaGraphDestroy(graph))
            return executable
        except RuntimeError as exc:
            warnings.warn(f"{self.artifact}: CUDA graph capture failed ({exc}); launching without graphs",
                          RuntimeWarning, stacklevel=4)
            self._use_graphs = False
            return None

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            if graph is not None:
                cuda_call(self._cudart.cudaGraphExecDestroy(graph))
        self._graphs.clear()

    def _free(self, buffer: _Buffer) -> None:
        if buffer.device:
            cuda_call(self._cudart.cudaFree(buffer.device))
        if buffer.host:
            cuda_call(self._cudart.cudaFreeHost(buffer.host))
        buffer.device = buffer.host = buffer.nbytes = 0

    def _close_impl(self) -> None:
        cudart = self._cudart
        cuda_call(cudart.cudaStreamSynchronize(self._stream))
        self._drop_graphs()
        for tensor in self._tensors.values():
            self._free(tensor.buffer)
        for event in self._events:
            cuda_call(cudart.cudaEventDestroy(event))
        cuda_call(cudart.cudaStreamDestroy(self._stream))
        del self._context
        self._shared.release()


def _provider_options(providers: Sequence[Any] | None) -> tuple[int, bool]:
    """``providers`` -> (CUDA device id, use CUDA graphs)."""
    if providers is None:
        return 0, False
    if len(providers) != 1:
        raise ValueError(f"the tensorrt backend takes one provider entry, got {list(providers)}")
    spec = providers[0]
    name, options = (spec, {}) if isinstance(spec, str) else spec
    unknown = set(options) - {"device_id", "cuda_graph"}
    if str(name).lower() not in PROVIDER_NAMES or unknown:
        raise ValueError(f"the tensorrt backend takes 'tensorrt' or ('tensorrt', {{'device_id': N, 'cuda_graph': "
                         f"bool}}), got {spec!r}")
    return int(options.get("device_id", 0)), bool(options.get("cuda_graph", False))


def _plugin_loaders() -> list[Callable[[], object]]:
    """The registration functions of the installed ``pem.tensorrt_plugins`` entry points; one that cannot be
    imported (its package lacks Triton or torch) is skipped: an engine that needs it then fails the manifest's
    plugin check with a message naming the plugin."""
    loaders = []
    for entry in entry_points(group=PLUGIN_ENTRY_POINT_GROUP):
        try:
            loaders.append(entry.load())
        except ImportError:
            continue
    return loaders
