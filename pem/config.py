"""Model presets: the twelve official PEM configurations and small presets for tests and demos.

Every value of an official preset is the official one (``NiccoloCavagnero/PEM`` configs and
detectron2 defaults; see ``reference/pem_official_facts.md``). Class tables come from
``pem/categories/*.json``. This module is torch-free.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources

from pem.runtime.errors import PemError
from pem.runtime.metadata import ClassInfo

PIXEL_MEAN = (123.675, 116.280, 103.530)  # RGB, 0..255 scale
PIXEL_STD = (58.395, 57.120, 57.375)
SIZE_DIVISIBILITY = 32


class PresetError(PemError, KeyError):
    """An unknown preset name; the message lists the known ones."""


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone choice.

    ``name``: ``resnet50`` (detectron2 ResNet-50, stride in the 3x3 conv) or ``stdc`` (STDC-Seg's STDCNet).
    ``norm``: ``BN``, ``SyncBN`` (built as BatchNorm2d, converted to SyncBatchNorm for DDP) or ``FrozenBN``.
    ``stdc_base``/``stdc_layers``: STDC width and blocks per stage (STDC1 64/[2,2,2], STDC2 64/[4,5,3]).
    """

    name: str = "resnet50"
    norm: str = "SyncBN"
    stdc_base: int = 64
    stdc_layers: tuple[int, ...] = (2, 2, 2)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture widths; the defaults are the official PEM values shared by every official preset."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = 19  # K; the classifier has K+1 outputs, the last is "no object"
    conv_dim: int = 128  # pixel decoder width
    mask_dim: int = 256  # mask feature channels
    decoder_norm: str = "SyncBN"  # pixel decoder and PEM-CA memory norm
    hidden_dim: int = 256  # transformer decoder width
    num_heads: int = 8
    ffn_dim: int = 2048
    num_queries: int = 100
    dec_layers: int = 6  # the official config says 7: one prediction comes from the learnable queries
    csm_reduction: int = 2  # CSM MLP reduction factor


@dataclass(frozen=True)
class TestConfig:
    """Test-time geometry and fusion thresholds (detectron2 ResizeShortestEdge, Mask2Former thresholds)."""

    min_size: int = 1024
    max_size: int = 2048
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    panoptic_on: bool = False
    semantic_on: bool = True
    instance_on: bool = False


def short_side_choices(base: int) -> tuple[int, ...]:
    """The official "choice" short sides: int(0.1 * x * base) for x = 5..20 (0.5x to 2x the base)."""
    return tuple(int(x * 0.1 * base) for x in range(5, 21))


@dataclass(frozen=True)
class TrainConfig:
    """Official solver and augmentation settings (used by ``pem-train``)."""

    batch_size: int = 32
    max_iter: int = 90_000
    base_lr: float = 7e-4
    end_lr: float = 0.0
    weight_decay: float = 0.05
    backbone_lr_multiplier: float = 0.1
    clip_grad_norm: float = 0.01
    crop_size: tuple[int, int] = (512, 1024)
    min_size_train: tuple[int, ...] = field(default_factory=lambda: short_side_choices(1024))
    max_size_train: int = 4096
    pad_to_crop: bool = False  # ADE20K mappers pad the crop (INPUT.SIZE_DIVISIBILITY = crop size)


@dataclass(frozen=True)
class PEMConfig:
    """A complete preset: architecture, classes, test-time rules and training schedule."""

    name: str
    dataset: str
    task: str  # "semantic" | "panoptic"
    model: ModelConfig
    categories: tuple[ClassInfo, ...]
    test: TestConfig
    train: TrainConfig
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    size_divisibility: int = SIZE_DIVISIBILITY

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        """Contiguous ids of the thing classes (the train dataset's thing table, as the official code uses)."""
        return tuple(c.id for c in self.categories if c.isthing)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)


@cache
def load_categories(dataset: str) -> tuple[ClassInfo, ...]:
    """Class table of ``cityscapes`` (19 trainIds) or ``ade20k`` (150 classes), in contiguous-id order."""
    files = {"cityscapes": "cityscapes_19.json", "ade20k": "ade20k_150.json"}
    text = resources.files("pem").joinpath("categories", files[dataset]).read_text()
    rows = json.loads(text)["categories"]
    id_key = "train_id" if dataset == "cityscapes" else "contiguous_id"
    dataset_key = "label_id" if dataset == "cityscapes" else "dataset_id"
    categories = tuple(
        ClassInfo(r[id_key], r["name"], bool(r["isthing"]), tuple(r["color"]), r[dataset_key]) for r in rows
    )
    if [c.id for c in categories] != list(range(len(categories))):
        raise ValueError(f"{files[dataset]}: contiguous ids are not 0..{len(categories) - 1} in order")
    return categories


# Synthetic scenes (pem-data synthetic): 4 thing and 4 stuff classes with textures, for tests and demos.
# Dataset ids (COCO-panoptic category ids) are 1..8; contiguous ids 0..7.
SYNTHETIC_CATEGORIES = tuple(
    ClassInfo(i, name, isthing, color, i + 1)
    for i, (name, isthing, color) in enumerate(
        [
            ("grass", False, (70, 140, 60)),
            ("water", False, (40, 90, 170)),
            ("sand", False, (200, 180, 120)),
            ("sky", False, (150, 200, 240)),
            ("disk", True, (220, 40, 40)),
            ("box", True, (240, 160, 20)),
            ("triangle", True, (150, 60, 200)),
            ("ring", True, (20, 200, 190)),
        ]
    )
)

_STDC_LAYERS = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


def _official(dataset: str, task: str, backbone: str) -> PEMConfig:
    categories = load_categories(dataset)
    if backbone == "r50":
        # SyncBN on Cityscapes (base YAML); FrozenBN on ADE20K (the line is commented out there).
        backbone_cfg = BackboneConfig("resnet50", "SyncBN" if dataset == "cityscapes" else "FrozenBN")
    else:
        # D2STDCnet never passes its norm setting: plain BN.
        backbone_cfg = BackboneConfig("stdc", "BN", 64, _STDC_LAYERS[backbone])
    model = ModelConfig(backbone=backbone_cfg, num_classes=len(categories))
    panoptic = task == "panoptic"
    if dataset == "cityscapes":
        test = TestConfig(1024, 2048, panoptic_on=panoptic)
        train = TrainConfig()
    elif panoptic:
        test = TestConfig(640, 2560, panoptic_on=True)
        train = TrainConfig(
            max_iter=160_000, base_lr=4e-4, end_lr=1e-6, crop_size=(640, 640),
            min_size_train=short_side_choices(640), max_size_train=2560, pad_to_crop=True,
        )
    else:
        test = TestConfig(512, 2048)
        train = TrainConfig(
            max_iter=160_000, base_lr=4e-4, end_lr=1e-6, crop_size=(512, 512),
            min_size_train=short_side_choices(512), max_size_train=2048, pad_to_crop=True,
        )
    return PEMConfig(f"{dataset}_{task}_{backbone}", dataset, task, model, categories, test, train)


def _synthetic_panoptic_tiny() -> PEMConfig:
    """Same architecture as the official model (DCN, CSM, PEM-CA, 6 decoder layers on 3 levels), narrow."""
    model = ModelConfig(
        backbone=BackboneConfig("stdc", "BN", stdc_base=16, stdc_layers=(1, 1, 1)),
        num_classes=len(SYNTHETIC_CATEGORIES),
        conv_dim=32,
        mask_dim=32,
        decoder_norm="SyncBN",
        hidden_dim=64,
        num_heads=4,
        ffn_dim=128,
        num_queries=20,
    )
    test = TestConfig(256, 512, panoptic_on=True)
    train = TrainConfig(
        batch_size=8, max_iter=2000, base_lr=1e-3, end_lr=1e-6, crop_size=(256, 256),
        min_size_train=tuple(range(192, 321, 32)), max_size_train=640, pad_to_crop=True,
    )
    return PEMConfig("synthetic_panoptic_tiny", "synthetic", "panoptic", model, SYNTHETIC_CATEGORIES, test, train)


def _build_presets() -> dict[str, PEMConfig]:
    presets = {
        f"{dataset}_{task}_{backbone}": _official(dataset, task, backbone)
        for dataset in ("cityscapes", "ade20k")
        for task in ("semantic", "panoptic")
        for backbone in ("r50", "stdc1", "stdc2")
    }
    presets["synthetic_panoptic_tiny"] = _synthetic_panoptic_tiny()
    return presets


@lru_cache(maxsize=1)
def _presets() -> dict[str, PEMConfig]:
    return _build_presets()


def list_presets() -> list[str]:
    """Names of every preset."""
    return sorted(_presets())


def get_preset(name: str) -> PEMConfig:
    """The preset called ``name``; raises ``PresetError`` (a ``KeyError``) with the known names otherwise."""
    try:
        return _presets()[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}") from None
