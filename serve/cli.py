"""``pem-serve``: an exported PEM artifact behind NVIDIA Triton Inference Server (through PyTriton).

``pem-serve ARTIFACT`` serves ``ARTIFACT`` (any file a :class:`~pem.runtime.Predictor` opens) as the model ``--name``
(``pem``) on ``--host`` (127.0.0.1: loopback unless another address is given). Clients: ``Predictor(URL)`` and
``pem-predict URL SOURCE`` (``http://HOST:HTTP_PORT/NAME`` or ``grpc://HOST:GRPC_PORT/NAME``), or any KServe-v2
client (wire format: :mod:`pem.runtime.backends.tritonserver`). Triton provides ``/v2/health/live``,
``/v2/health/ready`` and Prometheus metrics on ``--metrics-port`` (``/metrics``).

Exit codes: 0 after SIGTERM (requests in flight finish first, up to ``--exit-timeout-s``); 130 after Ctrl-C (the same
graceful stop); 1 when the server stops by itself; 2 when it cannot start (one line: the artifact, a port in use,
no shared libpython, nvidia-pytriton missing).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from pem.runtime.backends.tritonserver import INPUT_IMAGE_BYTES, INPUT_PIXELS, METADATA_SUFFIX
from pem.runtime.entry import command
from pem.runtime.errors import EXIT_DONE, EXIT_INTERRUPTED, EXIT_SOME_FAILED
from pem.runtime.images import max_image_pixels
from pem.runtime.limits import int_in
from pem.runtime.metadata import ArtifactError
from pem.runtime.predictor import Predictor
from pem.serve.launcher import ServeError, check_ports, import_pytriton, python_library_env, triton_config
from pem.serve.model import FrameModel, metadata_callable, supports_batching

PROG = "pem-serve"
_PORT = int_in(1, 65535)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Serve an exported PEM artifact with NVIDIA Triton "
                                     "Inference Server (PyTriton): HTTP, gRPC, health and Prometheus metrics.")
    parser.add_argument("artifact", help="exported artifact (.onnx, .engine, .pth: what the Predictor opens)")
    parser.add_argument("--host", default="127.0.0.1", help="address of every endpoint (127.0.0.1; 0.0.0.0 serves "
                        "every interface: only on a trusted network)")
    parser.add_argument("--http-port", type=_PORT, default=8000, help="HTTP/REST port (8000)")
    parser.add_argument("--grpc-port", type=_PORT, default=8001, help="gRPC port (8001)")
    parser.add_argument("--metrics-port", type=_PORT, default=8002, help="Prometheus metrics port (8002)")
    parser.add_argument("--name", default="pem", help="model name in URLs (pem)")
    parser.add_argument("--max-batch", type=int_in(1, 256), default=1, help="dynamic batching: most requests per "
                        "model call, 1..256 (1: one at a time); frames of one call run as one graph batch where the "
                        "artifact has a free batch axis and a fusion size below original, else one after another; a "
                        "bad frame fails its batch-mates too")
    parser.add_argument("--max-queue-delay-us", type=int_in(0, 10_000_000), default=500, help="dynamic batching: "
                        "longest wait for a fuller batch, microseconds (500)")
    parser.add_argument("--instances", type=int_in(1, 64), default=1, help="model instances, each with its own "
                        "Predictor running requests in parallel (1)")
    parser.add_argument("--backend", default="auto", help="runtime backend (default: by the artifact's suffix)")
    parser.add_argument("--providers", default=None, help="onnxruntime execution providers, comma list of cpu, "
                        "cuda, tensorrt")
    parser.add_argument("--threads", type=int_in(1, 1024), default=None, help="onnxruntime intra-op threads per "
                        "instance (default: ONNX Runtime's, one per physical core)")
    parser.add_argument("--max-pixels", type=int_in(1, 2**31 - 1), default=None, help="largest frame accepted, in "
                        "pixels (default: PEM_MAX_IMAGE_PIXELS or 89,478,485)")
    parser.add_argument("--exit-timeout-s", type=int_in(0, 3600), default=30, help="on SIGTERM, wait this long for "
                        "requests in flight (30)")
    parser.add_argument("--verbose", action="store_true", help="Triton's verbose log")
    return parser


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _open_predictors(args: argparse.Namespace) -> list[Predictor]:
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    predictors: list[Predictor] = []
    try:
        for _ in range(args.instances):
            predictors.append(Predictor(args.artifact, args.backend, providers, threads=args.threads))
    except (FileNotFoundError, ArtifactError, ImportError, ValueError) as exc:
        for predictor in predictors:
            predictor.close()
        raise ServeError(str(exc)) from None
    return predictors


def _frame_models(args: argparse.Namespace, predictors: list[Predictor], max_pixels: int) -> list[FrameModel]:
    """One warmed-up FrameModel per instance; ServeError when the graph cannot run the largest batch."""
    try:
        return [FrameModel(predictor, max_pixels, args.max_batch) for predictor in predictors]
    except Exception as exc:  # whatever the backend's library raises (onnxruntime's errors derive from Exception)
        raise ServeError(f"the warm-up run of {args.artifact} (a batch of up to --max-batch {args.max_batch} blank "
                         f"frames) failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def _bind(triton: Any, args: argparse.Namespace, models: list[FrameModel]) -> int:
    """Bind the frame model and its metadata model; returns the max batch size used."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    batch = args.max_batch
    predictor = models[0].predictor
    if batch > 1 and not supports_batching(predictor):
        _say(f"note: {args.artifact} has a fixed batch or an orig_size input: the frames of one batched call run "
             "through the graph one after another")
    inputs = [Tensor(name=INPUT_IMAGE_BYTES, dtype=np.bytes_, shape=(1,), optional=True),
              Tensor(name=INPUT_PIXELS, dtype=np.uint8, shape=(-1, -1, 3), optional=True)]
    maps = [Tensor(name=name, dtype=np.int32, shape=(-1, -1))
            for name in ("panoptic", "semantic", "fusion_panoptic", "fusion_semantic")]
    blobs = [Tensor(name=name, dtype=np.bytes_, shape=(1,)) for name in ("segments", "png")]
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)
    config = ModelConfig(max_batch_size=batch, batcher=batcher)
    triton.bind(model_name=args.name, infer_func=models,
                inputs=inputs, outputs=maps + blobs, config=config, strict=False)
    triton.bind(model_name=args.name + METADATA_SUFFIX, infer_func=metadata_callable(predictor),
                inputs=[Tensor(name="request", dtype=np.bytes_, shape=(1,))],
                outputs=[Tensor(name="metadata", dtype=np.bytes_, shape=(1,))], config=ModelConfig(max_batch_size=8))
    return batch


def _serve(args: argparse.Namespace, models: list[FrameModel]) -> int:
    pytriton = import_pytriton()
    # one line per refused request from pem.serve, not PyTriton's traceback of it
    logging.getLogger("pytriton.proxy.inference").setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    config = triton_config(pytriton, args.host, args.http_port, args.grpc_port, args.metrics_port,
                           args.exit_timeout_s, args.verbose)
    triton = pytriton.Triton(config=config)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        batch = _bind(triton, args, models)
        triton.run()
        _say(f"serving {args.artifact} as {args.name!r} ({args.instances} instance(s), max batch {batch}): "
             f"http://{args.host}:{args.http_port}/{args.name} grpc://{args.host}:{args.grpc_port}/{args.name} "
             f"metrics http://{args.host}:{args.metrics_port}/metrics; SIGTERM stops")
        while not stop.wait(1.0):
            if not triton.is_alive():
                _say("error: the server stopped by itself")
                return EXIT_SOME_FAILED
    finally:
        triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say(f"stopped ({signal.Signals(received[0]).name})")
    return EXIT_INTERRUPTED if received[0] == signal.SIGINT else EXIT_DONE


@command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Run pem-serve; returns the exit code (module docstring)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    check_ports(args.host, {"--http-port": args.http_port, "--grpc-port": args.grpc_port,
                            "--metrics-port": args.metrics_port})
    os.environ.update(python_library_env())
    import_pytriton()
    max_pixels = args.max_pixels or max_image_pixels()
    predictors = _open_predictors(args)
    try:
        return _serve(args, _frame_models(args, predictors, max_pixels))
    finally:
        for predictor in predictors:
            predictor.close()
