"""The CUDA-graph cache's device-independent logic: buffer reuse, the LRU bound, reading the outputs, the lock.

A "graph" here is any replay callable over owned buffers (the torch backend captures real CUDA graphs into it).
"""
from __future__ import annotations

import threading
import time

import pytest
import torch

from pem.graph_cache import CapturedGraph, GraphCache


class _Doubling:
    """A stand-in captured computation: ``outputs[0] = 2 * inputs[0]``, slow enough for threads to interleave."""

    def __init__(self, like: torch.Tensor, pause: float = 0.0) -> None:
        self.image = like.clone()
        self.result = torch.empty_like(like)
        self.pause = pause
        self.replays = 0

    def replay(self) -> None:
        self.result.copy_(self.image)
        time.sleep(self.pause)
        self.result.mul_(2)
        self.replays += 1

    def captured(self) -> CapturedGraph:
        return CapturedGraph(self.replay, (self.image,), (self.result,))


def _run(cache: GraphCache, made: dict, value: torch.Tensor, pause: float = 0.0) -> torch.Tensor:
    key = tuple(value.shape)

    def capture() -> CapturedGraph:
        made[key] = _Doubling(value, pause)
        return made[key].captured()

    return cache.run(key, (value,), capture, lambda outputs: outputs[0].clone())


def test_one_capture_per_key_and_buffers_reused() -> None:
    cache, made = GraphCache(max_graphs=2), {}
    first = _run(cache, made, torch.ones(3))
    graph = made[(3,)]
    second = _run(cache, made, torch.full((3,), 5.0))
    assert cache.captures == 1 and made[(3,)] is graph and graph.replays == 2
    assert first.tolist() == [2.0] * 3 and second.tolist() == [10.0] * 3
    assert graph.image.tolist() == [5.0] * 3  # the caller's values were copied into the static input


def test_least_recently_used_graph_is_dropped_at_the_bound() -> None:
    cache, made = GraphCache(max_graphs=2), {}
    for size in (1, 2, 1, 3):  # 2 is the least recently used when 3 arrives
        assert _run(cache, made, torch.ones(size)).tolist() == [2.0] * size
    assert cache.keys() == [(1,), (3,)] and cache.captures == 3
    _run(cache, made, torch.ones(2))
    assert cache.keys() == [(3,), (2,)] and cache.captures == 4
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="max_graphs"):
        GraphCache(0)


def test_concurrent_calls_never_interleave_around_the_static_buffers() -> None:
    """Without the lock a second thread's input copy lands between another's copy and its read (wrong result)."""
    cache, made = GraphCache(), {}
    _run(cache, made, torch.zeros(4))
    results: dict[int, list[float]] = {}

    def worker(value: int) -> None:
        for _ in range(5):
            out = _run(cache, made, torch.full((4,), float(value)), pause=0.002)
            results.setdefault(value, []).extend(out.tolist())

    made[(4,)].pause = 0.002
    threads = [threading.Thread(target=worker, args=(value,)) for value in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {value: set(outs) for value, outs in results.items()} == {v: {2.0 * v} for v in range(1, 5)}
    assert cache.captures == 1 and made[(4,)].replays == 21
