"""The synthetic COCO-panoptic generator: determinism, scene content, JSON/PNG agreement, PQ 1.0 against itself,
and the ``pem-data synthetic`` CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pem.config import SYNTHETIC_CATEGORIES
from pem.data.cli import main
from pem.data.synthetic import generate_synthetic_dataset
from pem.metrics import evaluate_panoptic_folders
from pem.runtime.coco_panoptic import read_panoptic_png

THING_IDS = {c.dataset_id for c in SYNTHETIC_CATEGORIES if c.isthing}
STUFF_IDS = {c.dataset_id for c in SYNTHETIC_CATEGORIES if not c.isthing}
CONTIGUOUS = {c.dataset_id: c.id for c in SYNTHETIC_CATEGORIES}
DIRS = (("images", "jpg"), ("panoptic", "png"), ("semantic", "png"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "set", 16, (96, 112), seed=3)
    return out, json.loads((out / "panoptic.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = _files(generate_synthetic_dataset(tmp_path / "a", 3, (64, 80), seed=5))
    second = _files(generate_synthetic_dataset(tmp_path / "b", 3, (64, 80), seed=5))
    other = _files(generate_synthetic_dataset(tmp_path / "c", 3, (64, 80), seed=6))
    expected = ["panoptic.json"] + [f"{d}/00000{i}.{e}" for d, e in DIRS for i in (1, 2, 3)]
    assert sorted(first) == sorted(expected)
    assert first == second
    assert sorted(other) == sorted(first)
    assert all(other[name] != first[name] for name in first if name.startswith(("images", "panoptic/")))


def test_json_structure_and_categories(dataset: tuple[Path, dict[str, Any]]) -> None:
    out, data = dataset
    assert [image["id"] for image in data["images"]] == list(range(1, 17))
    assert all(image["height"] == 96 and image["width"] == 112 for image in data["images"])
    assert [a["image_id"] for a in data["annotations"]] == list(range(1, 17))
    assert data["categories"] == [
        {"id": c.dataset_id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
        for c in SYNTHETIC_CATEGORIES
    ]
    for image in data["images"]:
        with Image.open(out / "images" / image["file_name"]) as decoded:
            assert decoded.format == "JPEG" and decoded.mode == "RGB" and decoded.size == (112, 96)


def test_classes_void_and_crowd_appear(dataset: tuple[Path, dict[str, Any]]) -> None:
    out, data = dataset
    segments = [s for a in data["annotations"] for s in a["segments_info"]]
    assert len({s["category_id"] for s in segments if not s["iscrowd"]} & THING_IDS) >= 4
    assert len({s["category_id"] for s in segments} & STUFF_IDS) >= 3
    assert any(s["iscrowd"] and s["category_id"] in THING_IDS for s in segments)
    assert all(not s["iscrowd"] for s in segments if s["category_id"] in STUFF_IDS)
    void = [int((read_panoptic_png(out / "panoptic" / a["file_name"]) == 0).sum()) for a in data["annotations"]]
    assert sum(v > 0 for v in void) >= 3
    for annotation in data["annotations"]:
        things = sum(s["category_id"] in THING_IDS and not s["iscrowd"] for s in annotation["segments_info"])
        stuff = sum(s["category_id"] in STUFF_IDS for s in annotation["segments_info"])
        assert things <= 6 and 1 <= stuff <= 4


def test_thing_instances_touch(dataset: tuple[Path, dict[str, Any]]) -> None:
    out, data = dataset
    touching_images = 0
    for annotation in data["annotations"]:
        ids = read_panoptic_png(out / "panoptic" / annotation["file_name"])
        things = [s["id"] for s in annotation["segments_info"] if s["category_id"] in THING_IDS and not s["iscrowd"]]
        is_thing = np.isin(ids, things)
        pairs = [(ids[:, :-1], ids[:, 1:], is_thing[:, :-1] & is_thing[:, 1:])]
        pairs.append((ids[:-1], ids[1:], is_thing[:-1] & is_thing[1:]))
        touching_images += any(((a != b) & both).any() for a, b, both in pairs)
    assert touching_images >= 4


def test_json_agrees_with_pngs(dataset: tuple[Path, dict[str, Any]]) -> None:
    out, data = dataset
    for annotation in data["annotations"]:
        ids = read_panoptic_png(out / "panoptic" / annotation["file_name"])
        with Image.open(out / "semantic" / annotation["file_name"]) as image:
            assert image.mode == "L"
            semantic = np.asarray(image)
        segments = annotation["segments_info"]
        assert sorted(s["id"] for s in segments) == sorted(int(i) for i in np.unique(ids) if i != 0)
        for segment in segments:
            region = ids == segment["id"]
            rows, cols = np.nonzero(region)
            assert segment["area"] == int(region.sum())
            x, y = int(cols.min()), int(rows.min())
            assert segment["bbox"] == [x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1]
            assert (semantic[region] == CONTIGUOUS[segment["category_id"]]).all()
        assert (semantic[ids == 0] == 255).all()
        assert min(s["area"] for s in segments if s["category_id"] in THING_IDS) >= 24


def test_textures_are_not_flat(dataset: tuple[Path, dict[str, Any]]) -> None:
    out, data = dataset
    annotation = data["annotations"][0]
    ids = read_panoptic_png(out / "panoptic" / annotation["file_name"])
    image = np.asarray(Image.open(out / "images" / "000001.jpg")).astype(np.float64)
    stuff = max((s for s in annotation["segments_info"] if s["category_id"] in STUFF_IDS), key=lambda s: s["area"])
    assert image[ids == stuff["id"]].std(axis=0).min() > 4.0


def test_pq_of_ground_truth_against_itself_is_one(dataset: tuple[Path, dict[str, Any]]) -> None:
    out, _ = dataset
    json_path, folder = out / "panoptic.json", out / "panoptic"
    results = evaluate_panoptic_folders(json_path, folder, json_path, folder)
    assert results["All"]["pq"] == pytest.approx(1.0)
    assert results["Things"]["n"] >= 4 and results["Stuff"]["n"] >= 3


def test_generator_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32x32"):
        generate_synthetic_dataset(tmp_path, 1, (16, 64), seed=0)
    with pytest.raises(ValueError, match="n must be at least 1"):
        generate_synthetic_dataset(tmp_path, 0, (64, 64), seed=0)


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["synthetic", "--out", str(out), "--n", "2", "--size", "48x64", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 images of 48x64 (seed 1)" in printed and str(out) in printed
    data = json.loads((out / "panoptic.json").read_text())
    assert len(data["annotations"]) == 2
    assert read_panoptic_png(out / "panoptic" / "000002.png").shape == (48, 64)
    assert main(["synthetic", "--out", str(out), "--n", "1", "--size", "48x64", "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "2", "--size", "48by64"], "bad size '48by64': use H, HxW or H,W"),
        (["--n", "2", "--size", "16x64"], "each side must be in 32..8192 px"),
        (["--n", "1", "--size", "100000x100000"], "each side must be in 32..8192 px"),
        (["--n", "0", "--size", "48x64"], "--n must be at least 1"),
        (["--n", "1", "--size", "48x64"], "is not empty; pass --overwrite"),
    ],
)
def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    (tmp_path / "existing.txt").write_text("keep me")
    assert main(["synthetic", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pem-data: error:") and message in err and "\n" not in err
    assert (tmp_path / "existing.txt").read_text() == "keep me"
