"""``Predictor``: an exported PEM artifact as a callable, image in, :class:`Result` out (no torch).

Pre-processing follows the official test-time chain: the shortest edge is resized with Pillow bilinear on uint8
to the artifact's ``min_size`` (long side capped at ``max_size``). A graph exported with a fixed input size takes
that size only, so images are resized straight to it instead (aspect ratio not kept) whenever the shortest-edge
size differs; outputs are still at the original size (resized from the artifact's fusion resolution by nearest
neighbour below fusion size ``original``; an ``original``-mode frame over the memory budget is refused).

A backend that runs the whole chain itself (a :class:`FrameBackend`, e.g. ``tritonserver`` for a ``pem-serve`` URL)
gets each checked RGB frame through ``predict_frame`` and returns the finished :class:`Result`; the Predictor still
reads its metadata and checks its graph description as for a local artifact.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pem.runtime.backends import Backend, open_backend
from pem.runtime.contract import FUSION_ORIGINAL, IMAGE_AXES, IMAGE_INPUTS, INPUT_IMAGE, INPUT_ORIG_SIZE, OUTPUTS
from pem.runtime.metadata import ArtifactError, ArtifactMetadata
from pem.runtime.postprocess import Geometry, postprocess
from pem.runtime.preprocess import check_image, resize_to, shortest_edge_size
from pem.runtime.resolution import check_memory_budget, memory_budget_mb
from pem.runtime.result import Result

__all__ = ["FrameBackend", "Predictor"]


@runtime_checkable
class FrameBackend(Protocol):
    """A backend that predicts whole frames (a server runs pre-processing, graph and post-processing)."""

    def predict_frame(self, image: np.ndarray, metadata: ArtifactMetadata) -> Result:
        """uint8 [H, W, 3] RGB -> the Result of the artifact described by ``metadata``."""


class Predictor:
    """``Predictor(artifact, backend="auto", providers=None)``; ``predictor(image, bgr=False) -> Result``.

    ``artifact``: a file path, a ``pem-serve`` URL (``http://HOST:PORT/MODEL``, ``grpc://...``), or an opened
    :class:`Backend` (the predictor then owns it and closes it).
    ``backend``: a registered backend name or ``auto`` (by suffix: ``.onnx`` -> onnxruntime). ``providers``: for
    onnxruntime, execution providers (``cpu``, ``cuda``, ``tensorrt`` or full ORT names); None = CUDA when
    available, else CPU. ``expect_preset``: fail unless the artifact was exported from that preset.
    ``input_size`` (h, w): resize every image straight to that size, as for a graph of fixed size (benchmarks at
    one size); None follows the shortest-edge rule, or the graph's fixed size. ``threads``: intra-op CPU threads of
    the onnxruntime backend (None: ONNX Runtime's default, one per physical core). ``memory_budget_mb``: the budget
    of fusion size ``original`` (None: ``pem.runtime.resolution.memory_budget_mb``'s setting); a frame over it raises
    ``MemoryBudgetError``.
    Raises FileNotFoundError (missing artifact), ArtifactError (unknown format, missing/malformed metadata,
    another preset, graph I/O that does not follow the contract), ImportError (backend package not installed).
    """

    def __init__(self, artifact: str | Path | Backend, backend: str = "auto", providers: Sequence[Any] | None = None,
                 expect_preset: str | None = None, input_size: tuple[int, int] | None = None,
                 threads: int | None = None, memory_budget_mb: float | None = None) -> None:
        self.memory_budget_mb = _budget(memory_budget_mb)
        if isinstance(artifact, Backend):
            if threads is not None:
                artifact.close()
                raise ValueError("threads applies when the Predictor opens the artifact; set it on the backend given")
            self.backend = artifact
        else:
            self.backend = open_backend(artifact, backend, providers, threads)
        try:
            source = self.backend.artifact
            self.metadata = ArtifactMetadata.from_props(self.backend.metadata, source)
            if expect_preset is not None and self.metadata.preset != expect_preset:
                raise ArtifactError(f"{source} was exported from preset {self.metadata.preset!r}, "
                                    f"not {expect_preset!r}")
            self._image_input = IMAGE_INPUTS[self.metadata.input_layout]
            self._check_graph()
            self.fixed_size = self._graph_size() or self.metadata.static_size
            if input_size is not None:
                if self.fixed_size is not None and tuple(input_size) != self.fixed_size:
                    raise ArtifactError(f"{source} takes {self.fixed_size[0]}x{self.fixed_size[1]} images only, "
                                        f"not {input_size[0]}x{input_size[1]}")
                self.fixed_size = (int(input_size[0]), int(input_size[1]))
        except BaseException:
            self.backend.close()
            raise

    def _check_graph(self) -> None:
        """The graph's inputs and outputs must be those of the contract for the artifact's head and layout."""
        meta = self.metadata
        inputs = {info.name: info for info in self.backend.inputs}
        outputs = {info.name: info for info in self.backend.outputs}
        allowed = {self._image_input, INPUT_ORIG_SIZE}
        if self._image_input not in inputs or not set(inputs) <= allowed:
            raise ArtifactError(f"{meta.source}: graph inputs {sorted(inputs)} do not match layout "
                                f"{meta.input_layout!r} (expected {self._image_input!r} and maybe {INPUT_ORIG_SIZE!r})")
        wants_orig_size = meta.head != "raw" and meta.fusion_size == FUSION_ORIGINAL
        if wants_orig_size != (INPUT_ORIG_SIZE in inputs):
            raise ArtifactError(f"{meta.source}: the {meta.head!r} head of fusion size {meta.fusion_size!r} "
                                f"{'needs the' if wants_orig_size else 'takes no'} input {INPUT_ORIG_SIZE!r}")
        missing = [name for name in OUTPUTS[meta.head] if name not in outputs]
        if missing:
            raise ArtifactError(f"{meta.source}: head {meta.head!r} lacks the outputs {missing} "
                                f"(graph outputs: {sorted(outputs)})")
        batch = inputs[self._image_input].fixed(0)
        if batch is not None and batch != 1:
            raise ArtifactError(f"{meta.source} was exported with a fixed batch of {batch}; the Predictor feeds one "
                                "image at a time (export with batch 1 or a dynamic batch)")
        if meta.head == "raw":
            columns = outputs["pred_logits"].fixed(2)
            if columns is not None and columns != meta.num_classes + 1:
                raise ArtifactError(f"{meta.source}: the graph predicts {columns - 1} classes but its metadata "
                                    f"lists {meta.num_classes} (metadata of another preset?)")

    def _graph_size(self) -> tuple[int, int] | None:
        """The (h, w) the graph's image input fixes, None when either is free."""
        info = next(i for i in self.backend.inputs if i.name == self._image_input)
        height, width = (info.fixed(axis) for axis in IMAGE_AXES[self.metadata.input_layout][1:])
        return (height, width) if height is not None and width is not None else None

    def full_size_channels(self) -> int:
        """Channels of the per-pixel tensors fusion size ``original`` holds at the original size: the classes, or the
        queries when the graph's outputs fix them and they are more."""
        queries = 0
        for info in self.backend.outputs:
            if info.name in ("pred_logits", "query_scores"):
                queries = info.fixed(1) or 0
        return max(self.metadata.num_classes, queries)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) an image of (height, width) is resized to before the graph."""
        meta = self.metadata
        size = shortest_edge_size(height, width, meta.min_size, meta.max_size)
        if self.fixed_size is not None and size != self.fixed_size:
            return self.fixed_size
        return size

    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Geometry]:
        """[H0, W0, 3] uint8 RGB -> the graph feed and the sizes the post-processing needs."""
        height, width = image.shape[:2]
        target = self.resized_size(height, width)
        resized = resize_to(image, target)
        if self._image_input == INPUT_IMAGE:
            tensor = np.ascontiguousarray(resized)[None]
        else:
            tensor = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
        feed = {self._image_input: tensor}
        if any(info.name == INPUT_ORIG_SIZE for info in self.backend.inputs):
            feed[INPUT_ORIG_SIZE] = np.array([height, width], dtype=np.int64)
        return feed, Geometry((height, width), resized.shape[:2])

    def __call__(self, image: np.ndarray, bgr: bool = False) -> Result:
        """Predict one HxWx3 uint8 image, RGB (``bgr=False``) or BGR as OpenCV decodes it (``bgr=True``)."""
        check_image(image)
        if isinstance(self.backend, FrameBackend):
            return self.backend.predict_frame(np.ascontiguousarray(image[..., ::-1]) if bgr else image, self.metadata)
        check_memory_budget(self.metadata.fusion_size, image.shape[:2], self.full_size_channels(),
                            self.memory_budget_mb)
        start = time.perf_counter()
        rgb = np.ascontiguousarray(image[..., ::-1]) if bgr else image
        feed, geometry = self.preprocess(rgb)
        inferred = time.perf_counter()
        outputs = self.backend.infer(feed)
        postprocessing = time.perf_counter()
        processed = postprocess(outputs, self.metadata, geometry)
        done = time.perf_counter()
        timings = {
            "preprocess_ms": (inferred - start) * 1000.0,
            "infer_ms": (postprocessing - inferred) * 1000.0,
            "postprocess_ms": (done - postprocessing) * 1000.0,
            **self.backend.last_timings,
        }
        return Result(rgb, processed.semantic, processed.panoptic, processed.segments, self.metadata, timings,
                      processed.fusion_semantic, processed.fusion_panoptic, processed.fusion_scale)

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _budget(value: float | None) -> float | None:
    """``value`` checked as a memory budget (MiB) when given; None defers to the setting at each call."""
    return None if value is None else memory_budget_mb(value)
