"""COCO-panoptic id <-> RGB conversion, PNG and JSON files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pem.runtime.coco_panoptic import (
    id2rgb,
    load_panoptic_json,
    read_panoptic_png,
    rgb2id,
    write_json_atomic,
    write_panoptic_png,
)


def test_id_rgb_convention_and_round_trip() -> None:
    ids = np.array([[0, 1, 256], [65536, 1 + 2 * 256 + 3 * 65536, 256**3 - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[1, 1].tolist() == [1, 2, 3]
    assert rgb[0, 2].tolist() == [0, 1, 0]
    assert rgb[1, 0].tolist() == [0, 0, 1]
    assert rgb[1, 2].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    colours = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(id2rgb(rgb2id(colours)), colours)


def test_id_rgb_errors() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        id2rgb(np.array([[256**3]]))
    with pytest.raises(ValueError, match="must lie in"):
        id2rgb(np.array([[-1]]))
    with pytest.raises(ValueError, match="integer"):
        id2rgb(np.array([[1.0]]))
    with pytest.raises(ValueError, match="uint8"):
        rgb2id(np.zeros((2, 2, 4), dtype=np.uint8))


def test_png_round_trip(tmp_path: Path) -> None:
    ids = np.random.default_rng(1).integers(0, 256**3, size=(6, 9))
    path = tmp_path / "new_folder" / "pan.png"
    write_panoptic_png(path, ids)
    np.testing.assert_array_equal(read_panoptic_png(path), ids)
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.format == "PNG"
    write_panoptic_png(path, ids[::-1])
    np.testing.assert_array_equal(read_panoptic_png(path), ids[::-1])
    assert [p.name for p in path.parent.iterdir()] == ["pan.png"]


def test_png_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_panoptic_png(tmp_path / "pan.png", np.array([[256**3]]))
    assert list(tmp_path.iterdir()) == []


def test_png_read_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match=re.escape(f"not found: {missing}")):
        read_panoptic_png(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=re.escape(f"cannot read panoptic PNG {garbage}")):
        read_panoptic_png(garbage)
    truncated = tmp_path / "truncated.png"
    write_panoptic_png(truncated, np.random.default_rng(2).integers(0, 256**3, size=(64, 64)))
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match=re.escape(f"cannot read panoptic PNG {truncated}")):
        read_panoptic_png(truncated)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(grey)
    with pytest.raises(ValueError, match=re.escape(f"{grey} must be an RGB image, got mode 'L'")):
        read_panoptic_png(grey)


def test_load_panoptic_json(tmp_path: Path) -> None:
    good = {
        "annotations": [{"image_id": 3, "file_name": "3.png", "segments_info": [{"id": 1, "category_id": 2}]}],
        "categories": [{"id": 2, "isthing": 1}],
    }
    path = tmp_path / "pan.json"
    write_json_atomic(path, good)
    assert load_panoptic_json(path) == good

    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=re.escape(f"not found: {missing}")):
        load_panoptic_json(missing)
    path.write_text("{")
    with pytest.raises(ValueError, match=re.escape(f"{path} is not valid JSON")):
        load_panoptic_json(path)
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected a list under 'categories'")):
        load_panoptic_json(path)
    assert load_panoptic_json(path, require_categories=False) == {"annotations": []}
    path.write_text(json.dumps({"annotations": [{"image_id": 3, "segments_info": []}], "categories": []}))
    with pytest.raises(ValueError, match=r"annotations\[0\] has no 'file_name'"):
        load_panoptic_json(path)
    bad_segment = {"image_id": 3, "file_name": "3.png", "segments_info": [{"id": 1}]}
    path.write_text(json.dumps({"annotations": [bad_segment], "categories": []}))
    with pytest.raises(ValueError, match=r"image_id 3\) has a segment without"):
        load_panoptic_json(path)
