"""``pem-convert``: the single bridge from foreign key names to ours.

Sources: official PEM checkpoints (detectron2 format ``{"model": state_dict}``, both key generations:
``to_query``/``to_key`` of the first release and ``feature_proj``/``query_proj`` since May 2024; SyncBN
or FrozenBN; STDC's duplicated ``x2..x32`` keys), torchvision ResNet-50 ImageNet weights and STDC-Seg
ImageNet weights (the last two initialise a backbone for training).

The mapping is written once, as ``official_key(our_key)``; the reverse direction is its inverse over the
model's own keys, so both directions always agree.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from pem.checkpoint import CheckpointError, describe_key_problems, read_checkpoint, save_checkpoint
from pem.config import PEMConfig, get_preset
from pem.runtime.destinations import check_destination
from pem.runtime.entry import command

_PIXEL_DECODER_RULES = [
    (r"input_projections\.(\d+)\.conv\.", r"in_projections.\1.conv."),
    (r"input_projections\.(\d+)\.norm\.", r"in_projections.\1.bn."),
    (r"global_context\.conv\.", "conv_avg.conv."),
    (r"global_context\.norm\.", "conv_avg.bn."),
    (r"channel_gates\.(\d+)\.reduce\.", r"csm.\1.mlp.0.mlp.0."),
    (r"channel_gates\.(\d+)\.norm\.", r"csm.\1.mlp.0.mlp.1."),
    (r"channel_gates\.(\d+)\.expand\.", r"csm.\1.mlp.0.mlp.3."),
    (r"deform_layers\.(\d+)\.offset_conv\.", r"dcn.\1.dcn_offset."),
    (r"deform_layers\.(\d+)\.deform_conv\.", r"dcn.\1.dcn."),
    (r"deform_layers\.(\d+)\.deform_norm\.", r"dcn.\1.dcn_bn."),
    (r"deform_layers\.(\d+)\.upsample\.", r"dcn.\1.up_sample."),
    (r"deform_layers\.(\d+)\.upsample_norm\.", r"dcn.\1.up_bn."),
    (r"mask_projection\.conv\.", "out.conv."),
    (r"mask_projection\.norm\.", "out.bn."),
]

_CROSS = r"transformer_cross_attention_layers.\1"
_DECODER_RULES = [
    (r"input_projections\.", "input_proj."),
    (r"cross_attention_layers\.(\d+)\.memory_norm\.", _CROSS + ".feature_proj.bn."),
    (r"cross_attention_layers\.(\d+)\.memory_conv\.", _CROSS + ".feature_proj.to_query_3x3."),
    (r"cross_attention_layers\.(\d+)\.memory_linear\.", _CROSS + ".feature_proj.out."),
    (r"cross_attention_layers\.(\d+)\.query_norm\.", _CROSS + ".query_proj.0."),
    (r"cross_attention_layers\.(\d+)\.query_linear\.", _CROSS + ".query_proj.1."),
    (r"cross_attention_layers\.", "transformer_cross_attention_layers."),
    (r"self_attention_layers\.", "transformer_self_attention_layers."),
    (r"ffn_layers\.", "transformer_ffn_layers."),
    (r"head\.norm\.", "decoder_norm."),
    (r"head\.", ""),
]

_RESNET_RULES = [
    (r"stem\.conv\.", "stem.conv1."),
    (r"stem\.norm\.", "stem.conv1.norm."),
    (r"stages\.(\d+)\.(\d+)\.shortcut\.conv\.", lambda m: f"res{int(m[1]) + 2}.{m[2]}.shortcut."),
    (r"stages\.(\d+)\.(\d+)\.shortcut\.norm\.", lambda m: f"res{int(m[1]) + 2}.{m[2]}.shortcut.norm."),
    (r"stages\.(\d+)\.(\d+)\.conv(\d)\.", lambda m: f"res{int(m[1]) + 2}.{m[2]}.conv{m[3]}."),
    (r"stages\.(\d+)\.(\d+)\.norm(\d)\.", lambda m: f"res{int(m[1]) + 2}.{m[2]}.conv{m[3]}.norm."),
]

_TORCHVISION_RESNET_RULES = [
    (r"stem\.conv\.", "conv1."),
    (r"stem\.norm\.", "bn1."),
    (r"stages\.(\d+)\.(\d+)\.shortcut\.conv\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
    (r"stages\.(\d+)\.(\d+)\.shortcut\.norm\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
    (r"stages\.(\d+)\.(\d+)\.conv(\d)\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{m[3]}."),
    (r"stages\.(\d+)\.(\d+)\.norm(\d)\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{m[3]}."),
]

Rule = tuple[str, "str | Callable[[re.Match[str]], str]"]


def _apply_first(rules: Iterable[Rule], key: str) -> str:
    for pattern, replacement in rules:
        new, count = re.subn(f"^{pattern}", replacement, key, count=1)
        if count:
            return new
    return key


def _stdc_rules(layers: tuple[int, ...]) -> list[Rule]:
    """Our ``stages.i.j`` is STDC's flat ``features.(2 + blocks before stage i + j)``."""
    starts = [2 + sum(layers[:i]) for i in range(len(layers))]

    def block(m: re.Match[str]) -> str:
        return f"features.{starts[int(m[1])] + int(m[2])}"

    return [
        (r"stem\.(\d+)\.conv\.", r"features.\1.conv."),
        (r"stem\.(\d+)\.norm\.", r"features.\1.bn."),
        (r"stages\.(\d+)\.(\d+)\.branches\.(\d+)\.conv\.", lambda m: f"{block(m)}.conv_list.{m[3]}.conv."),
        (r"stages\.(\d+)\.(\d+)\.branches\.(\d+)\.norm\.", lambda m: f"{block(m)}.conv_list.{m[3]}.bn."),
        (r"stages\.(\d+)\.(\d+)\.downsample\.conv\.", lambda m: f"{block(m)}.avd_layer.0."),
        (r"stages\.(\d+)\.(\d+)\.downsample\.norm\.", lambda m: f"{block(m)}.avd_layer.1."),
    ]


def _backbone_rules(config: PEMConfig) -> list[Rule]:
    backbone = config.model.backbone
    return _RESNET_RULES if backbone.name == "resnet50" else _stdc_rules(backbone.stdc_layers)


def official_key(key: str, config: PEMConfig) -> str:
    """The official (detectron2) name of our state-dict key ``key`` (current key generation)."""
    if key.startswith("backbone."):
        return "backbone." + _apply_first(_backbone_rules(config), key[len("backbone."):])
    if key.startswith("pixel_decoder."):
        return "sem_seg_head.pixel_decoder." + _apply_first(_PIXEL_DECODER_RULES, key[len("pixel_decoder."):])
    if key.startswith("transformer_decoder."):
        return "sem_seg_head.predictor." + _apply_first(_DECODER_RULES, key[len("transformer_decoder."):])
    raise KeyError(f"no official name for {key!r}")


def _official_generation_alias(key: str) -> str:
    """First-release names (``to_query``/``to_key``) -> current ones (``feature_proj``/``query_proj``)."""
    return key.replace(".to_query.", ".feature_proj.").replace(".to_key.", ".query_proj.")


_STDC_ALIAS = re.compile(r"^backbone\.x(2|4|8|16|32)\.")
_OFFICIAL_IGNORED = ("criterion.empty_weight",)


@dataclass
class Conversion:
    """Result of a conversion: our state dict plus what was dropped on purpose."""

    state_dict: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)


def _convert(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    foreign_name: Callable[[str], str],
    normalize_source: Callable[[str], str | None],
    label: str,
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
) -> Conversion:
    """Map ``source`` (foreign names) onto the keys of ``target`` (ours); every problem is reported at once.

    ``normalize_source`` returns the canonical foreign name of a source key, or None for keys to drop silently
    (aliases, training-only buffers). Patterns in ``allow_*`` are regular expressions on our / foreign names.
    """
    missing_ok = [re.compile(p) for p in allow_missing]
    unexpected_ok = [re.compile(p) for p in allow_unexpected]
    wanted = {foreign_name(k): k for k in target}
    canonical: dict[str, str] = {}
    dropped: list[str] = []
    for key in source:
        name = normalize_source(key)
        if name is None:
            dropped.append(key)
        else:
            canonical[name] = key
    state: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for foreign, ours in wanted.items():
        if foreign not in canonical:
            continue
        tensor = source[canonical[foreign]]
        if tuple(tensor.shape) != tuple(target[ours].shape):
            mismatched.append(f"{canonical[foreign]} -> {ours}: {tuple(tensor.shape)} vs {tuple(target[ours].shape)}")
            continue
        state[ours] = tensor.detach().clone().to(target[ours].dtype)
    missing = [w for f, w in wanted.items() if f not in canonical and not any(p.search(w) for p in missing_ok)]
    unexpected = []
    for name, key in canonical.items():
        if name in wanted:
            continue
        (dropped if any(p.search(key) for p in unexpected_ok) else unexpected).append(key)
    if missing or unexpected or mismatched:
        raise CheckpointError(describe_key_problems(label, sorted(missing), sorted(unexpected), sorted(mismatched)))
    return Conversion(state, dropped)


def _official_source_name(key: str) -> str | None:
    if key in _OFFICIAL_IGNORED or _STDC_ALIAS.match(key):
        return None
    return _official_generation_alias(key)


def convert_official(
    source: Mapping[str, torch.Tensor], config: PEMConfig, target: Mapping[str, torch.Tensor],
    allow_missing: Iterable[str] = (), allow_unexpected: Iterable[str] = (),
) -> Conversion:
    """Official PEM state dict -> ours (``target`` = our model's state dict, for names and shapes)."""
    _check_stdc_aliases(source)
    return _convert(source, target, lambda k: official_key(k, config), _official_source_name,
                    "official checkpoint", allow_missing, allow_unexpected)


def _check_stdc_aliases(source: Mapping[str, torch.Tensor]) -> None:
    """STDC checkpoints hold each tensor twice; the copies must agree (else the file is inconsistent)."""
    for key, tensor in source.items():
        match = re.match(r"^backbone\.x(\d+)\.0\.(\d+)\.(.*)$", key)
        if not match:
            continue
        twin = f"backbone.features.{match[2]}.{match[3]}"
        if twin in source and not torch.equal(source[twin], tensor):
            raise CheckpointError(f"official checkpoint: {key} differs from its twin {twin}")


def to_official(state_dict: Mapping[str, torch.Tensor], config: PEMConfig) -> dict[str, torch.Tensor]:
    """Ours -> official names (current generation, without STDC aliases or criterion buffers)."""
    return {official_key(k, config): v for k, v in state_dict.items()}


def convert_torchvision_resnet50(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> Conversion:
    """torchvision ResNet-50 ImageNet weights -> our ``backbone`` keys (``target`` = backbone state dict)."""
    return _convert(source, target, lambda k: _apply_first(_TORCHVISION_RESNET_RULES, k),
                    lambda k: None if k.startswith("fc.") else k, "torchvision ResNet-50 weights",
                    allow_unexpected=[r"num_batches_tracked$"])


def convert_stdc_imagenet(
    source: Mapping[str, torch.Tensor], config: PEMConfig, target: Mapping[str, torch.Tensor]
) -> Conversion:
    """STDC-Seg ImageNet weights (``features.*``) -> our ``backbone`` keys; classifier and aliases dropped."""
    rules = _stdc_rules(config.model.backbone.stdc_layers)

    def source_name(key: str) -> str | None:
        key = key.removeprefix("module.")
        return key if key.startswith("features.") else None

    stripped = {k.removeprefix("module."): v for k, v in source.items()}
    return _convert(stripped, target, lambda k: _apply_first(rules, k), source_name, "STDC ImageNet weights",
                    allow_unexpected=[r"num_batches_tracked$"])


def detect_source_format(keys: Iterable[str]) -> str:
    """``official``, ``torchvision-resnet50`` or ``stdc-imagenet`` from the key names."""
    keys = set(keys)
    if any(k.startswith("sem_seg_head.") for k in keys):
        return "official"
    if "layer1.0.conv1.weight" in keys:
        return "torchvision-resnet50"
    if any(re.match(r"^(module\.)?features\.\d+\.conv_list\.", k) for k in keys):
        return "stdc-imagenet"
    raise CheckpointError("cannot tell the source format from its keys; pass --from explicitly")


def _source_state_dict(data: dict) -> dict[str, torch.Tensor]:
    for wrapper in ("model", "state_dict"):
        if isinstance(data.get(wrapper), dict):
            data = data[wrapper]
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("the file holds no tensors")
    return tensors


def convert_file(
    config_name: str, src: str, dst: str, source_format: str = "auto",
    allow_missing: Iterable[str] = (), allow_unexpected: Iterable[str] = (), drop_source: Iterable[str] = (),
) -> Conversion:
    """Convert ``src`` into one of our checkpoints at ``dst`` for preset ``config_name``.

    Source keys matching a regex of ``drop_source`` are removed first (e.g. a classifier for other classes).
    """
    from pem.modeling.pem_model import PEM

    config = get_preset(config_name)
    drop = [re.compile(p) for p in drop_source]
    source = {k: v for k, v in _source_state_dict(read_checkpoint(src)).items() if not any(p.search(k) for p in drop)}
    if source_format == "auto":
        source_format = detect_source_format(source)
    model = PEM(config)
    if source_format == "official":
        result = convert_official(source, config, model.state_dict(), allow_missing, allow_unexpected)
        scope = "model"
    elif source_format == "torchvision-resnet50":
        if config.model.backbone.name != "resnet50":
            raise CheckpointError(f"preset {config_name} has no ResNet-50 backbone")
        result = convert_torchvision_resnet50(source, model.backbone.state_dict())
        scope = "backbone"
    elif source_format == "stdc-imagenet":
        if config.model.backbone.name != "stdc":
            raise CheckpointError(f"preset {config_name} has no STDC backbone")
        result = convert_stdc_imagenet(source, config, model.backbone.state_dict())
        scope = "backbone"
    else:
        raise CheckpointError(f"unknown source format {source_format!r}")
    target = model if scope == "model" else model.backbone
    partial = set(target.state_dict()) - set(result.state_dict)
    if partial:
        # keys the user allowed to be missing keep the model's fresh initialisation
        result.state_dict.update({k: v for k, v in target.state_dict().items() if k in partial})
    save_checkpoint(dst, result.state_dict, config_name, scope=scope, source=str(src), source_format=source_format)
    return result


@command("pem-convert")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pem-convert", description="Convert official PEM / ImageNet backbone weights to a pem-edge checkpoint."
    )
    parser.add_argument("--config", required=True, help="preset name, e.g. cityscapes_panoptic_r50")
    parser.add_argument("src", help="source checkpoint (a torch file; pickles of other types are refused)")
    parser.add_argument("dst", help="output checkpoint")
    parser.add_argument("--from", dest="source_format", default="auto",
                        choices=["auto", "official", "torchvision-resnet50", "stdc-imagenet"])
    parser.add_argument("--allow-missing", action="append", default=[], metavar="REGEX",
                        help="our keys allowed to be absent from the source (they keep their initialisation)")
    parser.add_argument("--allow-unexpected", action="append", default=[], metavar="REGEX",
                        help="source keys allowed to be left unused")
    parser.add_argument("--drop-classifier", action="store_true",
                        help="ignore the source classifier (e.g. other classes); it keeps its initialisation")
    args = parser.parse_args(argv)
    allow_missing, drop_source = list(args.allow_missing), []
    if args.drop_classifier:
        allow_missing.append(r"head\.class_embed\.")
        drop_source.append(r"class_embed\.")
    check_destination(args.dst, [args.src])
    try:
        result = convert_file(args.config, args.src, args.dst, args.source_format, allow_missing,
                              args.allow_unexpected, drop_source)
    except (CheckpointError, KeyError) as error:
        print(f"pem-convert: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: {len(result.state_dict)} tensors"
          + (f", dropped {len(result.dropped)} source keys (aliases/unused)" if result.dropped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
