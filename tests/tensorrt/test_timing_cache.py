"""Timing-cache loading and merging when TensorRT's ``create_timing_cache`` returns None (a corrupt or foreign file;
NvInfer.h @v10.9.0:9876-9889 does not say it cannot), with a stand-in ``IBuilderConfig`` passed in."""
from __future__ import annotations

from pathlib import Path

import pytest

from pem.export.tensorrt.engine_builder import EngineBuildError, load_timing_cache, save_timing_cache


class Cache:
    """A ``trt.ITimingCache`` stand-in: its bytes; ``combine`` appends the other's."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def combine(self, other: Cache, ignore_mismatch: bool) -> bool:
        self.data += other.data
        return True

    def serialize(self) -> bytes:
        return self.data


class Config:
    """An ``IBuilderConfig`` stand-in whose ``create_timing_cache`` returns None for data in ``unreadable``."""

    def __init__(self, unreadable: tuple[bytes, ...] = (b"corrupt",), built: bytes = b"|built") -> None:
        self.unreadable, self.built = unreadable, built
        self.created: list[bytes] = []
        self.set: list[Cache] = []

    def create_timing_cache(self, data: bytes) -> Cache | None:
        self.created.append(bytes(data))
        return None if bytes(data) in self.unreadable else Cache(bytes(data))

    def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
        assert isinstance(cache, Cache) and ignore_mismatch is False
        self.set.append(cache)
        return True

    def get_timing_cache(self) -> Cache:
        return Cache(self.built)


def test_load_falls_back_to_a_fresh_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.bin"
    path.write_bytes(b"good")
    config = Config()
    load_timing_cache(config, path)
    assert [c.data for c in config.set] == [b"good"]
    path.write_bytes(b"corrupt")
    config = Config()
    with pytest.warns(RuntimeWarning, match="cache.bin was written by another TensorRT version or GPU, or is damaged; "
                                            "starting a new timing cache"):
        load_timing_cache(config, path)
    assert config.created == [b"corrupt", b""] and [c.data for c in config.set] == [b""]
    with pytest.raises(EngineBuildError, match="could not create an empty timing cache"), pytest.warns(RuntimeWarning):
        load_timing_cache(Config(unreadable=(b"corrupt", b"")), path)


def test_save_merges_or_replaces_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.bin"
    path.write_bytes(b"other build")
    save_timing_cache(Config(), path)
    assert path.read_bytes() == b"other build|built"
    path.write_bytes(b"corrupt")
    with pytest.warns(RuntimeWarning, match="could not be merged .* replaced by this build's timing cache"):
        save_timing_cache(Config(), path)
    assert path.read_bytes() == b"|built"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.bin"]  # written atomically, no temporary left
