"""PEM's transformer decoder: Mask2Former's structure with PEM cross-attention.

Shapes: B batch, Q queries, C hidden channels, K classes, M mask channels, H/4 x W/4 the mask-feature size.
Levels are the pixel decoder's [o32, o16, o8]; layer i reads level i % 3, so 6 layers visit strides
32, 16, 8, 32, 16, 8. One shared prediction head runs after the learnable queries and after every layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pem.modeling.position_encoding import sine_position_encoding
from pem.modeling.prototype_attention import PrototypeCrossAttention
from pem.ops.precision import LayerNorm32, fp32, full_precision


def _xavier_init(module: nn.Module) -> None:
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


class SelfAttentionLayer(nn.Module):
    """Pre-norm self-attention: LN, query_pos added to q and k (not v), multi-head attention, residual.

    Under autocast it runs in FP32 (its softmax; Q tokens only, see ``pem.ops.precision``).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        _xavier_init(self)

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        with full_precision(queries):
            queries, query_pos = fp32(queries), fp32(query_pos)
            normed = self.norm(queries)
            q = k = normed + query_pos
            return queries + self.self_attn(q, k, normed, need_weights=False)[0]


class FFNLayer(nn.Module):
    """Pre-norm feed-forward: LN, Linear, ReLU, Linear, residual."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = LayerNorm32(dim)
        _xavier_init(self)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return queries + self.linear2(F.relu(self.linear1(self.norm(queries))))


class MLP(nn.Module):
    """Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class PredictionHead(nn.Module):
    """Shared head: LN, class logits [B, Q, K+1] and mask logits [B, Q, H/4, W/4] from the mask features.

    FP32 under autocast (``pem.ops.precision``): its outputs are float32 whatever the features' dtype.
    """

    def __init__(self, dim: int, num_classes: int, mask_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def forward(
        self, queries: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int],
        attn_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Returns class logits, mask logits and the next layer's mask logits [B, Q, h*w] (bilinear, detached).

        Given ``attn_features`` (the mask features already resized to ``attn_size``) the mask logits are not made
        (None) and the next layer's logits come from those features: bilinear resizing is linear per channel, so it
        commutes with the channel contraction and gives the same logits (to rounding) for a fraction of the work.
        Inference needs full-size masks from the last layer only.
        """
        with full_precision(queries):
            return self._predict(fp32(queries), fp32(mask_features), attn_size,
                                 None if attn_features is None else fp32(attn_features))

    def _predict(
        self, queries: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int],
        attn_features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        normed = self.norm(queries)
        class_logits = self.class_embed(normed)
        embeddings = self.mask_embed(normed)
        if attn_features is not None:
            attn_logits = torch.einsum("bqc,bchw->bqhw", embeddings, attn_features)
            return class_logits, None, attn_logits.flatten(2).detach()
        mask_logits = torch.einsum("bqc,bchw->bqhw", embeddings, mask_features)
        attn_logits = F.interpolate(mask_logits, size=attn_size, mode="bilinear", align_corners=False)
        return class_logits, mask_logits, attn_logits.flatten(2).detach()


class TransformerDecoder(nn.Module):
    """Queries refined by 6 (PEM-CA, self-attention, FFN) layers over 3 levels, with deep supervision."""

    num_levels = 3

    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        num_queries: int,
        num_layers: int,
        num_classes: int,
        mask_dim: int,
        norm: str,
    ) -> None:
        super().__init__()
        self.level_embed = nn.Embedding(self.num_levels, dim)
        self.input_projections = nn.ModuleList(nn.Conv2d(in_channels, dim, 1) for _ in range(self.num_levels))
        for conv in self.input_projections:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.cross_attention_layers = nn.ModuleList(
            PrototypeCrossAttention(dim, num_heads, norm) for _ in range(num_layers)
        )
        self.self_attention_layers = nn.ModuleList(SelfAttentionLayer(dim, num_heads) for _ in range(num_layers))
        self.ffn_layers = nn.ModuleList(FFNLayer(dim, ffn_dim) for _ in range(num_layers))
        self.head = PredictionHead(dim, num_classes, mask_dim)

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """multi_scale: [o32, o16, o8], each [B, D, h, w]; mask_features [B, M, H/4, W/4].

        Returns the num_layers + 1 predictions in order, each ``{"pred_logits", "pred_masks"}``; the last one is final.
        In eval mode only the final prediction is returned (the earlier ones serve deep supervision).
        """
        batch = mask_features.shape[0]
        memories, positions, sizes = [], [], []
        for level, features in enumerate(multi_scale):
            height, width = features.shape[-2:]
            sizes.append((height, width))
            positions.append(
                sine_position_encoding(height, width, self.level_embed.embedding_dim // 2, features.dtype,
                                       features.device)
            )
            level_embed = self.level_embed.weight[level][None, :, None, None]
            memories.append(self.input_projections[level](features) + level_embed)
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)
        queries = self.query_feat.weight[None].expand(batch, -1, -1)
        last = len(self.cross_attention_layers) - 1
        # inference: the mask features at each attention size, resized once (see PredictionHead.forward)
        attn_features = None if self.training else [
            F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False) for size in sizes
        ]
        class_logits, mask_logits, attn_logits = self.head(
            queries, mask_features, sizes[0], None if attn_features is None else attn_features[0]
        )
        predictions = [{"pred_logits": class_logits, "pred_masks": mask_logits}] if self.training else []
        for index, (cross, self_attn, ffn) in enumerate(
            zip(self.cross_attention_layers, self.self_attention_layers, self.ffn_layers)
        ):
            level = index % self.num_levels
            queries = cross(queries, memories[level], attn_logits, positions[level], query_pos)
            queries = ffn(self_attn(queries, query_pos))
            next_level = (index + 1) % self.num_levels
            full_masks = attn_features is None or index == last
            class_logits, mask_logits, attn_logits = self.head(
                queries, mask_features, sizes[next_level], None if full_masks else attn_features[next_level]
            )
            if full_masks:
                predictions.append({"pred_logits": class_logits, "pred_masks": mask_logits})
        return predictions
