"""The ``torch`` runtime backend: the PyTorch model behind the runtime's backend contract.

It runs the export wrapper (``pem.export.wrapper.ExportWrapper``) eagerly, so its heads, inputs and outputs are
those of an exported graph (``pem.runtime.contract``) and ``pem.runtime.Predictor`` drives it like an ONNX file.
Two uses: GPUs without TensorRT (FP16, channels-last, CUDA graphs, the fused kernels of ``pem.kernels``), and
the paper's setting (FP32 eager, batch 1) as the baseline of ``pem-bench``.

The artifact is one of our checkpoints (``pem-train``/``pem-convert`` output, which names its preset), or
``preset:NAME`` for a randomly initialised model (timing only).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pem.export.precision.registry import precision_modes, torch_precisions
from pem.graph_cache import CapturedGraph, GraphCache
from pem.runtime.backends.base import Backend, TensorInfo
from pem.runtime.contract import (
    FUSION_ORIGINAL,
    IMAGE_DIMENSIONS,
    IMAGE_DTYPES,
    IMAGE_INPUTS,
    INPUT_ORIG_SIZE,
    OUTPUT_DTYPES,
    OUTPUTS,
)


def load_model(artifact: str | Path) -> Any:
    """``preset:NAME`` -> a fresh model; a checkpoint path -> the model of the preset it names, with its weights."""
    import pem
    from pem.checkpoint import CheckpointError, read_checkpoint

    text = str(artifact)
    if text.startswith("preset:"):
        return pem.build_model(text.removeprefix("preset:")).eval()
    preset = read_checkpoint(text).get("preset")
    if not preset:
        raise CheckpointError(f"{text} does not name its preset (write it with pem-convert or pem-train)")
    return pem.build_model(preset, text).eval()


class TorchBackend(Backend):
    """``TorchBackend(artifact, head="panoptic", device="cpu", precision="fp32", ...)``.

    Args:
        artifact: checkpoint path or ``preset:NAME``.
        head: ``raw``, ``semantic`` or ``panoptic`` (as ``pem-export --head``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``; ``fp16`` (CUDA) and ``bf16`` (CUDA and CPU) run under autocast with the model's own
            FP32 regions (``pem.ops.precision``). Outputs are float32 on the host.
        channels_last: NHWC memory format for the convolutions (the input stays NCHW-contiguous: the weights'
            format decides the convolutions' layout).
        cuda_graph: capture the whole forward once per input shape and replay it (CUDA; no host synchronisation
            inside the forward). The original size is part of the captured shape; at most ``max_graphs`` graphs
            are kept (least recently used dropped), all in one memory pool; calls are serialised by a lock.
        input_layout: ``uint8_nhwc`` or ``float_nchw``.
        fusion_size: ``original`` (the official chain; the default here, the paper's setting), ``input`` or ``mask``
            (``pem.runtime.resolution``; no ``orig_size`` input, id maps at that size), recorded in the metadata.

    On ``cuda:N`` every call runs with N as the current device (Triton launches, graph capture, events and
    streams follow the current device, not the tensors').
    """

    name = "torch"
    suffixes = (".pth", ".pt")

    def __init__(self, artifact: str | Path, providers: Sequence[Any] | None = None, head: str = "panoptic",
                 device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
                 cuda_graph: bool = False, input_layout: str = "uint8_nhwc", max_graphs: int = 4,
                 fusion_size: str = FUSION_ORIGINAL) -> None:
        super().__init__(str(artifact))
        from pem.export.wrapper import ExportWrapper
        from pem.runtime.metadata import graph_metadata

        modes = precision_modes()
        if precision not in torch_precisions():
            raise ValueError(f"precision {precision!r} does not run in the torch backend; it runs "
                             f"{', '.join(torch_precisions())}")
        self.device = torch.device(device)
        if self.device.type != "cuda" and (precision == "fp16" or cuda_graph):
            raise ValueError("fp16 and CUDA graphs need a CUDA device; use precision fp32 or bf16 on the CPU")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        model = load_model(artifact).to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.dtype = getattr(torch, modes[precision].torch_dtype)  # fp16/bf16: autocast, FP32 weights
        self.wrapper = ExportWrapper(model, head, input_layout, fusion_size=fusion_size).eval()
        self.head, self.precision, self.cuda_graph = head, precision, cuda_graph
        image_info = TensorInfo(IMAGE_INPUTS[input_layout], np.dtype(IMAGE_DTYPES[input_layout]),
                                IMAGE_DIMENSIONS[input_layout])
        takes_size = head != "raw" and fusion_size == FUSION_ORIGINAL
        self._inputs = [image_info] + ([TensorInfo(INPUT_ORIG_SIZE, np.dtype(np.int64), (2,))] if takes_size else [])
        self._outputs = [TensorInfo(n, np.dtype(OUTPUT_DTYPES[n]), ()) for n in OUTPUTS[head]]
        shapes = {"batch": "dynamic", "height": "dynamic", "width": "dynamic"}
        self._metadata = graph_metadata(model.config, head, input_layout, shapes, opset=0, fusion_size=fusion_size)
        self._metadata["pem.precision"] = precision
        self._graphs = GraphCache(max_graphs)
        self._pool: Any = None  # one CUDA graph memory pool shared by every capture (created at the first)

    @property
    def description(self) -> str:
        where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        mode = "CUDA graph" if self.cuda_graph else "eager"
        return f"torch {torch.__version__} {self.precision} {mode} [{where}]"

    def _on_device(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.cuda.device(N)`` for ``cuda:N`` (a no-op context on the CPU)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    @torch.inference_mode()
    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._on_device():
            return self._infer_on_device(feed)

    def _infer_on_device(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self.device.type == "cuda"
        start = time.perf_counter()
        image = torch.from_numpy(np.array(feed[self._inputs[0].name])).to(self.device, non_blocking=True)
        orig_size = torch.from_numpy(feed[INPUT_ORIG_SIZE]) if INPUT_ORIG_SIZE in feed else None
        if cuda:
            torch.cuda.synchronize(self.device)
        h2d = (time.perf_counter() - start) * 1e3
        timings: dict[str, float] = {"h2d_ms": h2d}

        def read(outputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
            if cuda:
                end.record()
                end.synchronize()
                timings["compute_ms"] = begin.elapsed_time(end)
            else:
                timings["compute_ms"] = (time.perf_counter() - begin_wall) * 1e3
            start = time.perf_counter()
            values = {info.name: self._to_host(tensor, info.name) for info, tensor in zip(self._outputs, outputs)}
            timings["d2h_ms"] = (time.perf_counter() - start) * 1e3
            return values

        begin_wall = time.perf_counter()
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        if self.cuda_graph:
            key = (tuple(image.shape), image.dtype, None if orig_size is None else tuple(orig_size.tolist()))
            values = self._graphs.run(key, (image,), lambda: self._capture(image, orig_size), read)
        else:
            values = read(self._forward(image, orig_size))
        self.last_timings = timings
        return values

    @staticmethod
    def _to_host(tensor: torch.Tensor, name: str) -> np.ndarray:
        """A copy on the host in the contract's dtype (float outputs as float32)."""
        value = tensor.float().cpu().numpy() if tensor.is_floating_point() else tensor.cpu().numpy()
        return value.astype(OUTPUT_DTYPES[name], copy=False)

    def _forward(self, image: torch.Tensor, orig_size: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if self.dtype == torch.float32:
            return self.wrapper(image, orig_size)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.wrapper(image, orig_size)

    def _capture(self, image: torch.Tensor, orig_size: torch.Tensor | None) -> CapturedGraph:
        """Warm up on a side stream, then capture one forward into a CUDA graph with static input/outputs.

        Every capture shares one pool (``torch.cuda.graph_pool_handle()``; torch 2.14 torch/cuda/graphs.py
        ``graph(pool=...)``, docs notes/cuda.rst "Sharing memory across captures"). That is safe here: replays never
        overlap (``GraphCache``'s lock), each graph's outputs stay referenced while it is cached (so no later
        capture allocates over them) and are copied to the host right after replay, and the static image lives
        outside the pool.
        """
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        static_image = image.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._forward(static_image, orig_size)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_outputs = self._forward(static_image, orig_size)
        return CapturedGraph(graph.replay, (static_image,), tuple(static_outputs))

    def _close_impl(self) -> None:
        self._graphs.clear()
        del self.wrapper
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

