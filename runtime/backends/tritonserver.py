"""The ``tritonserver`` backend: a ``pem-serve`` model on NVIDIA Triton Inference Server, as a runtime backend.

The artifact is the server's URL and model name, ``http://HOST:PORT/MODEL`` (``https://`` with TLS) or
``grpc://HOST:PORT/MODEL``. The server runs the whole :class:`~pem.runtime.Predictor` chain, so this backend does
not run graphs (:meth:`TritonServerBackend.infer` refuses): a ``Predictor`` opened on a URL hands each frame to
:meth:`TritonServerBackend.predict_frame`, which sends the pixels and rebuilds the server's :class:`Result`.

The wire format lives here, both directions, so ``pem.serve`` (which imports it) and this client cannot drift.
Every request carries one frame (batch dimension 1):

* inputs (exactly one): ``image`` BYTES [1, 1], an encoded image (JPEG, PNG, anything Pillow reads), or
  ``pixels`` UINT8 [1, H, W, 3], raw RGB;
* outputs (each sent only when requested): ``panoptic`` INT32 [1, H, W] segment ids (0 void; 0 x 0 for
  semantic-only artifacts), ``semantic`` INT32 [1, H, W] class ids (255 void), ``segments`` BYTES [1, 1] JSON
  (``segments``: id, category_id, label, isthing, area, score; ``size``, ``fusion_scale``, ``timings``),
  ``png`` BYTES [1, 1] (the panoptic map as a COCO-panoptic PNG, or the class map of semantic-only artifacts),
  ``fusion_panoptic`` / ``fusion_semantic`` INT32 [1, h, w] the maps at the artifact's fusion resolution;
* the model ``<MODEL>_metadata`` answers any ``request`` BYTES [1, 1] with ``metadata`` BYTES [1, 1]: JSON with
  the artifact's metadata (``props``), its graph ``inputs``/``outputs`` and the server's ``backend``;
* a refused frame's error holds one line ``pem-serve: PROBLEM: DETAIL`` (``corrupt image``, ``image over the size
  budget``, ``bad request``, ...); PyTriton 0.7 wraps it in its own traceback text, which this client drops.

tritonclient is imported when a backend is opened: ``pip install "pem-edge[serve]"`` (or ``tritonclient[http,grpc]``).
"""
from __future__ import annotations

import importlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pem.runtime.backends.base import Backend, TensorInfo
from pem.runtime.coco_panoptic import id2rgb
from pem.runtime.fusion import Segment
from pem.runtime.metadata import ArtifactError, ArtifactMetadata
from pem.runtime.result import Result

__all__ = ["ERROR_PREFIX", "FRAME_OUTPUTS", "INPUT_IMAGE_BYTES", "INPUT_PIXELS", "METADATA_SUFFIX", "ServerError",
           "TritonServerBackend", "describe_tensors", "encode_result", "error_line", "free_ports", "metadata_payload",
           "parse_url", "wait_until_ready"]

INSTALL_HINT = 'pip install "pem-edge[serve]" (or tritonclient[http,grpc])'
INPUT_IMAGE_BYTES = "image"
INPUT_PIXELS = "pixels"
FRAME_OUTPUTS = ("panoptic", "semantic", "segments", "png", "fusion_panoptic", "fusion_semantic")
METADATA_SUFFIX = "_metadata"
ERROR_PREFIX = "pem-serve: "
TIMEOUT_S = 120.0


class ServerError(RuntimeError):
    """The server answered one frame with an error (bad input, a failure inside its backend). Not a
    :class:`PemError`: ``pem-predict`` reports the frame and goes on, as for a frame its own backend fails on."""


def parse_url(url: str) -> tuple[str, str, str]:
    """``"http://127.0.0.1:8000/pem"`` -> (``"http"``, ``"127.0.0.1:8000"``, ``"pem"``); ArtifactError otherwise."""
    parts = urlsplit(url)
    model = parts.path.strip("/")
    if parts.scheme not in ("http", "https", "grpc") or not parts.hostname or not parts.port or not model \
            or "/" in model:
        raise ArtifactError(f"{url}: a served model is http://HOST:PORT/MODEL, https://... or grpc://HOST:PORT/MODEL")
    return parts.scheme, parts.netloc, model


def error_line(message: str) -> str:
    """The one line worth showing of a server's error text: from ``pem-serve: `` to the end of its line when the
    text has one, else its last unindented line (Triton's own errors are one line; tracebacks end with the
    exception's line before PyTriton's indented ``At:`` trailer)."""
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line[0].isspace()]
    for line in lines:
        if ERROR_PREFIX in line:
            return line[line.index(ERROR_PREFIX):]
    kept = [line for line in lines if line != "At:"]
    return kept[-1] if kept else message.strip()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the OS reports free on ``host`` now (held together while chosen, then released): the
    ports to start a ``pem-serve`` on before waiting for it with :func:`wait_until_ready` (tests, benchmarks)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for probe in held:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in held]
    finally:
        for probe in held:
            probe.close()


def wait_until_ready(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``url`` (a Triton ``.../ready`` endpoint) every 0.5 s until it answers 200. ArtifactError when ``alive()``
    turns False first (the server process exited) or after ``timeout_s`` seconds."""
    import urllib.request

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not alive():
            raise ArtifactError(f"the server exited before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ArtifactError(f"{url} not ready within {timeout_s:g} s")


def describe_tensors(infos: Sequence[TensorInfo]) -> list[dict[str, Any]]:
    """Graph tensors as JSON-ready dicts (dtype by name, dynamic axes as None)."""
    return [{"name": i.name, "dtype": np.dtype(i.dtype).name,
             "shape": [s if isinstance(s, int) and s >= 0 else None for s in i.shape]} for i in infos]


def metadata_payload(props: Mapping[str, str], inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo],
                     backend: str) -> bytes:
    """The JSON the ``<MODEL>_metadata`` model answers with."""
    return json.dumps({"props": dict(props), "inputs": describe_tensors(inputs), "outputs": describe_tensors(outputs),
                       "backend": backend}).encode()


def _png(ids: np.ndarray, rgb: bool) -> bytes:
    """PNG bytes of an id map: COCO-panoptic ``id2rgb`` colours, or grey levels (8-bit, 16-bit above 255)."""
    from PIL import Image

    if rgb:
        image = Image.fromarray(id2rgb(ids))
    elif ids.max(initial=0) <= 255:
        image = Image.fromarray(ids.astype(np.uint8))
    else:
        image = Image.fromarray(ids.astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_result(result: Result, wanted: Collection[str]) -> dict[str, np.ndarray]:
    """The server's outputs for ``result``, those in ``wanted`` only, each with a leading batch axis of 1."""
    panoptic = result.panoptic
    out: dict[str, np.ndarray] = {}
    if "panoptic" in wanted:
        out["panoptic"] = (panoptic if panoptic is not None else np.zeros((0, 0), np.int32)).astype(np.int32)[None]
    if "semantic" in wanted:
        out["semantic"] = result.semantic.astype(np.int32)[None]
    if "fusion_panoptic" in wanted:
        fused = result.fusion_panoptic if result.fusion_panoptic is not None else panoptic
        out["fusion_panoptic"] = (fused if fused is not None else np.zeros((0, 0), np.int32)).astype(np.int32)[None]
    if "fusion_semantic" in wanted:
        fused = result.fusion_semantic if result.fusion_semantic is not None else result.semantic
        out["fusion_semantic"] = fused.astype(np.int32)[None]
    if "segments" in wanted:
        names = result.names
        info = {"segments": [{"id": s.id, "category_id": s.category_id, "label": names[s.category_id],
                              "isthing": bool(s.isthing), "area": int(s.area), "score": float(s.score)}
                             for s in result.segments],
                "size": list(result.semantic.shape), "fusion_scale": [float(v) for v in result.fusion_scale],
                "timings": {k: float(v) for k, v in result.timings.items()}}
        out["segments"] = np.array([[json.dumps(info).encode()]], dtype=np.object_)
    if "png" in wanted:
        ids = panoptic if panoptic is not None else result.semantic
        out["png"] = np.array([[_png(ids, panoptic is not None)]], dtype=np.object_)
    return out


def _import_client(scheme: str) -> tuple[Any, Any]:
    """(tritonclient.http or .grpc, tritonclient.utils), or ImportError saying how to install them."""
    flavour = "grpc" if scheme == "grpc" else "http"
    try:
        module = importlib.import_module(f"tritonclient.{flavour}")
        utils = importlib.import_module("tritonclient.utils")
    except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError when grpcio is missing
        raise ImportError(f"the tritonserver backend needs tritonclient with {flavour} support for {scheme}:// URLs: "
                          f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from None
    return module, utils


def _tensor_info(entry: Mapping[str, Any]) -> TensorInfo:
    return TensorInfo(str(entry["name"]), np.dtype(entry["dtype"]), tuple(entry["shape"]))


def _bytes_of(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class TritonServerBackend(Backend):
    """A client of ``pem-serve`` (module docstring). One tritonclient connection per calling thread, so one
    backend (and the Predictor owning it) may be called from several threads at once."""

    name = "tritonserver"
    url_schemes = ("http", "https", "grpc")

    def __init__(self, artifact: str, providers: Sequence[Any] | None = None, timeout_s: float = TIMEOUT_S) -> None:
        super().__init__(str(artifact))
        if providers is not None:
            raise ValueError("execution providers are the server's choice (pem-serve --backend); give none")
        self._scheme, self._address, self.model = parse_url(self.artifact)
        self._client_module, utils = _import_client(self._scheme)
        self._server_error = utils.InferenceServerException
        self._timeout_s = float(timeout_s)
        self._local = threading.local()
        self._unscaled: dict[tuple[int, int], bool] = {}  # frame (H, W) -> the server answers fusion_scale (1, 1)
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        try:
            payload = json.loads(self._call(self.model + METADATA_SUFFIX, {"request": np.array([[b""]], np.object_)},
                                            ["metadata"])["metadata"].ravel()[0])
        except ServerError as exc:
            self.close()
            raise ArtifactError(f"{self.artifact}: cannot read the served model's metadata: {exc}") from None
        except Exception as exc:  # connection refused, timeouts, DNS: the client library raises many kinds
            self.close()
            raise ArtifactError(f"{self.artifact}: cannot reach the server: {type(exc).__name__}: {exc}") from None
        self._metadata = {str(k): str(v) for k, v in payload["props"].items()}
        self._inputs = [_tensor_info(entry) for entry in payload["inputs"]]
        self._outputs = [_tensor_info(entry) for entry in payload["outputs"]]
        self._served_by = str(payload.get("backend", "?"))

    @property
    def description(self) -> str:
        return f"tritonserver {self._scheme}://{self._address}/{self.model} [server: {self._served_by}]"

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self._scheme == "grpc":
                client = self._client_module.InferenceServerClient(self._address)
            else:
                client = self._client_module.InferenceServerClient(
                    self._address, ssl=self._scheme == "https", connection_timeout=self._timeout_s,
                    network_timeout=self._timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, model: str, feed: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """One inference request -> the requested outputs; ServerError with the server's message on an error."""
        if self._closed:
            raise RuntimeError(f"{self.name} backend for {self.artifact} is closed")
        module = self._client_module
        inputs = []
        for name, array in feed.items():
            datatype = "BYTES" if array.dtype == np.object_ else "UINT8"
            tensor = module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requested = [module.InferRequestedOutput(name) for name in outputs]
        try:
            if self._scheme == "grpc":
                response = self._client().infer(model, inputs, outputs=requested, client_timeout=self._timeout_s)
            else:
                response = self._client().infer(model, inputs, outputs=requested)
        except self._server_error as exc:
            message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
            raise ServerError(f"{self.artifact}: {error_line(str(message or exc))}") from None
        return {name: response.as_numpy(name) for name in outputs}

    def predict_frame(self, image: np.ndarray, metadata: ArtifactMetadata) -> Result:
        """uint8 [H, W, 3] RGB -> the server's :class:`Result` for it (``timings`` adds ``request_ms``, the round
        trip). Raises ServerError when the server refuses the frame or fails on it.

        The maps at the fusion resolution are asked for only where they differ from the full-size ones: below fusion
        size ``original``, frames of a size the server answered with ``fusion_scale`` (1, 1) (no resize) get the
        full-size maps as their fusion maps; a frame of a new size asks for everything once (each output costs the
        server, notably PyTriton's per-tensor shared memory)."""
        size = (int(image.shape[0]), int(image.shape[1]))
        wanted = ["semantic", "segments"] + (["panoptic"] if metadata.has_panoptic else [])
        fusion = [] if metadata.fusion_size == "original" else \
            ["fusion_semantic"] + (["fusion_panoptic"] if metadata.has_panoptic else [])
        skip_fusion = self._unscaled.get(size, False)
        pixels = {INPUT_PIXELS: np.ascontiguousarray(image)[None]}
        start = time.perf_counter()
        out = self._call(self.model, pixels, wanted if skip_fusion else wanted + fusion)
        info = json.loads(_bytes_of(out["segments"].ravel()[0]))
        scale = (float(info["fusion_scale"][0]), float(info["fusion_scale"][1]))
        if fusion and (size in self._unscaled or len(self._unscaled) < 256):
            self._unscaled[size] = scale == (1.0, 1.0)
        if skip_fusion and scale != (1.0, 1.0):  # the server resized after all: ask again with the fusion maps
            out = self._call(self.model, pixels, wanted + fusion)
            info = json.loads(_bytes_of(out["segments"].ravel()[0]))
            scale = (float(info["fusion_scale"][0]), float(info["fusion_scale"][1]))
        request_ms = (time.perf_counter() - start) * 1000.0
        segments = [Segment(int(s["id"]), int(s["category_id"]), bool(s["isthing"]), int(s["area"]), float(s["score"]))
                    for s in info["segments"]]
        semantic = out["semantic"][0].astype(np.int64)
        panoptic = out["panoptic"][0].astype(np.int32) if "panoptic" in out else None
        fusion_semantic = out["fusion_semantic"][0].astype(np.int64) if "fusion_semantic" in out else semantic
        fusion_panoptic = out["fusion_panoptic"][0].astype(np.int32) if "fusion_panoptic" in out else panoptic
        timings = {**info["timings"], "request_ms": request_ms}
        return Result(image, semantic, panoptic, segments, metadata, timings, fusion_semantic, fusion_panoptic, scale)

    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ArtifactError(f"{self.artifact}: a served model runs the whole chain on the server; call a Predictor "
                            "opened on this URL instead of infer() on graph tensors")

    def _close_impl(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
