"""Reference inference with the PyTorch model: the official test-time chain around ``model(images)``.

resize shortest edge (host, Pillow) -> model (normalize, pad to 32) -> mask logits bilinearly upsampled to the
padded size, cropped, bilinearly resized to the original size -> fusion (``pem.runtime.fusion``, numpy).
Semantic-only presets run semantic inference at the padded size and crop/resize the K-channel result instead,
as the official code does. This is the one host form of the chain: :func:`postprocess` takes it from the model's
outputs on (the parity check runs exported graphs' raw outputs through it); the export heads run it in the graph
(``pem.export.wrapper``) and the runtime in numpy (``pem.runtime.postprocess``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pem.config import PEMConfig
from pem.modeling.pem_model import PEM
from pem.runtime.contract import FUSION_ORIGINAL
from pem.runtime.fusion import (
    InstanceOutput,
    PanopticOutput,
    instance_inference,
    panoptic_inference,
    semantic_inference,
)
from pem.runtime.preprocess import check_image, resize_to, shortest_edge_size
from pem.runtime.resolution import fusion_scale, fusion_shape, fusion_stride, resize_nearest, resize_panoptic


@dataclass(frozen=True)
class Prediction:
    """Results at the original image size (H0, W0).

    ``semantic_prob`` float32 [K, H0, W0] (official semantic scores, not normalized over classes; at the fusion
    resolution below fusion size ``original``),
    ``semantic`` int64 [H0, W0] its argmax, ``panoptic`` (panoptic presets) and ``instances`` (when asked).
    """

    semantic_prob: np.ndarray
    semantic: np.ndarray
    panoptic: PanopticOutput | None
    instances: InstanceOutput | None


def to_original_size(
    maps: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int], output_size: tuple[int, int]
) -> torch.Tensor:
    """[C, h, w] or [B, C, h, w] maps over the padded input (mask logits at stride 4, or class scores) -> the same
    at [..., H0, W0]: upsample to the padded size, crop to the resized image, resize to the original size.

    Both resizes are bilinear with align_corners=False (the official ``sem_seg_postprocess`` chain). The export
    wrapper runs this same function in the graph.
    """
    batched = maps if maps.dim() == 4 else maps[None]
    x = F.interpolate(batched, size=padded_size, mode="bilinear", align_corners=False)
    x = x[:, :, : image_size[0], : image_size[1]]
    x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)
    return x if maps.dim() == 4 else x[0]


def to_fusion_size(
    maps: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    fusion_size: str,
) -> torch.Tensor:
    """[C, h'/4, w'/4] or [B, C, h'/4, w'/4] mask-stride maps -> the same at the fusion resolution
    (``pem.runtime.resolution``): ``original`` is :func:`to_original_size`; ``input`` upsamples to the padded size
    and crops to ``image_size``; ``mask`` crops the maps as they are. The export wrapper runs this in the graph."""
    stride = fusion_stride(fusion_size)
    if stride == 0:
        return to_original_size(maps, padded_size, image_size, output_size)
    height, width = fusion_shape(fusion_size, image_size, output_size)
    if stride == 1:
        batched = maps if maps.dim() == 4 else maps[None]
        x = F.interpolate(batched, size=padded_size, mode="bilinear", align_corners=False)
        maps = x if maps.dim() == 4 else x[0]
    return maps[..., :height, :width]


def input_size(config: PEMConfig, image_size: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) the official test-time resize gives an image of ``image_size`` = (H0, W0)."""
    return shortest_edge_size(*image_size, config.test.min_size, config.test.max_size)


def padded_size(config: PEMConfig, image_size: tuple[int, int]) -> tuple[int, int]:
    """(h', w'): ``image_size`` rounded up to the preset's size divisibility (the model's zero padding)."""
    divisor = config.size_divisibility
    return -(-image_size[0] // divisor) * divisor, -(-image_size[1] // divisor) * divisor


@torch.no_grad()
def postprocess(
    config: PEMConfig,
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    *,
    panoptic: bool | None = None,
    semantic: bool = True,
    instances: bool = False,
    thresholds: tuple[float, float] | None = None,
    fusion_size: str = FUSION_ORIGINAL,
) -> Prediction:
    """The official chain from the model's outputs on: class logits [Q, K+1] and mask logits [Q, h'/4, w'/4] of an
    image resized to ``image_size`` = (h, w) -> results at ``output_size`` = (H0, W0).

    ``panoptic``: fuse panoptic segments (None: when the preset does). ``semantic`` False skips the semantic scores
    (``semantic_prob`` and ``semantic`` are then empty arrays). ``thresholds`` = (object mask, overlap) of the
    panoptic fusion; None takes the preset's. ``fusion_size`` (``pem.runtime.resolution``): below ``original`` the
    fusion runs at that resolution and the label maps are resized to ``output_size`` by nearest neighbour
    (segment areas counted on the resized map); ``semantic_prob`` and the instance masks stay at the fusion size.
    """
    if panoptic is None:
        panoptic = config.test.panoptic_on
    if thresholds is None:
        thresholds = (config.test.object_mask_threshold, config.test.overlap_threshold)
    padded = padded_size(config, image_size)
    exact = fusion_size == FUSION_ORIGINAL
    logits_np = class_logits.float().cpu().numpy()
    masks_np = None
    if config.test.panoptic_on or panoptic or instances or not exact:
        masks_np = to_fusion_size(mask_logits, padded, image_size, output_size, fusion_size).float().cpu().numpy()
    semantic_prob = np.zeros((0, 0, 0), dtype=np.float32)
    if semantic and (config.test.panoptic_on or not exact):
        semantic_prob = semantic_inference(logits_np, masks_np)
    elif semantic:
        upsampled = F.interpolate(mask_logits[None], size=padded, mode="bilinear", align_corners=False)[0]
        padded_prob = torch.from_numpy(semantic_inference(logits_np, upsampled.float().cpu().numpy()))
        semantic_prob = to_original_size(padded_prob, padded, image_size, output_size).numpy()
    scale = fusion_scale(fusion_size, image_size, output_size)
    fused = panoptic_inference(logits_np, masks_np, config.thing_ids, *thresholds) if panoptic else None
    if fused is not None and not exact:
        fused = PanopticOutput(*resize_panoptic(fused.panoptic, fused.segments, output_size, scale))
    instance_output = None
    if instances:
        thing_ids = config.thing_ids if config.test.panoptic_on else None
        instance_output = instance_inference(logits_np, masks_np, thing_ids)
    labels = (resize_nearest(semantic_prob.argmax(axis=0), output_size, scale) if semantic
              else np.zeros((0, 0), dtype=np.int64))
    return Prediction(semantic_prob, labels, fused, instance_output)


@torch.no_grad()
def predict(
    model: PEM, image: np.ndarray, instances: bool = False, size: tuple[int, int] | None = None,
    fusion_size: str = FUSION_ORIGINAL,
) -> Prediction:
    """Run the official test-time chain on one [H, W, 3] uint8 RGB image (model in eval mode).

    The host resize is the preset's shortest-edge rule, or to exactly ``size`` = (h, w) when given (a graph of
    fixed size is fed that way). ``fusion_size``: see :func:`postprocess` (``original``: the official chain).
    """
    check_image(image)
    config = model.config
    output_size = image.shape[:2]
    resized = resize_to(image, input_size(config, output_size) if size is None else size)
    parameter = next(model.parameters())
    images = torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None].to(parameter)
    outputs = model(images)
    return postprocess(config, outputs["pred_logits"][0], outputs["pred_masks"][0], resized.shape[:2], output_size,
                       instances=instances, fusion_size=fusion_size)
