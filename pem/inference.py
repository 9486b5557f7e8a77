"""Reference inference with the PyTorch model: the official test-time chain around ``model(images)``.

resize shortest edge (host, Pillow) -> model (normalize, pad to 32) -> mask logits bilinearly upsampled to the
padded size, cropped, bilinearly resized to the original size -> fusion (``pem.runtime.fusion``, numpy).
Semantic-only presets run semantic inference at the padded size and crop/resize the K-channel result instead,
as the official code does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pem.modeling.pem_model import PEM
from pem.runtime.fusion import (
    InstanceOutput,
    PanopticOutput,
    instance_inference,
    panoptic_inference,
    semantic_inference,
)
from pem.runtime.preprocess import check_image, resize_shortest_edge


@dataclass(frozen=True)
class Prediction:
    """Results at the original image size (H0, W0).

    ``semantic_prob`` float32 [K, H0, W0] (official semantic scores, not normalized over classes),
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


@torch.no_grad()
def predict(model: PEM, image: np.ndarray, instances: bool = False) -> Prediction:
    """Run the official test-time chain on one [H, W, 3] uint8 RGB image (model in eval mode)."""
    check_image(image)
    config = model.config
    output_size = image.shape[:2]
    resized = resize_shortest_edge(image, config.test.min_size, config.test.max_size)
    parameter = next(model.parameters())
    images = torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None].to(parameter)
    outputs = model(images)
    class_logits = outputs["pred_logits"][0]
    divisor = config.size_divisibility
    image_size = resized.shape[:2]
    padded_size = (-(-image_size[0] // divisor) * divisor, -(-image_size[1] // divisor) * divisor)
    logits_np = class_logits.float().cpu().numpy()
    if config.test.panoptic_on or instances:
        masks = to_original_size(outputs["pred_masks"][0], padded_size, image_size, output_size)
        masks_np = masks.float().cpu().numpy()
        semantic_prob = semantic_inference(logits_np, masks_np)
    else:
        upsampled = F.interpolate(outputs["pred_masks"], size=padded_size, mode="bilinear", align_corners=False)[0]
        padded_prob = torch.from_numpy(semantic_inference(logits_np, upsampled.float().cpu().numpy()))
        semantic_prob = to_original_size(padded_prob, padded_size, image_size, output_size).numpy()
    panoptic = None
    if config.test.panoptic_on:
        panoptic = panoptic_inference(
            logits_np, masks_np, config.thing_ids, config.test.object_mask_threshold, config.test.overlap_threshold
        )
    instance_output = None
    if instances:
        thing_ids = config.thing_ids if config.test.panoptic_on else None
        instance_output = instance_inference(logits_np, masks_np, thing_ids)
    return Prediction(semantic_prob, semantic_prob.argmax(axis=0), panoptic, instance_output)
