"""Training datasets (torch ``Dataset``s over numpy samples) and the batch collate.

An item, before its ``transform``, is a dict: ``image`` uint8 [H, W, 3] RGB, ``labels`` int64 [N] contiguous ids,
``masks`` bool [N, H, W] (disjoint), ``sem_seg`` uint8 [H, W] (contiguous ids, 255 ignore), ``file_name`` (the
image path) and ``image_id``. Panoptic datasets give one mask per non-crowd segment (crowd and void pixels are 255
in ``sem_seg``); semantic datasets give one mask per class present. Readers and target builders are plain numpy
functions; only the ``Dataset`` classes and :func:`collate` touch torch.

Bad files (missing, unreadable, wrong size, unknown label values) raise :class:`DatasetError` naming the file
with ``on_error="raise"``; with ``on_error="skip"`` they are logged, counted in ``dataset.errors`` (a Counter of
paths, per process: DataLoader workers keep their own) and the next readable item is returned instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pem.config import PIXEL_MEAN, SIZE_DIVISIBILITY, PEMConfig, load_categories
from pem.runtime.coco_panoptic import PathLike, load_panoptic_json, read_panoptic_png
from pem.runtime.errors import PemError
from pem.runtime.images import ImageReadError
from pem.runtime.images import read_image as runtime_read_image
from pem.runtime.metadata import ClassInfo

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
_INVALID = -1
ADE20K_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class DatasetError(PemError, ValueError):
    """A dataset file that cannot be used; ``path`` names it."""

    def __init__(self, message: str, path: PathLike) -> None:
        super().__init__(message)
        self.path = str(path)


def read_image(path: PathLike) -> np.ndarray:
    """An image file -> uint8 [H, W, 3] RGB by ``pem.runtime.images.read_image`` (EXIF orientation applied, as
    detectron2 reads images); its errors become DatasetErrors naming the file."""
    try:
        return runtime_read_image(path).image
    except ImageReadError as exc:
        raise DatasetError(f"cannot read image {exc}", path) from None


def read_label_png(path: PathLike) -> np.ndarray:
    """A single-channel label PNG (mode L, P or I) -> integer [H, W] of the stored values."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            values = np.asarray(image) if mode in ("L", "P", "I", "I;16") else None
    except FileNotFoundError as exc:
        raise DatasetError(f"label file not found: {path}", path) from exc
    except Exception as exc:
        raise DatasetError(f"cannot read label file {path}: {exc}", path) from exc
    if values is None:
        raise DatasetError(f"label file {path} must be a single-channel image, got mode {mode!r}", path)
    return values


def read_panoptic(path: PathLike) -> np.ndarray:
    """A COCO-panoptic PNG -> segment ids int64 [H, W]."""
    try:
        return read_panoptic_png(path)
    except ValueError as exc:
        raise DatasetError(str(exc), path) from exc


def label_table(num_classes: int, offset: int = 0, ignore_values: Sequence[int] = (IGNORE_LABEL,)) -> np.ndarray:
    """Lookup table int16 [256]: stored value ``v`` -> contiguous id ``v - offset`` for ``offset <= v <
    num_classes + offset``, 255 for ``ignore_values``, -1 (invalid) otherwise."""
    table = np.full(256, _INVALID, dtype=np.int16)
    table[list(ignore_values)] = IGNORE_LABEL
    table[offset : offset + num_classes] = np.arange(num_classes)
    return table


def apply_label_table(values: np.ndarray, table: np.ndarray, path: PathLike) -> np.ndarray:
    """Stored label values integer [H, W] -> contiguous ids uint8 [H, W] (255 ignore); DatasetError naming
    ``path`` for a value the table does not know."""
    present = np.unique(values)
    unknown = [int(v) for v in present if v < 0 or v >= len(table) or table[v] == _INVALID]
    if unknown:
        raise DatasetError(f"{path}: label values {unknown[:10]} are not in the class table", path)
    return table[values].astype(np.uint8)


def semantic_targets(sem_seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous ids [H, W] (255 ignore) -> labels int64 [N] (the classes present, ascending) and masks bool
    [N, H, W], one per class (the official semantic mapper)."""
    labels = np.unique(sem_seg)
    labels = labels[labels != IGNORE_LABEL].astype(np.int64)
    return labels, sem_seg[None] == labels[:, None, None].astype(sem_seg.dtype)


def panoptic_targets(
    ids: np.ndarray, segments: Sequence[tuple[int, int, bool]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment ids [H, W] and ``segments`` (segment id, contiguous id, iscrowd) -> labels int64 [N] and masks bool
    [N, H, W], one per non-crowd segment with pixels, in ``segments`` order (the official panoptic mapper), and
    sem_seg uint8 [H, W] with crowd, void and unlisted ids at 255."""
    kept = [(segment_id, category) for segment_id, category, iscrowd in segments if not iscrowd]
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros((0, *ids.shape), dtype=bool), np.full(ids.shape, 255, np.uint8)
    keys = np.array([segment_id for segment_id, _ in kept], dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    position = np.minimum(np.searchsorted(sorted_keys, ids), len(keys) - 1)
    index = np.where(sorted_keys[position] == ids, order[position], -1).astype(np.int32)  # into kept; -1 none
    categories = np.array([category for _, category in kept] + [IGNORE_LABEL], dtype=np.uint8)
    present = np.flatnonzero(np.bincount(index.ravel() + 1, minlength=len(kept) + 1)[1:])
    masks = index[None] == present[:, None, None].astype(np.int32)
    return categories[present].astype(np.int64), masks, categories[index]


@dataclass(frozen=True)
class SemanticRecord:
    """One semantic item: image file, label PNG and the id given to it."""

    image_file: Path
    label_file: Path
    image_id: str


@dataclass(frozen=True)
class PanopticRecord:
    """One panoptic item: image file, panoptic PNG, image id and segments (segment id, contiguous id, iscrowd)."""

    image_file: Path
    panoptic_file: Path
    image_id: Any
    segments: tuple[tuple[int, int, bool], ...]


def _check_shape(image: np.ndarray, label: np.ndarray, label_file: Path, image_file: Path) -> None:
    if label.shape != image.shape[:2]:
        raise DatasetError(
            f"{label_file}: label size {label.shape} differs from image size {image.shape[:2]} of {image_file}",
            label_file,
        )


class _RecordDataset(Dataset):
    """Reads records with ``_read``; applies ``transform``; handles bad files per ``on_error``."""

    def __init__(self, records: Sequence[Any], transform: Transform | None, on_error: str, source: PathLike) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not records:
            raise DatasetError(f"no usable images found in {source}", source)
        self.records = list(records)
        self.transform = transform
        self.on_error = on_error
        self.errors: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, record: Any) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        """Item ``index`` (transformed); in skip mode the first readable item from ``index`` on, wrapping once."""
        index = range(len(self))[index]
        error: DatasetError | None = None
        for offset in range(len(self)):
            try:
                sample = self._read(self.records[(index + offset) % len(self)])
            except DatasetError as exc:
                if self.on_error == "raise":
                    raise
                error = exc
                self.errors[exc.path] += 1
                logger.warning("skipping unreadable item: %s", exc)
                continue
            return self.transform(sample) if self.transform is not None else sample
        raise DatasetError(f"every one of the {len(self)} items failed to load; last error: {error}", error.path)


class SemanticDataset(_RecordDataset):
    """Image + single-channel label PNG pairs; stored label values map to contiguous ids through ``table``
    (:func:`label_table`)."""

    def __init__(
        self,
        records: Sequence[SemanticRecord],
        table: np.ndarray,
        transform: Transform | None = None,
        on_error: str = "raise",
        source: PathLike = "the record list",
    ) -> None:
        super().__init__(records, transform, on_error, source)
        self.table = table

    def _read(self, record: SemanticRecord) -> Sample:
        image = read_image(record.image_file)
        sem_seg = apply_label_table(read_label_png(record.label_file), self.table, record.label_file)
        _check_shape(image, sem_seg, record.label_file, record.image_file)
        labels, masks = semantic_targets(sem_seg)
        return {
            "image": image, "labels": labels, "masks": masks, "sem_seg": sem_seg,
            "file_name": str(record.image_file), "image_id": record.image_id,
        }


class CocoPanopticDataset(_RecordDataset):
    """A COCO-panoptic dataset: images in ``image_dir``, PNGs in ``panoptic_dir``, index ``panoptic_json``.

    ClassInfo ids are ``ClassInfo.dataset_id`` of ``categories`` and map to ``ClassInfo.id``. Images come from the
    JSON's ``images`` table (``file_name`` under ``image_dir``; the PNG name with ``.jpg`` when absent) unless
    ``image_file_for(image_id)`` is given. Images without non-crowd segments are left out (``num_filtered``)."""

    def __init__(
        self,
        image_dir: PathLike,
        panoptic_dir: PathLike,
        panoptic_json: PathLike,
        categories: Sequence[ClassInfo],
        transform: Transform | None = None,
        on_error: str = "raise",
        image_file_for: Callable[[Any], Path] | None = None,
    ) -> None:
        try:
            data = load_panoptic_json(panoptic_json, require_categories=False)
        except ValueError as exc:
            raise DatasetError(str(exc), panoptic_json) from exc
        contiguous = {c.dataset_id: c.id for c in categories}
        images = data.get("images", [])
        image_names = {image["id"]: image["file_name"] for image in images if {"id", "file_name"} <= image.keys()}
        records = []
        for annotation in data["annotations"]:
            image_id = annotation["image_id"]
            segments = []
            for segment in annotation["segments_info"]:
                if segment["category_id"] not in contiguous:
                    raise DatasetError(
                        f"{panoptic_json}: image_id {image_id!r} has category_id {segment['category_id']}, which is "
                        f"not a dataset id of the {len(contiguous)}-class table",
                        panoptic_json,
                    )
                crowd = bool(segment.get("iscrowd", 0))
                segments.append((int(segment["id"]), contiguous[segment["category_id"]], crowd))
            if all(crowd for _, _, crowd in segments):
                continue
            if image_file_for is not None:
                image_file = image_file_for(image_id)
            else:
                name = image_names.get(image_id, Path(annotation["file_name"]).with_suffix(".jpg").name)
                image_file = Path(image_dir) / name
            panoptic_file = Path(panoptic_dir) / annotation["file_name"]
            records.append(PanopticRecord(image_file, panoptic_file, image_id, tuple(segments)))
        self.num_filtered = len(data["annotations"]) - len(records)
        self.panoptic_json, self.panoptic_dir = Path(panoptic_json), Path(panoptic_dir)
        super().__init__(records, transform, on_error, panoptic_json)

    def _read(self, record: PanopticRecord) -> Sample:
        image = read_image(record.image_file)
        ids = read_panoptic(record.panoptic_file)
        _check_shape(image, ids, record.panoptic_file, record.image_file)
        labels, masks, sem_seg = panoptic_targets(ids, record.segments)
        return {
            "image": image, "labels": labels, "masks": masks, "sem_seg": sem_seg,
            "file_name": str(record.image_file), "image_id": record.image_id,
        }


def _table_categories(categories: Sequence[ClassInfo] | None, dataset: str) -> Sequence[ClassInfo]:
    return categories if categories is not None else load_categories(dataset)


class CityscapesSemanticDataset(SemanticDataset):
    """Cityscapes ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with ``gtFine/{split}/{city}/
    *_gtFine_labelTrainIds.png`` (train ids 0..18 are the contiguous ids; 255 ignore)."""

    def __init__(
        self,
        root: PathLike,
        split: str,
        transform: Transform | None = None,
        on_error: str = "raise",
        categories: Sequence[ClassInfo] | None = None,
    ) -> None:
        image_dir = Path(root) / "leftImg8bit" / split
        records = []
        for image_file in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            image_id = image_file.name[: -len("_leftImg8bit.png")]
            label_dir = Path(root) / "gtFine" / split / image_file.parent.name
            records.append(SemanticRecord(image_file, label_dir / f"{image_id}_gtFine_labelTrainIds.png", image_id))
        table = label_table(len(_table_categories(categories, "cityscapes")))
        super().__init__(records, table, transform, on_error, image_dir)


class CityscapesPanopticDataset(CocoPanopticDataset):
    """Cityscapes panoptic files from cityscapesscripts' ``createPanopticImgs``: ``gtFine/cityscapes_panoptic_
    {split}.json`` and ``gtFine/cityscapes_panoptic_{split}/``; category ids are Cityscapes label ids. The image of
    ``{city}_{seq}_{frame}`` is ``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png``."""

    def __init__(
        self,
        root: PathLike,
        split: str,
        transform: Transform | None = None,
        on_error: str = "raise",
        categories: Sequence[ClassInfo] | None = None,
    ) -> None:
        root = Path(root)
        image_dir = root / "leftImg8bit" / split

        def image_file_for(image_id: Any) -> Path:
            city = str(image_id).rsplit("_", 2)[0]
            return image_dir / city / f"{image_id}_leftImg8bit.png"

        super().__init__(
            image_dir, root / "gtFine" / f"cityscapes_panoptic_{split}", root / "gtFine" /
            f"cityscapes_panoptic_{split}.json", _table_categories(categories, "cityscapes"), transform, on_error,
            image_file_for,
        )


def _ade20k_split(split: str) -> str:
    if split not in ADE20K_SPLITS:
        raise ValueError(f"unknown ADE20K split {split!r}; expected one of {sorted(ADE20K_SPLITS)}")
    return ADE20K_SPLITS[split]


class ADE20KSemanticDataset(SemanticDataset):
    """ADE20K SceneParsing ``ADEChallengeData2016/images/{training,validation}/*.jpg`` with ``annotations/
    {training,validation}/*.png``: 0 ("other") is ignored (255), 1..150 become 0..149. ``split`` is
    train/training or val/validation."""

    def __init__(
        self,
        root: PathLike,
        split: str,
        transform: Transform | None = None,
        on_error: str = "raise",
        categories: Sequence[ClassInfo] | None = None,
    ) -> None:
        base = Path(root) / "ADEChallengeData2016"
        folder = _ade20k_split(split)
        image_dir = base / "images" / folder
        records = [
            SemanticRecord(image_file, base / "annotations" / folder / f"{image_file.stem}.png", image_file.stem)
            for image_file in sorted(image_dir.glob("*.jpg"))
        ]
        table = label_table(len(_table_categories(categories, "ade20k")), offset=1, ignore_values=(0,))
        super().__init__(records, table, transform, on_error, image_dir)


class ADE20KPanopticDataset(CocoPanopticDataset):
    """ADE20K panoptic files from detectron2's ``prepare_ade20k_panoptic_annotations.py``:
    ``ADEChallengeData2016/ade20k_panoptic_{train,val}.json`` and ``ade20k_panoptic_{train,val}/`` PNGs, images in
    ``images/{training,validation}``."""

    def __init__(
        self,
        root: PathLike,
        split: str,
        transform: Transform | None = None,
        on_error: str = "raise",
        categories: Sequence[ClassInfo] | None = None,
    ) -> None:
        base = Path(root) / "ADEChallengeData2016"
        folder = _ade20k_split(split)
        short = "train" if folder == "training" else "val"
        super().__init__(
            base / "images" / folder, base / f"ade20k_panoptic_{short}", base / f"ade20k_panoptic_{short}.json",
            _table_categories(categories, "ade20k"), transform, on_error,
        )


def synthetic_semantic_dataset(
    folder: PathLike, num_classes: int, transform: Transform | None = None, on_error: str = "raise"
) -> SemanticDataset:
    """The semantic view of a ``pem-data synthetic`` folder: ``images/*.jpg`` with ``semantic/*.png``."""
    folder = Path(folder)
    records = [
        SemanticRecord(image_file, folder / "semantic" / f"{image_file.stem}.png", image_file.stem)
        for image_file in sorted((folder / "images").glob("*.jpg"))
    ]
    return SemanticDataset(records, label_table(num_classes), transform, on_error, folder / "images")


_DATASETS: dict[tuple[str, str], type[_RecordDataset]] = {
    ("cityscapes", "semantic"): CityscapesSemanticDataset,
    ("cityscapes", "panoptic"): CityscapesPanopticDataset,
    ("ade20k", "semantic"): ADE20KSemanticDataset,
    ("ade20k", "panoptic"): ADE20KPanopticDataset,
}


def build_dataset(
    config: PEMConfig, root: PathLike, split: str, transform: Transform | None = None, on_error: str = "raise"
) -> Dataset:
    """The dataset of a preset (``config.dataset`` x ``config.task``) under ``root`` for ``split``.

    Synthetic data reads a ``pem-data synthetic`` output folder: ``root/split`` when it holds ``panoptic.json``,
    else ``root`` itself (one generator run per split)."""
    key = (config.dataset, config.task)
    if key in _DATASETS:
        return _DATASETS[key](root, split, transform, on_error, config.categories)
    if config.dataset == "synthetic":
        folder = Path(root) / split if (Path(root) / split / "panoptic.json").is_file() else Path(root)
        if config.task == "panoptic":
            return CocoPanopticDataset(
                folder / "images", folder / "panoptic", folder / "panoptic.json", config.categories, transform,
                on_error,
            )
        if config.task == "semantic":
            return synthetic_semantic_dataset(folder, config.num_classes, transform, on_error)
    raise ValueError(f"no dataset for dataset {config.dataset!r} and task {config.task!r}")


def collate(
    samples: Sequence[Sample],
    size_divisibility: int = SIZE_DIVISIBILITY,
    pad_value: Sequence[float] = PIXEL_MEAN,
) -> dict[str, Any]:
    """Samples -> the model batch.

    ``images``: float32 [B, 3, H, W] in 0..255, every image bottom/right padded to the largest height and width,
    rounded up to a multiple of ``size_divisibility``. The pad is ``pad_value`` per channel, the pixel mean by
    default, so the padding normalizes to 0 exactly as the official batch padding (zeros after normalization).
    ``targets``: per sample ``labels`` int64 [N], ``masks`` bool [N, H, W] (padded with False) and ``sem_seg``
    int64 [H, W] (padded with 255); samples with ``orig_size`` (from ``TestTransform``) keep their targets at the
    source size, unpadded. Also ``image_sizes`` (h, w) before padding, ``orig_sizes``, ``file_names`` and
    ``image_ids``."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    sizes = [(int(s["image"].shape[0]), int(s["image"].shape[1])) for s in samples]
    height = -(-max(h for h, _ in sizes) // size_divisibility) * size_divisibility
    width = -(-max(w for _, w in sizes) // size_divisibility) * size_divisibility
    images = np.empty((len(samples), 3, height, width), dtype=np.float32)
    images[:] = np.asarray(pad_value, dtype=np.float32).reshape(1, 3, 1, 1)
    targets = []
    for index, (sample, (h, w)) in enumerate(zip(samples, sizes)):
        images[index, :, :h, :w] = np.moveaxis(sample["image"], -1, 0)
        masks, sem_seg = np.asarray(sample["masks"], dtype=bool), np.asarray(sample["sem_seg"])
        if "orig_size" not in sample:
            if masks.shape[1:] != (h, w) or sem_seg.shape != (h, w):
                raise ValueError(
                    f"{sample.get('file_name')}: masks {masks.shape} / sem_seg {sem_seg.shape} do not match the image "
                    f"size {(h, w)}"
                )
            padded_masks = np.zeros((len(masks), height, width), dtype=bool)
            padded_masks[:, :h, :w] = masks
            padded_sem_seg = np.full((height, width), IGNORE_LABEL, dtype=np.int64)
            padded_sem_seg[:h, :w] = sem_seg
            masks, sem_seg = padded_masks, padded_sem_seg
        targets.append(
            {
                "labels": torch.from_numpy(np.require(sample["labels"], np.int64, ["C", "W"])),
                "masks": torch.from_numpy(np.require(masks, bool, ["C", "W"])),
                "sem_seg": torch.from_numpy(np.require(sem_seg, np.int64, ["C", "W"])),
            }
        )
    return {
        "images": torch.from_numpy(images),
        "targets": targets,
        "image_sizes": sizes,
        "orig_sizes": [tuple(s.get("orig_size", size)) for s, size in zip(samples, sizes)],
        "file_names": [s.get("file_name") for s in samples],
        "image_ids": [s.get("image_id") for s in samples],
    }
