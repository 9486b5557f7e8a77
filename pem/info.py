"""``pem-info``: parameters and GMACs of a preset.

GMACs count one per multiply-add (the convention of the paper's fvcore tool) over convolutions (deformable
included), linear layers, matmuls and einsums; norms, activations, resizes and the prototype argmax/gather
are not counted. The model runs on the ``meta`` device, so no memory is allocated and any size is quick.

``gmacs`` counts the model as the official implementation runs it at test time: every decoder layer predicts
full-size (1/4) masks and resizes them for the next layer's attention. ``inference_gmacs`` counts what this
package's inference (and every export) runs: the attention logits come from the mask features resized once per
level (equal up to rounding, since bilinear resizing commutes with the channel contraction), and only the final
prediction makes full-size masks.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pem.config import get_preset
from pem.modeling.pem_model import PEM
from pem.modeling.pixel_decoder import ModulatedDeformConv
from pem.runtime.entry import command
from pem.runtime.sizes import parse_size

if TYPE_CHECKING:
    from torch.utils.flop_counter import FlopCounterMode

_COMPONENTS = ("backbone", "pixel_decoder", "transformer_decoder")


@dataclass(frozen=True)
class ModelInfo:
    """Counts for one preset at one input size (H, W: the input before padding to 32)."""

    preset: str
    height: int
    width: int
    parameters: int  # trainable parameters (what the paper's tables count)
    parameters_by_component: dict[str, int]
    frozen_elements: int  # elements of FrozenBN affine buffers (not parameters)
    gmacs: float  # as the official implementation runs (the paper's count)
    gmacs_by_component: dict[str, float]
    deformable_gmacs: float
    inference_gmacs: float  # as this package's inference and exports run


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _deform_conv_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    """FLOPs (2 per multiply-add) of torchvision's deform_conv2d: every output element sums Cin/groups*kh*kw taps."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def _flop_mapping() -> dict:
    try:
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)

        return {torch.ops.torchvision.deform_conv2d: _deform_conv_flops}
    except (ImportError, AttributeError):
        return {}  # the pure-PyTorch fallback is made of counted matmuls


def model_info(preset: str, height: int, width: int) -> ModelInfo:
    """Parameters and GMACs of ``preset`` for one [1, 3, height, width] image."""
    with torch.device("meta"):
        model = PEM(get_preset(preset)).eval()
    parameters = count_parameters(model)
    by_component = {name: count_parameters(getattr(model, name)) for name in _COMPONENTS}
    frozen = sum(b.numel() for n, b in model.named_buffers() if n.endswith((".weight", ".bias")))
    deformable_macs = 0

    def count_deformable(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal deformable_macs
        deformable_macs += output.numel() * math.prod(module.weight.shape[1:])

    hooks = [m.register_forward_hook(count_deformable) for m in model.modules() if isinstance(m, ModulatedDeformConv)]
    model.requires_grad_(False)
    image = torch.zeros(1, 3, height, width, device="meta")
    inference = _count_flops(model, image)
    for hook in hooks:
        hook.remove()
    model.transformer_decoder.train()  # the official test-time decoder: full-size masks from every layer
    official = _count_flops(model, image)
    counts = official.get_flop_counts()
    component_flops = {name: sum(counts.get(f"PEM.{name}", {}).values()) for name in _COMPONENTS}
    return ModelInfo(
        preset, height, width, parameters, by_component, frozen,
        official.get_total_flops() / 2e9,
        {name: flops / 2e9 for name, flops in component_flops.items()},
        deformable_macs / 1e9,
        inference.get_total_flops() / 2e9,
    )


def _count_flops(model: PEM, image: torch.Tensor) -> FlopCounterMode:
    """One forward of ``model`` under a FLOP counter (2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_flop_mapping())
    with counter:
        model(image)
    return counter


def default_size(preset: str) -> tuple[int, int]:
    """Cityscapes: 1024x2048 (full frames, no resize); other datasets: a square of the test short side."""
    config = get_preset(preset)
    if config.dataset == "cityscapes":
        return 1024, 2048
    return config.test.min_size, config.test.min_size


@command("pem-info")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pem-info", description="Parameters and GMACs of a PEM preset.")
    parser.add_argument("--config", required=True, help="preset name")
    parser.add_argument("--imgsz", type=parse_size, help="input HxW (default: the preset's test size)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        height, width = args.imgsz or default_size(args.config)
        info = model_info(args.config, height, width)
    except KeyError as error:
        print(f"pem-info: error: {error.args[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(info), indent=2))
        return 0
    print(f"{info.preset} at {info.height}x{info.width}")
    print(f"  parameters  {info.parameters:>14,}  (trainable)")
    for name, count in info.parameters_by_component.items():
        print(f"    {name:<20}{count:>14,}")
    if info.frozen_elements:
        print(f"  frozen BN affine buffers {info.frozen_elements:,} (not parameters)")
    print(f"  GMACs       {info.gmacs:>14.1f}  (1 per multiply-add, as the official implementation runs)")
    for name, gmacs in info.gmacs_by_component.items():
        print(f"    {name:<20}{gmacs:>14.1f}")
    print(f"    of which deformable conv {info.deformable_gmacs:.2f}")
    print(f"  GMACs of this package's inference {info.inference_gmacs:.1f} (attention logits at attention size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
