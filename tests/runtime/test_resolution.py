"""Fusion resolutions on the host: sizes and scales, the nearest resize of id maps, the raw head's chain in each
mode on the toy graph, Result.at_fusion_size, pem-predict --save-size and the memory budget of ``original``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pem.runtime import Predictor
from pem.runtime.contract import META_FUSION_SIZE
from pem.runtime.errors import EXIT_REFUSED
from pem.runtime.fusion import Segment
from pem.runtime.resolution import (
    DEFAULT_MEMORY_BUDGET_MB,
    MEMORY_BUDGET_ENV,
    MemoryBudgetError,
    check_memory_budget,
    fusion_scale,
    fusion_shape,
    memory_budget_mb,
    resize_nearest,
    resize_panoptic,
)
from tests.runtime import graphs
from tests.runtime.conftest import quadrants


def test_fusion_shapes_and_scales() -> None:
    resized, original = (512, 683), (1080, 1440)
    assert fusion_shape("original", resized, original) == (1080, 1440)
    assert fusion_shape("input", resized, original) == (512, 683)
    assert fusion_shape("mask", resized, original) == (128, 171)  # ceil(683 / 4)
    assert fusion_scale("original", resized, original) == (1.0, 1.0)
    assert fusion_scale("input", resized, original) == pytest.approx((512 / 1080, 683 / 1440))
    assert fusion_scale("mask", resized, original) == pytest.approx((128 / 1080, 683 / 4 / 1440))
    with pytest.raises(ValueError, match="unknown fusion size 'half'"):
        fusion_shape("half", resized, original)


def test_resize_nearest_samples_pixel_centres() -> None:
    ids = np.arange(6, dtype=np.int32).reshape(2, 3)
    # 2x3 -> 4x7: rows 0,0,1,1; columns floor((j + 0.5) * 3 / 7) = 0,0,1,1,1,2,2
    out = resize_nearest(ids, (4, 7), (2 / 4, 3 / 7))
    assert out.dtype == np.int32 and out.shape == (4, 7)
    np.testing.assert_array_equal(out[0], [0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(out[:, 6], [2, 2, 5, 5])
    assert resize_nearest(ids, (2, 3), (1.0, 1.0)) is ids
    # the mask stride: a 3x3 map of a 10x12 input (stride 4) resized to 20x24: each cell covers 8x8 original pixels
    cells = np.arange(9, dtype=np.int64).reshape(3, 3)
    full = resize_nearest(cells, (20, 24), fusion_scale("mask", (10, 12), (20, 24)))
    assert (full[:8, :8] == 0).all() and (full[8:16, 8:16] == 4).all() and (full[16:, 16:] == 8).all()


def test_resize_panoptic_counts_areas_on_the_resized_map() -> None:
    ids = np.array([[1, 1, 2], [0, 3, 2]], dtype=np.int32)
    segments = [Segment(1, 0, False, 2, 0.9), Segment(2, 2, True, 2, 0.8), Segment(3, 3, True, 1, 0.7)]
    full, resized_segments = resize_panoptic(ids, segments, (4, 6), (0.5, 0.5))
    assert full.shape == (4, 6)
    assert [s.area for s in resized_segments] == [8, 8, 4]
    assert [s.area for s in resized_segments] == [int((full == s.id).sum()) for s in segments]
    assert [(s.id, s.category_id, s.score) for s in resized_segments] == [(s.id, s.category_id, s.score)
                                                                        for s in segments]


def _toy(path: Path, fusion_size: str | None, panoptic_on: bool = True) -> Path:
    props = graphs.metadata("raw", preset="toy_panoptic" if panoptic_on else "toy_semantic", panoptic_on=panoptic_on)
    if fusion_size is not None:
        props[META_FUSION_SIZE] = fusion_size
    return graphs.raw_graph(path, props=props)


@pytest.mark.parametrize("panoptic_on", [True, False])
def test_input_mode_equals_original_without_resize(tmp_path: Path, panoptic_on: bool) -> None:
    image = quadrants(64, 96)  # shortest edge 64 = the toy's min_size: fed as is
    with Predictor(_toy(tmp_path / "old.onnx", None, panoptic_on)) as old, \
            Predictor(_toy(tmp_path / "input.onnx", "input", panoptic_on)) as new:
        assert old.metadata.fusion_size == "original" and new.metadata.fusion_size == "input"
        exact, fused = old(image), new(image)
    np.testing.assert_array_equal(fused.semantic, exact.semantic)
    if panoptic_on:
        np.testing.assert_array_equal(fused.panoptic, exact.panoptic)
        assert fused.segments == exact.segments and len(fused.segments) == 3


def test_mask_mode_resizes_the_id_maps(tmp_path: Path) -> None:
    image = np.kron(quadrants(32, 48), np.ones((4, 4, 1), dtype=np.uint8))  # 128x192 -> resized to 64x96
    with Predictor(_toy(tmp_path / "mask.onnx", "mask")) as predictor:
        result = predictor(image)
    assert result.fusion_panoptic.shape == (16, 24) and result.fusion_scale == (16 / 128, 24 / 192)
    assert result.panoptic.shape == (128, 192) and result.panoptic.dtype == np.int32
    np.testing.assert_array_equal(result.panoptic, np.kron(result.fusion_panoptic, np.ones((8, 8), np.int32)))
    np.testing.assert_array_equal(result.semantic, np.kron(result.fusion_semantic, np.ones((8, 8), np.int64)))
    assert [s.area for s in result.segments] == [int((result.panoptic == s.id).sum()) for s in result.segments]
    assert sorted(s.category_id for s in result.segments) == [0, 1, 2]  # red, green, blue queries
    small = result.at_fusion_size()
    assert small.image.shape == (16, 24, 3) and small.panoptic is result.fusion_panoptic
    assert [s.area for s in small.segments] == [a // 64 for a in (s.area for s in result.segments)]
    info = small.save_coco_panoptic(tmp_path / "out", "frame.png")
    assert Image.open(tmp_path / "out" / "frame.png").size == (24, 16)
    assert sum(s["area"] for s in info["segments_info"]) == int((small.panoptic != 0).sum())


def test_memory_budget_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    assert memory_budget_mb() == DEFAULT_MEMORY_BUDGET_MB == 4096
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "512")
    assert memory_budget_mb() == 512 and memory_budget_mb(64) == 64
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(MemoryBudgetError, match="PEM_MEMORY_BUDGET_MB='lots': expected a positive number"):
        memory_budget_mb()
    monkeypatch.delenv(MEMORY_BUDGET_ENV)
    # ADE20K semantic (150 classes): 1080p passes the default budget, a 12 MP photo does not, in 'original' only
    check_memory_budget("original", (1080, 1920), 150)
    with pytest.raises(MemoryBudgetError) as refused:
        check_memory_budget("original", (3000, 4000), 150)
    message = str(refused.value)
    assert "\n" not in message and "4,096 MiB" in message and "--fusion-size input" in message
    assert "20,599 MiB" in message  # 3 x 4 bytes x 150 x 12e6 / 2**20
    assert refused.value.exit_code == EXIT_REFUSED
    check_memory_budget("input", (12000, 12000), 150)
    # int32 indexing: 100 queries x 144 MP > 2^31 elements, refused whatever the budget
    with pytest.raises(MemoryBudgetError):
        check_memory_budget("original", (12000, 12000), 100, budget_mb=10**9)


def test_predictor_refuses_original_frames_over_the_budget(tmp_path: Path) -> None:
    image = quadrants(120, 160)  # 6 queries x 19200 px x 12 bytes = 1.3 MiB of full-size tensors
    with Predictor(_toy(tmp_path / "old.onnx", None), memory_budget_mb=1.0) as predictor:
        with pytest.raises(MemoryBudgetError, match="over the memory budget of 1 MiB"):
            predictor(image)
    with Predictor(_toy(tmp_path / "mask.onnx", "mask"), memory_budget_mb=1.0) as predictor:
        assert predictor(image).panoptic.shape == (120, 160)
    with pytest.raises(MemoryBudgetError):
        Predictor(_toy(tmp_path / "bad.onnx", "mask"), memory_budget_mb=-1)


def test_pem_predict_save_size_and_budget_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from pem.runtime.cli import main

    source = tmp_path / "frame.png"
    Image.fromarray(np.kron(quadrants(32, 48), np.ones((4, 4, 1), dtype=np.uint8))).save(source)
    mask = _toy(tmp_path / "mask.onnx", "mask")
    for size, expected in (("fusion", (24, 16)), ("original", (192, 128))):
        out = tmp_path / size
        assert main([str(mask), str(source), "--out", str(out), "--save", "panoptic,semantic", "--save-size", size,
                     "--quiet"]) == 0
        assert Image.open(out / "panoptic" / "frame.png").size == expected
        assert Image.open(out / "semantic" / "frame.png").size == expected
        annotation = json.loads((out / "panoptic.json").read_text())["annotations"][0]
        panoptic = np.asarray(Image.open(out / "panoptic" / "frame.png"), dtype=np.int64)
        assert sum(s["area"] for s in annotation["segments_info"]) == int((panoptic.sum(axis=2) != 0).sum())
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1")
    assert main([str(_toy(tmp_path / "old.onnx", None)), str(source), "--out", str(tmp_path / "refused"),
                 "--quiet"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "over the memory budget of 1 MiB" in err and "--fusion-size input" in err and "Traceback" not in err
