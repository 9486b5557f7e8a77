"""Dataset readers on tiny trees with the real Cityscapes, ADE20K and COCO-panoptic layouts; contiguous mapping,
ignore handling, empty-image filtering, bad files (raise / skip), build_dataset and collate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pem.config import PIXEL_MEAN, SYNTHETIC_CATEGORIES, get_preset, load_categories
from pem.data.datasets import (
    ADE20KPanopticDataset,
    ADE20KSemanticDataset,
    CityscapesPanopticDataset,
    CityscapesSemanticDataset,
    CocoPanopticDataset,
    DatasetError,
    SemanticDataset,
    build_dataset,
    collate,
    panoptic_targets,
)
from pem.data.synthetic import generate_synthetic_dataset
from pem.data.transforms import TrainTransform
from pem.runtime.coco_panoptic import write_json_atomic, write_panoptic_png
from tests.data.checks import assert_masks_match_sem_seg

CITYSCAPES_IDS = ["aachen_000000_000019", "bremen_000001_000019", "ulm_000002_000019"]
H, W = 12, 20


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _train_ids() -> np.ndarray:
    """Cityscapes train ids: road (0) on top, car (13) bottom-left, ignore (255) bottom-right."""
    label = np.zeros((H, W), dtype=np.uint8)
    label[6:, :10] = 13
    label[6:, 10:] = 255
    return label


def _cityscapes(root: Path) -> Path:
    """Three train images with labelTrainIds and panoptic files (the third image has only a crowd)."""
    annotations, images = [], []
    for index, image_id in enumerate(CITYSCAPES_IDS):
        city = image_id.split("_")[0]
        _save(root / "leftImg8bit" / "train" / city / f"{image_id}_leftImg8bit.png", _image(index))
        _save(root / "gtFine" / "train" / city / f"{image_id}_gtFine_labelTrainIds.png", _train_ids())
        ids = np.full((H, W), 7, dtype=np.int64)  # road, label id 7
        ids[6:, :5], ids[6:, 5:10], ids[6:, 10:15] = 26000, 26001, 24  # two cars, a crowd of persons
        ids[6:, 15:] = 0
        segments = [
            {"id": 7, "category_id": 7, "iscrowd": 0}, {"id": 26000, "category_id": 26, "iscrowd": 0},
            {"id": 26001, "category_id": 26, "iscrowd": 0}, {"id": 24, "category_id": 24, "iscrowd": 1},
        ]
        if index == 2:
            ids[ids != 24] = 0
            segments = segments[3:]
        name = f"{image_id}_gtFine_panoptic.png"
        write_panoptic_png(root / "gtFine" / "cityscapes_panoptic_train" / name, ids)
        annotations.append({"image_id": image_id, "file_name": name, "segments_info": segments})
        images.append({"id": image_id, "file_name": f"{image_id}_gtFine_leftImg8bit.png", "height": H, "width": W})
    categories = [{"id": 7, "isthing": 0}, {"id": 24, "isthing": 1}, {"id": 26, "isthing": 1}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    write_json_atomic(root / "gtFine" / "cityscapes_panoptic_train.json", data)
    return root


def _ade20k(root: Path) -> Path:
    """Two training images: SceneParsing annotations and detectron2-style panoptic files."""
    base = root / "ADEChallengeData2016"
    categories = load_categories("ade20k")
    wall, person = categories[0], next(c for c in categories if c.isthing)
    annotations, images = [], []
    for index in (1, 2):
        stem = f"ADE_train_{index:08d}"
        _save(base / "images" / "training" / f"{stem}.jpg", _image(index))
        label = np.zeros((H, W), dtype=np.uint8)
        label[:4], label[4:8] = 1, 150  # 0 "other" stays in the bottom rows
        _save(base / "annotations" / "training" / f"{stem}.png", label)
        ids = np.zeros((H, W), dtype=np.int64)
        ids[:6], ids[6:, :8] = 5, 9
        write_panoptic_png(base / "ade20k_panoptic_train" / f"{stem}.png", ids)
        segments = [{"id": 5, "category_id": wall.dataset_id}, {"id": 9, "category_id": person.dataset_id}]
        annotations.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": segments})
        images.append({"id": stem, "file_name": f"{stem}.jpg", "height": H, "width": W})
    data = {"images": images, "annotations": annotations, "categories": []}
    write_json_atomic(base / "ade20k_panoptic_train.json", data)
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "train", 4, (64, 80), seed=0)


def test_cityscapes_semantic(tmp_path: Path) -> None:
    dataset = CityscapesSemanticDataset(_cityscapes(tmp_path), "train")
    assert len(dataset) == 3
    item = dataset[1]
    assert item["image_id"] == "bremen_000001_000019"
    assert item["file_name"].endswith("leftImg8bit/train/bremen/bremen_000001_000019_leftImg8bit.png")
    np.testing.assert_array_equal(item["image"], _image(1))
    np.testing.assert_array_equal(item["sem_seg"], _train_ids())
    assert item["labels"].tolist() == [0, 13] and item["labels"].dtype == np.int64
    assert item["masks"].shape == (2, H, W) and item["masks"].dtype == bool
    assert_masks_match_sem_seg(item)


def test_cityscapes_panoptic_maps_label_ids_and_filters_crowd_only_images(tmp_path: Path) -> None:
    dataset = CityscapesPanopticDataset(_cityscapes(tmp_path), "train")
    assert len(dataset) == 2 and dataset.num_filtered == 1
    item = dataset[0]
    assert item["image_id"] == "aachen_000000_000019"
    np.testing.assert_array_equal(item["image"], _image(0))
    assert item["labels"].tolist() == [0, 13, 13]  # road (label id 7) -> 0, car (26) -> 13
    assert (item["sem_seg"][6:, 10:] == 255).all()  # crowd persons and void
    assert (item["sem_seg"][6:, :10] == 13).all() and (item["sem_seg"][:6] == 0).all()
    assert item["masks"][1, 6:, :5].all() and item["masks"][1].sum() == 30
    assert_masks_match_sem_seg(item)


def test_ade20k_semantic_ignores_other_and_shifts_ids(tmp_path: Path) -> None:
    dataset = ADE20KSemanticDataset(_ade20k(tmp_path), "train")
    assert len(dataset) == 2 and len(ADE20KSemanticDataset(tmp_path, "training")) == 2
    item = dataset[0]
    assert item["image"].shape == (H, W, 3) and item["image_id"] == "ADE_train_00000001"
    assert item["labels"].tolist() == [0, 149]
    assert (item["sem_seg"][:4] == 0).all() and (item["sem_seg"][4:8] == 149).all()
    assert (item["sem_seg"][8:] == 255).all()
    assert_masks_match_sem_seg(item)
    with pytest.raises(ValueError, match="unknown ADE20K split"):
        ADE20KSemanticDataset(tmp_path, "test")


def test_ade20k_panoptic(tmp_path: Path) -> None:
    dataset = ADE20KPanopticDataset(_ade20k(tmp_path), "train")
    person = next(c for c in load_categories("ade20k") if c.isthing)
    item = dataset[1]
    assert item["file_name"].endswith("images/training/ADE_train_00000002.jpg")
    assert item["labels"].tolist() == [0, person.id]
    assert (item["sem_seg"][6:, 8:] == 255).all()
    assert_masks_match_sem_seg(item)


def test_coco_panoptic_on_synthetic_folder(synthetic: Path) -> None:
    dataset = CocoPanopticDataset(
        synthetic / "images", synthetic / "panoptic", synthetic / "panoptic.json", SYNTHETIC_CATEGORIES
    )
    annotations = json.loads((synthetic / "panoptic.json").read_text())["annotations"]
    assert len(dataset) == 4
    for item, annotation in zip(dataset, annotations):
        expected = [s["category_id"] - 1 for s in annotation["segments_info"] if not s["iscrowd"]]
        assert item["labels"].tolist() == expected and item["image_id"] == annotation["image_id"]
        assert item["image"].shape == (64, 80, 3) and item["sem_seg"].dtype == np.uint8
        assert_masks_match_sem_seg(item)


def test_bad_image_raise_and_skip(tmp_path: Path) -> None:
    root = _cityscapes(tmp_path)
    bad = root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="aachen_000000_000019_leftImg8bit.png") as info:
        CityscapesSemanticDataset(root, "train")[0]
    assert info.value.path == str(bad) and isinstance(info.value, ValueError)
    dataset = CityscapesSemanticDataset(root, "train", on_error="skip")
    assert dataset[0]["image_id"] == "bremen_000001_000019"
    assert dataset[1]["image_id"] == "bremen_000001_000019"
    assert dataset.errors == {str(bad): 1}
    for image_id in CITYSCAPES_IDS[1:]:
        (root / "gtFine" / "train" / image_id.split("_")[0] / f"{image_id}_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(DatasetError, match="every one of the 3 items failed"):
        dataset[1]
    assert sum(dataset.errors.values()) == 4 and dataset.errors[str(bad)] == 2


def test_bad_label_files_name_the_file(tmp_path: Path) -> None:
    root = _cityscapes(tmp_path)
    label_file = root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"
    label_file.unlink()
    with pytest.raises(DatasetError, match="label file not found: .*aachen_000000_000019_gtFine_labelTrainIds"):
        CityscapesSemanticDataset(root, "train")[0]
    _save(label_file, np.full((H, W), 30, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"labelTrainIds.png: label values \[30\] are not in the class table"):
        CityscapesSemanticDataset(root, "train")[0]
    _save(label_file, np.zeros((H + 1, W), dtype=np.uint8))
    with pytest.raises(DatasetError, match="differs from image size"):
        CityscapesSemanticDataset(root, "train")[0]
    _save(label_file, np.zeros((H, W, 3), dtype=np.uint8))
    with pytest.raises(DatasetError, match="must be a single-channel image"):
        CityscapesSemanticDataset(root, "train")[0]


def test_bad_panoptic_files(tmp_path: Path) -> None:
    root = _cityscapes(tmp_path)
    png = root / "gtFine" / "cityscapes_panoptic_train" / "bremen_000001_000019_gtFine_panoptic.png"
    png.write_bytes(b"\x89PNG broken")
    dataset = CityscapesPanopticDataset(root, "train", on_error="skip")
    assert dataset[1]["image_id"] == "aachen_000000_000019" and dataset.errors == {str(png): 1}
    json_path = root / "gtFine" / "cityscapes_panoptic_train.json"
    data = json.loads(json_path.read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 99
    write_json_atomic(json_path, data)
    with pytest.raises(DatasetError, match="category_id 99, which is not a dataset id"):
        CityscapesPanopticDataset(root, "train")
    json_path.write_text("{broken")
    with pytest.raises(DatasetError, match="cityscapes_panoptic_train.json is not valid JSON"):
        CityscapesPanopticDataset(root, "train")


def test_empty_or_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no usable images found in .*leftImg8bit/val"):
        CityscapesSemanticDataset(tmp_path, "val")
    with pytest.raises(DatasetError, match="panoptic JSON not found"):
        ADE20KPanopticDataset(tmp_path, "val")
    with pytest.raises(ValueError, match="on_error must be"):
        CityscapesSemanticDataset(_cityscapes(tmp_path), "train", on_error="ignore")


def test_build_dataset_dispatch(tmp_path: Path, synthetic: Path) -> None:
    cityscapes, ade20k = _cityscapes(tmp_path / "cs"), _ade20k(tmp_path / "ade")
    expected = {
        "cityscapes_semantic_stdc1": (cityscapes, CityscapesSemanticDataset, 3),
        "cityscapes_panoptic_r50": (cityscapes, CityscapesPanopticDataset, 2),
        "ade20k_semantic_r50": (ade20k, ADE20KSemanticDataset, 2),
        "ade20k_panoptic_r50": (ade20k, ADE20KPanopticDataset, 2),
    }
    for name, (root, cls, length) in expected.items():
        dataset = build_dataset(get_preset(name), root, "train", on_error="skip")
        assert type(dataset) is cls and len(dataset) == length and dataset.on_error == "skip"
    config = get_preset("synthetic_panoptic_tiny")
    assert len(build_dataset(config, synthetic, "ignored")) == 4
    assert len(build_dataset(config, synthetic.parent, "train")) == 4  # root/split holds the generator output
    semantic = build_dataset(dataclasses.replace(config, task="semantic"), synthetic, "train")
    assert isinstance(semantic, SemanticDataset) and semantic[0]["sem_seg"].shape == (64, 80)
    with pytest.raises(ValueError, match="no dataset for dataset 'coco'"):
        build_dataset(dataclasses.replace(config, dataset="coco"), synthetic, "train")


def _train_like(height: int, width: int, labels: list[int]) -> dict[str, Any]:
    sem_seg = np.full((height, width), 255, dtype=np.uint8)
    masks = np.zeros((len(labels), height, width), dtype=bool)
    for index, label in enumerate(labels):
        masks[index, index] = True
        sem_seg[index] = label
    image = np.full((height, width, 3), 9, dtype=np.uint8)
    return {"image": image, "labels": np.array(labels), "masks": masks, "sem_seg": sem_seg, "file_name": "a"}


def test_collate_pads_to_multiple_of_32() -> None:
    batch = collate([_train_like(40, 50, [3, 1]), _train_like(33, 70, [2])])
    images = batch["images"]
    assert images.shape == (2, 3, 64, 96) and images.dtype == torch.float32
    assert (images[0, :, :40, :50] == 9).all() and (images[1, :, :33, :70] == 9).all()
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    assert torch.equal(images[0, :, 40:], mean.expand(3, 24, 96))
    assert torch.equal(images[0, :, :, 50:], mean.expand(3, 64, 46))
    assert torch.equal(images[1, :, 33:], mean.expand(3, 31, 96))
    assert torch.equal(images[1, :, :, 70:], mean.expand(3, 64, 26))
    first, second = batch["targets"]
    assert first["labels"].tolist() == [3, 1] and first["labels"].dtype == torch.int64
    assert first["masks"].shape == (2, 64, 96) and first["masks"].dtype == torch.bool
    assert first["masks"].sum().item() == 100 and first["masks"][1, 1, :50].all()
    assert second["sem_seg"].shape == (64, 96) and (second["sem_seg"][33:] == 255).all()
    assert second["sem_seg"][0, :70].eq(2).all() and second["sem_seg"].dtype == torch.int64
    assert batch["image_sizes"] == [(40, 50), (33, 70)] and batch["orig_sizes"] == [(40, 50), (33, 70)]
    zero_pad = collate([_train_like(40, 50, [3])], pad_value=(0.0, 0.0, 0.0))["images"]
    assert zero_pad.shape == (1, 3, 64, 64) and zero_pad[0, :, 40:].eq(0).all()


def test_collate_keeps_test_targets_and_rejects_mismatches() -> None:
    test_sample = {**_train_like(40, 50, [3]), "image": np.zeros((64, 80, 3), dtype=np.uint8), "orig_size": (40, 50)}
    batch = collate([test_sample])
    assert batch["images"].shape == (1, 3, 64, 96) and batch["targets"][0]["masks"].shape == (1, 40, 50)
    assert batch["orig_sizes"] == [(40, 50)] and batch["image_sizes"] == [(64, 80)]
    with pytest.raises(ValueError, match="do not match the image size"):
        collate([{key: value for key, value in test_sample.items() if key != "orig_size"}])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_dataloader_with_train_transform(synthetic: Path) -> None:
    config = get_preset("synthetic_panoptic_tiny")  # crop 256x256, padded
    dataset = build_dataset(config, synthetic, "train", transform=TrainTransform(config, np.random.default_rng(0)))
    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=collate)))
    assert batch["images"].shape == (2, 3, 256, 256)
    for target in batch["targets"]:
        assert target["masks"].shape[1:] == (256, 256) and len(target["labels"]) == len(target["masks"])
        assert target["masks"].any(dim=(1, 2)).all()


def test_panoptic_targets_edge_cases() -> None:
    ids = np.array([[5, 5, 9], [0, 7, 8]])  # 8 is not listed; 4 is listed but absent; 7 is a crowd
    labels, masks, sem_seg = panoptic_targets(ids, [(9, 3, False), (4, 1, False), (5, 2, False), (7, 0, True)])
    assert labels.tolist() == [3, 2]
    np.testing.assert_array_equal(masks, np.stack([ids == 9, ids == 5]))
    np.testing.assert_array_equal(sem_seg, [[2, 2, 3], [255, 255, 255]])
    labels, masks, sem_seg = panoptic_targets(ids, [(7, 0, True)])
    assert labels.shape == (0,) and masks.shape == (0, 2, 3) and (sem_seg == 255).all()
