"""The device-independent part of the torch backend's CUDA graphs: a bounded, thread-safe LRU of captured graphs.

A captured graph owns static input buffers (its inputs are copied into them before each replay) and static
output buffers (replay overwrites them). ``GraphCache.run`` copies the caller's inputs in, replays, and lets the
caller read the outputs, all under one lock, so two threads never interleave around the same buffers. The
least recently used graph is dropped (with its buffers) before a new one is captured beyond ``max_graphs``.
The capture itself is the caller's (``pem.export.torch_backend`` captures CUDA graphs); tests drive this class with
any callable as ``replay``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple, TypeVar

import torch

T = TypeVar("T")


class CapturedGraph(NamedTuple):
    """``replay()`` recomputes ``outputs`` from ``inputs`` in place (both tuples of tensors it owns)."""

    replay: Callable[[], None]
    inputs: tuple[torch.Tensor, ...]
    outputs: tuple[torch.Tensor, ...]


class GraphCache:
    """At most ``max_graphs`` captured graphs, keyed by the caller (input shapes, dtypes, sizes), LRU order."""

    def __init__(self, max_graphs: int = 4) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[Hashable, CapturedGraph] = OrderedDict()
        self._lock = threading.Lock()
        self.captures = 0

    def __len__(self) -> int:
        return len(self._graphs)

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._graphs)

    def run(self, key: Hashable, inputs: tuple[torch.Tensor, ...], capture: Callable[[], CapturedGraph],
            read: Callable[[tuple[torch.Tensor, ...]], T]) -> T:
        """Replay the graph of ``key`` (``capture()`` it first if absent) on ``inputs``; return ``read(outputs)``.

        ``inputs`` must match the static inputs' shapes and dtypes (the key's job); ``read`` must copy what it
        keeps, because the next replay overwrites the outputs.
        """
        with self._lock:
            graph = self._graphs.pop(key, None)
            if graph is None:
                while len(self._graphs) >= self.max_graphs:
                    self._graphs.popitem(last=False)
                graph = capture()
                self.captures += 1
            self._graphs[key] = graph
            for static, value in zip(graph.inputs, inputs, strict=True):
                static.copy_(value)
            graph.replay()
            return read(graph.outputs)

    def clear(self) -> None:
        """Drop every graph and its buffers."""
        with self._lock:
            self._graphs.clear()
