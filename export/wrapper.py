"""Export-only wrapper around a PEM model: the graph's inputs, in-graph pre-processing and the selectable heads.

Shapes: B batch, h x w the host-resized image, h' x w' that size zero-padded to a multiple of 32, H0 x W0 the
original size (one per batch), Q queries, K classes, F the fusion resolution (``pem.runtime.resolution``). Names
and layouts are those of ``pem.runtime.contract``.

Fusion size ``original``: the semantic and panoptic heads reproduce the official test-time chain of
``pem.inference.predict`` in the graph: mask logits bilinearly upsampled (align_corners=False) to h' x w', cropped
to h x w, bilinearly resized to H0 x W0, then the fusion's per-pixel work (``pem.runtime.fusion``). Semantic-only
presets score classes at h' x w' and crop/resize the K class maps instead, as the official code does. Fusion sizes
``input`` and ``mask``: the same per-pixel work on the mask logits at F (``pem.inference.to_fusion_size``); the graph
has no ``orig_size`` input and the host resizes the id maps.

Cost at F: one sigmoid per mask value, the class-mask contraction as one batched matrix product [F, Q] x [Q, K], an
argmax over its last (contiguous) axis (no per-pixel softmax: class probabilities exist per query only). Fusion
size ``input`` with more than ``SEMANTIC_CANDIDATES`` classes contracts only the candidates that the mask-resolution
scores rank first (:meth:`ExportWrapper.candidate_classes`): every class that wins a mask-resolution pixel, then the
runners-up by how close they come. A label differs from the full contraction only where a class left out wins an
input pixel: when more than ``SEMANTIC_CANDIDATES`` classes win mask-resolution pixels, or when a class ranked below
them wins only between mask pixels (``pem.benchmarks.fusion_size`` measures agreement with ``original``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pem.inference import to_fusion_size
from pem.kernels import panoptic_pixel_stage_torch
from pem.modeling.pem_model import PEM
from pem.runtime.contract import FUSION_INPUT, FUSION_MASK, FUSION_ORIGINAL, FUSION_SIZES, HEADS, INPUT_LAYOUTS

# classes contracted at the input resolution by the semantic head of fusion size ``input`` (all when fewer)
SEMANTIC_CANDIDATES = 32


def upsample_channels_last(mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask logits [B, Q, h'/4, w'/4] -> [B, h', w', Q]: bilinear (align_corners=False) x4, channels last.

    In an exported graph this is one ``Resize`` with scales [1, 4, 4, 1] on the channels-last logits: ONNX Runtime
    resizes that layout about 3x faster than NCHW (20 vs 72 ms for 100 x 512 x 512 here), and the contraction then
    reads the pixels as rows without a transpose. TensorRT's parser accepts a linear resize whose scales are 1 on all
    but the last 3 dimensions (onnx-tensorrt ``importerUtils.cpp`` ``canUseNDResize`` and ``onnxOpImporters.cpp``
    L4611-4623 @96e7811; the lint rule ``resize_linear_dims``).
    """
    if not torch.onnx.is_in_onnx_export():
        upsampled = F.interpolate(mask_logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        return upsampled.permute(0, 2, 3, 1)
    channels_last = mask_logits.permute(0, 2, 3, 1)
    batch, height, width, queries = channels_last.shape
    scales = torch.tensor([1.0, 4.0, 4.0, 1.0], dtype=torch.float32)
    return torch.onnx.ops.symbolic(
        "::Resize", (channels_last, None, scales),
        {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
        dtype=mask_logits.dtype, shape=(batch, 4 * height, 4 * width, queries),
    )


class ExportWrapper(nn.Module):
    """``forward(image[, orig_size])`` -> the outputs of ``head`` (``pem.runtime.contract.OUTPUTS[head]``, in order).

    Args:
        model: the PEM model, in eval mode.
        head: ``raw``, ``semantic`` or ``panoptic``.
        input_layout: ``uint8_nhwc`` (image uint8 [B, h, w, 3] RGB) or ``float_nchw`` (float32 [B, 3, h, w]
            RGB in 0..255).
        object_mask_threshold: panoptic keep threshold (``score > threshold``); None takes the preset's.
        fusion_size: ``original`` (the graph takes ``orig_size``), ``input`` or ``mask`` (it does not).
    """

    def __init__(
        self, model: PEM, head: str, input_layout: str = "uint8_nhwc", object_mask_threshold: float | None = None,
        fusion_size: str = FUSION_ORIGINAL,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; known heads: {', '.join(HEADS)}")
        if fusion_size not in FUSION_SIZES:
            raise ValueError(f"unknown fusion size {fusion_size!r}; known: {', '.join(FUSION_SIZES)}")
        if input_layout not in INPUT_LAYOUTS:
            raise ValueError(f"unknown input layout {input_layout!r}; known layouts: {', '.join(INPUT_LAYOUTS)}")
        test = model.config.test
        self.model = model
        self.head = head
        self.input_layout = input_layout
        self.fusion_size = fusion_size
        if object_mask_threshold is None:
            object_mask_threshold = test.object_mask_threshold
        self.object_mask_threshold = object_mask_threshold
        self.semantic_at_padded_size = not test.panoptic_on

    def forward(self, image: torch.Tensor, orig_size: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """image per ``input_layout``; orig_size int64 [2] = (H0, W0) for the semantic and panoptic heads of fusion
        size ``original`` (the other fusion sizes take none)."""
        images = self.to_nchw(image)
        class_logits, mask_logits, padded_size = self.predict(images)
        if self.head == "raw":
            return class_logits, mask_logits
        image_size = (images.shape[-2], images.shape[-1])
        if self.fusion_size != FUSION_ORIGINAL:
            height, width = image_size
        elif orig_size is None:
            raise ValueError(f"the {self.head} head of fusion size 'original' needs orig_size")
        else:
            height, width = orig_size[0].item(), orig_size[1].item()
            torch._check(height > 0)
            torch._check(width > 0)
        if self.head == "semantic":
            return (self.semantic(class_logits, mask_logits, padded_size, image_size, (height, width)),)
        return self.panoptic(class_logits, mask_logits, padded_size, image_size, (height, width))

    def to_nchw(self, image: torch.Tensor) -> torch.Tensor:
        """The image input -> float32 [B, 3, h, w] RGB in 0..255, NCHW-contiguous.

        The cast comes before the layout change: TensorRT's ONNX parser refuses UINT8 intermediate tensors
        (onnx-tensorrt ``ModelImporter.cpp`` @96e7811, lines 241-254), so the uint8 graph input must feed the
        Cast directly. ``contiguous`` keeps eager PyTorch in NCHW (cuDNN follows a channels-last input).
        """
        if self.input_layout == "uint8_nhwc":
            return image.to(torch.float32).permute(0, 3, 1, 2).contiguous()
        return image

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """float [B, 3, h, w] 0..255 -> class logits [B, Q, K+1], mask logits [B, Q, h'/4, w'/4] and (h', w').

        The same steps as ``PEM.forward`` (``PEM.preprocess``: normalize, zero-pad the normalized image; network).
        """
        model = self.model
        x = model.preprocess(images)
        padded_size = (x.shape[-2], x.shape[-1])
        mask_features, multi_scale = model.pixel_decoder(model.backbone(x))
        final = model.transformer_decoder(multi_scale, mask_features)[-1]
        return final["pred_logits"], final["pred_masks"], padded_size

    def semantic(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        padded_size: tuple[int, int],
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> torch.Tensor:
        """int64 [B, F]: argmax over c of sum_q softmax(class)[q, c] * sigmoid(mask_q), void column dropped."""
        probs = class_logits.softmax(-1)[..., :-1].transpose(1, 2)
        if self.semantic_at_padded_size and self.fusion_size == FUSION_ORIGINAL:
            masks = F.interpolate(mask_logits, size=padded_size, mode="bilinear", align_corners=False).sigmoid()
            scores = self.contract(probs, masks)
            scores = F.interpolate(
                scores[:, :, : image_size[0], : image_size[1]], size=output_size, mode="bilinear", align_corners=False
            )
            return scores.argmax(1)
        if self.fusion_size == FUSION_INPUT:
            masks = upsample_channels_last(mask_logits)[:, : image_size[0], : image_size[1]].sigmoid()
            size = (masks.shape[1], masks.shape[2])
            rows = masks.reshape(masks.shape[0], size[0] * size[1], masks.shape[3])
        else:
            masks = to_fusion_size(mask_logits, padded_size, image_size, output_size, self.fusion_size).sigmoid()
            size = (masks.shape[2], masks.shape[3])
            rows = masks.flatten(2).transpose(1, 2)  # a view: ONNX Runtime folds it into the MatMul (transA)
        if self.fusion_size != FUSION_INPUT or probs.shape[1] <= SEMANTIC_CANDIDATES:
            return self.contract_argmax(probs, rows, size)
        at_mask_stride = to_fusion_size(mask_logits, padded_size, image_size, output_size, FUSION_MASK)
        return self.candidates_argmax(probs, at_mask_stride, rows, size, SEMANTIC_CANDIDATES)

    @classmethod
    def candidates_argmax(cls, probs: torch.Tensor, mask_logits: torch.Tensor, rows: torch.Tensor,
                          size: tuple[int, int], count: int) -> torch.Tensor:
        """:meth:`contract_argmax` over the ``count`` classes of :meth:`candidate_classes` only: probs [B, K, Q],
        mask logits [B, Q, h, w] at the mask stride, rows [B, H*W, Q] sigmoids at F of ``size`` = (H, W) -> int64
        [B, H, W] in 0..K-1."""
        classes = cls.candidate_classes(probs, mask_logits, count)
        kept = torch.gather(probs, 1, classes[:, :, None].expand(-1, -1, probs.shape[2]))
        winners = cls.contract_argmax(kept, rows, size)
        return torch.gather(classes, 1, winners.flatten(1)).reshape(winners.shape)

    @staticmethod
    def contract_argmax(probs: torch.Tensor, rows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """probs [B, K, Q] x rows [B, H*W, Q] (one row of mask sigmoids per pixel of ``size`` = (H, W)) -> int64
        [B, H, W]: the argmax over c of the scores, contracted as one MatMul [B, H*W, Q] x [B, Q, K] so that the
        argmax runs over the contiguous last axis (ONNX Runtime's ArgMax over a strided axis costs several times the
        MatMul at 512x512 x 150 classes)."""
        scores = torch.matmul(rows, probs.transpose(1, 2))
        return scores.argmax(2).reshape(rows.shape[0], size[0], size[1])

    @staticmethod
    def candidate_classes(probs: torch.Tensor, mask_logits: torch.Tensor, count: int) -> torch.Tensor:
        """probs [B, K, Q], mask logits [B, Q, h, w] at the mask stride -> int64 [B, count] class indices: the
        classes ranked by their best margin over the strongest other class at any mask-resolution pixel (positive
        for a class that wins a pixel there, its distance from winning otherwise), the first ``count``."""
        batch, queries = mask_logits.shape[:2]
        low = torch.matmul(mask_logits.reshape(batch, queries, -1).sigmoid().transpose(1, 2), probs.transpose(1, 2))
        top = low.topk(2, dim=2).values
        rival = torch.where(low >= top[:, :, :1], top[:, :, 1:], top[:, :, :1])
        return (low - rival).amax(1).topk(count, dim=1).indices

    @staticmethod
    def contract(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """probs [B, K, Q] x masks [B, Q, H, W] -> scores [B, K, H, W], one MatMul over the flattened pixels."""
        batch, queries, height, width = masks.shape
        return torch.matmul(probs, masks.reshape(batch, queries, height * width)).reshape(
            batch, probs.shape[1], height, width)

    def keep(self, scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """bool [B, Q]: the graph's twin of ``pem.runtime.fusion.keep_queries`` (label != K and score > threshold;
        comparing a float tensor with a Python float rounds the threshold to the tensor's dtype, as numpy's does)."""
        return (labels != num_classes) & (scores > self.object_mask_threshold)

    def panoptic(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        padded_size: tuple[int, int],
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> tuple[torch.Tensor, ...]:
        """The quantities of ``pem.runtime.fusion.panoptic_pixel_stage`` per image, with the query scores/labels.

        Returns query_scores float [B, Q], query_labels int64 [B, Q] (K = void), winner int32 [B, F] (-1 = none),
        winner_area, mask_area, visible_area int64 [B, Q] (pixels at F; zero for queries not kept).
        """
        scores, labels = class_logits.softmax(-1).max(-1)
        keep = self.keep(scores, labels, class_logits.shape[2] - 1)
        mask_logits = to_fusion_size(mask_logits, padded_size, image_size, output_size, self.fusion_size)
        winner, winner_area, mask_area, visible_area = panoptic_pixel_stage_torch(scores, keep, mask_logits)
        return scores, labels, winner, winner_area, mask_area, visible_area
