"""The inference callables PyTriton binds: frames in (encoded bytes or raw RGB), the Predictor's Result out.

Wire format: :mod:`pem.runtime.backends.tritonserver`. One :class:`FrameModel` per model instance, each with its
own :class:`~pem.runtime.Predictor`. A request carries one frame. When the artifact's batch axis is free and it takes
no ``orig_size`` input, frames of one call (Triton's dynamic batcher groups requests) that resize to the same size
run as one graph batch; otherwise each frame runs alone. Each instance runs one blank batch of the largest size first
(:func:`warm_up`), so ONNX Runtime's memory arena has its final size before the first request.

Errors: a bad frame (undecodable bytes, wrong dtype or shape, over the pixel budget ``--max-pixels``) raises
:class:`BadFrame`, whose message is one line ``pem-serve: PROBLEM: DETAIL``; PyTriton answers every request of that
call with the error (``pytriton/proxy/model.py`` ``BatchResponsesHandler``, tag v0.7.0), which is that request only
unless dynamic batching grouped it with others (``--max-batch`` > 1). PyTriton 0.7 wraps that line in traceback text
whatever the exception type (docs/serving.md, "Wire format"); the client backend keeps the line.
"""
from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pem.runtime.backends.tritonserver import (
    ERROR_PREFIX,
    FRAME_OUTPUTS,
    INPUT_IMAGE_BYTES,
    INPUT_PIXELS,
    encode_result,
    metadata_payload,
)
from pem.runtime.contract import INPUT_ORIG_SIZE
from pem.runtime.errors import PemError
from pem.runtime.postprocess import postprocess
from pem.runtime.predictor import Predictor
from pem.runtime.preprocess import check_image
from pem.runtime.result import Result

__all__ = ["BadFrame", "FrameModel", "decode_image", "metadata_callable", "supports_batching", "warm_up"]

LOGGER = logging.getLogger("pem.serve")


class BadFrame(PemError, ValueError):
    """A request's frame that cannot be predicted; the message, ``pem-serve: PROBLEM: DETAIL``, goes back to that
    request (``reason`` is ``PROBLEM: DETAIL``)."""

    def __init__(self, problem: str, detail: str) -> None:
        self.reason = f"{problem}: {detail}"
        super().__init__(ERROR_PREFIX + self.reason)


def _over_budget(height: int, width: int, max_pixels: int) -> BadFrame:
    return BadFrame("image over the size budget", f"{height}x{width} is {height * width:,} pixels, the limit is "
                    f"{max_pixels:,} (pem-serve --max-pixels)")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> uint8 [H, W, 3] RGB (EXIF orientation applied; grey, palette, alpha converted);
    BadFrame for data Pillow cannot decode and for images over ``max_pixels`` (checked before decoding)."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # our limit, not Pillow's bomb check, refuses large images
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
        with opened:
            if opened.width * opened.height > max_pixels:
                raise _over_budget(opened.height, opened.width, max_pixels)
            rgb = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except UnidentifiedImageError:
        raise BadFrame("corrupt image", f"{len(data)} bytes that are not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, BadFrame):
            raise
        raise BadFrame("corrupt image", f"truncated or undecodable ({exc})") from None
    return np.ascontiguousarray(rgb)


def _frame(request: Any, max_pixels: int) -> np.ndarray:
    """The one frame of a request (``image`` or ``pixels``) as checked uint8 [H, W, 3] RGB."""
    data = request.data
    given = [name for name in (INPUT_IMAGE_BYTES, INPUT_PIXELS) if name in data]
    if len(given) != 1:
        raise BadFrame("bad request", f"send exactly one of the inputs {INPUT_IMAGE_BYTES!r} (encoded bytes) and "
                       f"{INPUT_PIXELS!r} (uint8 HxWx3), got {given or 'neither'}")
    array = data[given[0]]
    if array.shape[0] != 1:
        raise BadFrame("bad request", f"one frame per request (batch 1), got a batch of {array.shape[0]}")
    if given[0] == INPUT_IMAGE_BYTES:
        value = array.ravel()[0]
        return decode_image(value if isinstance(value, bytes) else bytes(value), max_pixels)
    pixels = array[0]
    if pixels.shape[0] * pixels.shape[1] > max_pixels:
        raise _over_budget(pixels.shape[0], pixels.shape[1], max_pixels)
    try:
        check_image(pixels)
    except (TypeError, ValueError) as exc:
        raise BadFrame("bad pixels", str(exc)) from None
    return pixels


def supports_batching(predictor: Predictor) -> bool:
    """True when frames can run as one graph batch: a free batch axis and no per-frame ``orig_size`` input."""
    names = {info.name: info for info in predictor.backend.inputs}
    image = next(info for name, info in names.items() if name != INPUT_ORIG_SIZE)
    return INPUT_ORIG_SIZE not in names and image.fixed(0) is None


def warm_up(predictor: Predictor, max_batch: int) -> tuple[int, ...]:
    """Run the graph once on blank frames: ``max_batch`` of them where frames run as one graph batch, else one, at
    the graph's fixed size (the preset's square of ``min_size`` for a graph of free size). The backend's memory
    (ONNX Runtime's arena) then holds the largest batch before requests come, instead of growing under load.
    Returns the image input's shape it ran."""
    height, width = predictor.fixed_size or (predictor.metadata.min_size,) * 2
    feed, _ = predictor.preprocess(np.zeros((height, width, 3), np.uint8))
    count = max_batch if supports_batching(predictor) else 1
    image = next(name for name in feed if name != INPUT_ORIG_SIZE)
    feed[image] = np.concatenate([feed[image]] * count)
    predictor.backend.infer(feed)
    return feed[image].shape


class FrameModel:
    """``model(requests) -> responses``: the inference callable of one model instance (module docstring).
    ``max_batch`` is the most requests Triton gives one call (``--max-batch``); above 1 their frames run as one graph
    batch where the graph allows it (:func:`supports_batching`)."""

    def __init__(self, predictor: Predictor, max_pixels: int, max_batch: int) -> None:
        self.predictor = predictor
        self.max_pixels = max_pixels
        self.batch = max_batch > 1 and supports_batching(predictor)
        self.warmed_shape = warm_up(predictor, max_batch)

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        frames: list[np.ndarray] = []
        problems: list[tuple[int, BadFrame]] = []
        for index, request in enumerate(requests):
            try:
                frames.append(_frame(request, self.max_pixels))
            except BadFrame as exc:
                problems.append((index, exc))
        if problems:
            refused = problems[0][1] if len(requests) == 1 else BadFrame(
                f"{len(problems)} bad request(s) in a dynamic batch of {len(requests)}",
                "; ".join(f"request {index + 1}: {exc.reason}" for index, exc in problems))
            LOGGER.warning("refused: %s", refused.reason)
            raise refused
        try:
            results = self._batched(frames) if self.batch and len(frames) > 1 else [self.predictor(f) for f in frames]
        except PemError as exc:  # the runtime refused a frame (its memory budget, the artifact's limits)
            LOGGER.warning("refused: %s", exc)
            raise BadFrame("frame refused", str(exc)) from None
        return [encode_result(result, request.requested_output_names or FRAME_OUTPUTS)
                for request, result in zip(requests, results)]

    def _batched(self, frames: list[np.ndarray]) -> list[Result]:
        """Frames that resize to one size run as one graph batch; the others alone."""
        predictor = self.predictor
        prepared = [predictor.preprocess(frame) for frame in frames]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (_, geometry) in enumerate(prepared):
            groups.setdefault(geometry.resized, []).append(index)
        results: list[Result | None] = [None] * len(frames)
        for indices in groups.values():
            if len(indices) == 1:
                results[indices[0]] = predictor(frames[indices[0]])
                continue
            feed = {name: np.concatenate([prepared[i][0][name] for i in indices]) for name in prepared[indices[0]][0]}
            outputs = predictor.backend.infer(feed)
            for row, index in enumerate(indices):
                processed = postprocess({k: v[row:row + 1] for k, v in outputs.items()}, predictor.metadata,
                                        prepared[index][1])
                results[index] = Result(frames[index], processed.semantic, processed.panoptic, processed.segments,
                                        predictor.metadata, {"batch": float(len(indices))}, processed.fusion_semantic,
                                        processed.fusion_panoptic, processed.fusion_scale)
        return [result for result in results if result is not None]


def metadata_callable(predictor: Predictor) -> Callable[[Sequence[Any]], list[dict[str, np.ndarray]]]:
    """The callable of the ``<MODEL>_metadata`` model: any request -> the artifact's metadata JSON."""
    backend = predictor.backend
    payload = metadata_payload(backend.metadata, backend.inputs, backend.outputs, backend.description)

    def answer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        return [{"metadata": np.array([[payload]], dtype=np.object_)} for _ in requests]

    return answer
