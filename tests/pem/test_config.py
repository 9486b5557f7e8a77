from __future__ import annotations

import pytest

from pem.config import get_preset, list_presets

OFFICIAL = [f"{d}_{t}_{b}" for d in ("cityscapes", "ade20k") for t in ("semantic", "panoptic")
            for b in ("r50", "stdc1", "stdc2")]


def test_presets_listed() -> None:
    assert set(list_presets()) == {*OFFICIAL, "synthetic_panoptic_tiny"}


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_values(name: str) -> None:
    config = get_preset(name)
    model = config.model
    assert (model.conv_dim, model.mask_dim, model.hidden_dim, model.num_heads) == (128, 256, 256, 8)
    assert (model.ffn_dim, model.num_queries, model.dec_layers) == (2048, 100, 6)
    assert (config.test.object_mask_threshold, config.test.overlap_threshold) == (0.8, 0.8)
    assert config.test.panoptic_on == (config.task == "panoptic")
    assert config.train.weight_decay == 0.05 and config.train.clip_grad_norm == 0.01
    assert config.train.backbone_lr_multiplier == 0.1
    if config.dataset == "cityscapes":
        assert config.num_classes == 19 and config.thing_ids == tuple(range(11, 19))
        assert (config.test.min_size, config.test.max_size) == (1024, 2048)
        assert config.train.base_lr == 7e-4 and config.train.max_iter == 90_000
        assert config.train.crop_size == (512, 1024)
    else:
        assert config.num_classes == 150 and len(config.thing_ids) == 100
        expected = (640, 2560) if config.task == "panoptic" else (512, 2048)
        assert (config.test.min_size, config.test.max_size) == expected
        assert config.train.base_lr == 4e-4 and config.train.max_iter == 160_000
    backbone = model.backbone
    if name.endswith("r50"):
        assert backbone.name == "resnet50"
        assert backbone.norm == ("SyncBN" if config.dataset == "cityscapes" else "FrozenBN")
    else:
        assert (backbone.name, backbone.norm) == ("stdc", "BN")
        assert backbone.stdc_layers == ((2, 2, 2) if name.endswith("stdc1") else (4, 5, 3))


def test_synthetic_preset_has_things_and_stuff() -> None:
    config = get_preset("synthetic_panoptic_tiny")
    assert len(config.thing_ids) >= 4 and config.num_classes - len(config.thing_ids) >= 3
    assert config.model.dec_layers == 6


def test_unknown_preset_message() -> None:
    with pytest.raises(KeyError, match="unknown preset 'nope'.*cityscapes_panoptic_r50"):
        get_preset("nope")
