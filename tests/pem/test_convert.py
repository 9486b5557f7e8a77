"""pem-convert: official key listings (both generations, every backbone/norm), ImageNet backbones, errors."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch

import pem
from pem.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from pem.config import get_preset
from pem.convert import convert_official, main, official_key, to_official
from pem.modeling.pem_model import PEM

LISTINGS = {
    "cityscapes_panoptic_r50": "cityscapes_panoptic_r50",  # SyncBN backbone
    "ade20k_semantic_r50": "ade20k_semantic_r50",  # FrozenBN backbone
    "ade20k_semantic_stdc1": "ade20k_semantic_stdc1",  # STDC1, duplicated keys
    "cityscapes_semantic_stdc2": "cityscapes_semantic_stdc2",  # STDC2, duplicated keys
}


def _listing(official_weights: ModuleType, shared_dir: Path, name: str, seed: int = 3) -> dict:
    return official_weights.make_state_dict(str(shared_dir / "parity" / "keys" / f"{name}_keys.txt"), seed)


def _first_generation(state: dict) -> dict:
    """Key names of the first release: feature_proj was to_query, query_proj was to_key."""
    return {k.replace(".feature_proj.", ".to_query.").replace(".query_proj.", ".to_key."): v for k, v in state.items()}


@pytest.mark.parametrize("name", sorted(LISTINGS))
@pytest.mark.parametrize("generation", ["current", "first"])
def test_round_trip_every_listing(official_weights: ModuleType, shared_dir: Path, name: str, generation: str,
                                  tmp_path: Path) -> None:
    official = _listing(official_weights, shared_dir, name)
    source = official if generation == "current" else _first_generation(official)
    assert generation == "current" or any(".to_key." in k for k in source)
    torch.save({"model": source, "iteration": 90000}, tmp_path / "official.pth")
    assert main(["--config", LISTINGS[name], str(tmp_path / "official.pth"), str(tmp_path / "ours.pth")]) == 0
    model = pem.build_model(LISTINGS[name], weights=str(tmp_path / "ours.pth"))
    back = to_official(model.state_dict(), model.config)
    aliases = {k for k in official if k.startswith(("backbone.x2.", "backbone.x4.", "backbone.x8.", "backbone.x16.",
                                                    "backbone.x32."))}
    assert set(back) == set(official) - aliases - {"criterion.empty_weight"}
    for key, value in back.items():
        assert torch.equal(value, official[key]), key
    assert all(not k.startswith(("sem_seg_head", "backbone.res", "backbone.features")) for k in model.state_dict())


def test_official_names_are_only_in_the_converter() -> None:
    config = get_preset("cityscapes_panoptic_r50")
    assert official_key("backbone.stages.1.0.norm2.running_var", config) == "backbone.res3.0.conv2.norm.running_var"
    assert official_key("transformer_decoder.cross_attention_layers.4.memory_conv.weight", config) == (
        "sem_seg_head.predictor.transformer_cross_attention_layers.4.feature_proj.to_query_3x3.weight")
    assert official_key("pixel_decoder.channel_gates.2.norm.bias", config) == (
        "sem_seg_head.pixel_decoder.csm.2.mlp.0.mlp.1.bias")


def test_missing_unexpected_and_mismatched_keys_are_listed(official_weights: ModuleType, shared_dir: Path) -> None:
    config = get_preset("cityscapes_semantic_stdc2")
    target = PEM(config).state_dict()
    state = _listing(official_weights, shared_dir, "cityscapes_semantic_stdc2")
    del state["sem_seg_head.predictor.query_embed.weight"]
    state["sem_seg_head.predictor.extra.weight"] = torch.zeros(1)
    state["sem_seg_head.predictor.class_embed.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        convert_official(state, config, target)
    message = str(info.value)
    assert "1 missing keys" in message and "transformer_decoder.query_embed.weight" in message
    assert "1 unexpected keys" in message and "sem_seg_head.predictor.extra.weight" in message
    assert "1 shape mismatches" in message and "(7,) vs (20,)" in message


def test_inconsistent_stdc_twin_is_reported(official_weights: ModuleType, shared_dir: Path) -> None:
    config = get_preset("ade20k_semantic_stdc1")
    state = _listing(official_weights, shared_dir, "ade20k_semantic_stdc1")
    state["backbone.x8.0.2.conv_list.0.conv.weight"] = state["backbone.x8.0.2.conv_list.0.conv.weight"] + 1
    with pytest.raises(CheckpointError, match="differs from its twin backbone.features.2.conv_list.0.conv.weight"):
        convert_official(state, config, PEM(config).state_dict())


def test_drop_classifier_for_other_classes(official_weights: ModuleType, shared_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    state = _listing(official_weights, shared_dir, "ade20k_semantic_stdc1")  # 150 classes
    torch.save({"model": state}, tmp_path / "ade.pth")
    args = ["--config", "cityscapes_semantic_stdc1", str(tmp_path / "ade.pth"), str(tmp_path / "cs.pth")]
    assert main(args) == 2
    assert "class_embed" in capsys.readouterr().err
    assert main([*args, "--drop-classifier"]) == 0
    model = pem.build_model("cityscapes_semantic_stdc1", weights=str(tmp_path / "cs.pth"))
    assert torch.equal(model.transformer_decoder.query_feat.weight, state["sem_seg_head.predictor.query_feat.weight"])
    assert model.transformer_decoder.head.class_embed.weight.shape == (20, 256)


def test_torchvision_resnet50_initialises_the_backbone(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    assert main(["--config", "cityscapes_panoptic_r50", str(tmp_path / "resnet50.pth"), str(tmp_path / "bb.pth")]) == 0
    assert read_checkpoint(tmp_path / "bb.pth")["scope"] == "backbone"
    model = PEM(get_preset("cityscapes_panoptic_r50")).eval()
    load_checkpoint(model, tmp_path / "bb.pth")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = model.backbone(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        for index, layer in enumerate([reference.layer1, reference.layer2, reference.layer3, reference.layer4]):
            y = layer(y)
            torch.testing.assert_close(features[f"res{index + 2}"], y)


def test_stdc_imagenet_weights(official_weights: ModuleType, shared_dir: Path, tmp_path: Path) -> None:
    official = _listing(official_weights, shared_dir, "ade20k_semantic_stdc1")
    imagenet = {"module." + k.removeprefix("backbone."): v for k, v in official.items() if k.startswith("backbone.")}
    imagenet["module.fc.weight"] = torch.zeros(1000, 1024)
    imagenet["module.conv_last.conv.weight"] = torch.zeros(1024, 1024, 1, 1)
    torch.save({"state_dict": imagenet, "epoch": 300}, tmp_path / "STDCNet813M.tar")
    args = ["--config", "ade20k_semantic_stdc1", str(tmp_path / "STDCNet813M.tar"), str(tmp_path / "bb.pth")]
    assert main(args) == 0
    model = PEM(get_preset("ade20k_semantic_stdc1"))
    load_checkpoint(model, tmp_path / "bb.pth")
    converted = to_official({f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}, model.config)
    for key, value in converted.items():
        assert torch.equal(value, official[key]), key


def test_bad_checkpoints_have_clear_messages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint at all")
    assert main(["--config", "cityscapes_semantic_stdc1", str(tmp_path / "corrupt.pth"), str(tmp_path / "o.pth")]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err and not (tmp_path / "o.pth").exists()
    assert main(["--config", "cityscapes_semantic_stdc1", str(tmp_path / "absent.pth"), str(tmp_path / "o.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    torch.save({"model": {"sem_seg_head.predictor.query_feat.weight": torch.zeros(100, 256)}}, tmp_path / "off.pth")
    with pytest.raises(CheckpointError, match="convert it with `pem-convert`"):
        pem.build_model("cityscapes_semantic_stdc1", weights=str(tmp_path / "off.pth"))
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "foreign.pth")
    assert main(["--config", "cityscapes_semantic_stdc1", str(tmp_path / "foreign.pth"), str(tmp_path / "o.pth")]) == 2
    assert "cannot tell the source format" in capsys.readouterr().err
    assert main(["--config", "nope", str(tmp_path / "foreign.pth"), str(tmp_path / "o.pth")]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_unsafe_pickles_are_refused(tmp_path: Path) -> None:
    torch.save({"model": {"x": torch.zeros(1)}, "callback": print}, tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "unsafe.pth")


def test_checkpoint_for_another_preset_is_refused(tmp_path: Path) -> None:
    from pem.checkpoint import save_checkpoint

    model = pem.build_model("synthetic_panoptic_tiny")
    save_checkpoint(tmp_path / "tiny.pth", model.state_dict(), "synthetic_panoptic_tiny")
    with pytest.raises(CheckpointError, match="written for preset 'synthetic_panoptic_tiny'"):
        pem.build_model("cityscapes_semantic_stdc1", weights=str(tmp_path / "tiny.pth"))
    loaded = pem.build_model("synthetic_panoptic_tiny", weights=str(tmp_path / "tiny.pth"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
