"""The backend contract every runtime backend follows (a Polygraphy-style runner).

``infer(feed)`` takes and returns host numpy arrays keyed by the graph's tensor names (``pem.runtime.contract``).
A backend loads its artifact in the constructor, is released by :meth:`Backend.close` (or by leaving a ``with``
block) and records the timings of its last call in ``last_timings``: ``h2d_ms`` (host to device copies),
``compute_ms`` and ``d2h_ms`` (device to host copies), in milliseconds.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

import numpy as np

__all__ = ["Backend", "TensorInfo"]


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: ``shape`` holds ints for fixed axes and a name (or None) for dynamic ones."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    def fixed(self, axis: int) -> int | None:
        """The size of ``axis`` when it is fixed, else None (also when the shape is unknown or shorter)."""
        size = self.shape[axis] if axis < len(self.shape) else None
        return size if isinstance(size, int) and size >= 0 else None


class Backend(ABC):
    """Base class of the backends: checks the feed, keeps the timings, manages the lifetime."""

    name: str = "base"
    #: File suffixes (lower case, with dot) and URL schemes this backend opens, read by the backend registry.
    suffixes: ClassVar[tuple[str, ...]] = ()
    url_schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, artifact: str) -> None:
        """Subclasses load the artifact and fill ``_inputs``, ``_outputs`` and ``_metadata``."""
        self.artifact = artifact
        self.last_timings: dict[str, float] = {"h2d_ms": 0.0, "compute_ms": 0.0, "d2h_ms": 0.0}
        self._closed = False
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        self._metadata: dict[str, str] = {}

    @property
    def inputs(self) -> list[TensorInfo]:
        """The graph inputs, in graph order."""
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        """The graph outputs, in graph order."""
        return list(self._outputs)

    @property
    def metadata(self) -> dict[str, str]:
        """The artifact's key/value metadata (ONNX ``metadata_props`` or an engine's JSON manifest)."""
        return dict(self._metadata)

    @property
    def description(self) -> str:
        """One line naming the backend and where it runs (execution providers, device)."""
        return self.name

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on ``feed`` (every input by name, host arrays of the graph's dtypes) -> host outputs."""
        if self._closed:
            raise RuntimeError(f"{self.name} backend for {self.artifact} is closed")
        self._check_feed(feed)
        return self._infer_impl(feed)

    @abstractmethod
    def _infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the checked feed; set ``last_timings``."""

    def close(self) -> None:
        """Release the session/engine and device memory; ``infer`` fails afterwards. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._close_impl()

    @abstractmethod
    def _close_impl(self) -> None:
        """Release the session/engine and any device memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        expected = {info.name: info for info in self.inputs}
        missing = sorted(set(expected) - set(feed))
        unexpected = sorted(set(feed) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{self.artifact}: feed names do not match the graph inputs {sorted(expected)}"
                f" (missing {missing}, unexpected {unexpected})"
            )
        for name, array in feed.items():
            info = expected[name]
            if not isinstance(array, np.ndarray) or array.dtype != info.dtype or array.ndim != len(info.shape):
                got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
                raise ValueError(f"{self.artifact}: input {name!r} must be {info.dtype} of rank {len(info.shape)}"
                                 f" {info.shape}, got {got}")
            for axis, size in enumerate(array.shape):
                fixed = info.fixed(axis)
                if fixed is not None and fixed != size:
                    raise ValueError(f"{self.artifact}: input {name!r} has shape {array.shape}, "
                                     f"the graph wants {info.shape}")
