"""PEM-CA and its prototype selection, against plain loops over (image, head, query)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pem.modeling.prototype_attention import PrototypeCrossAttention
from pem.ops.prototype_gather import prototype_gather


def loop_gather(memory: torch.Tensor, queries: torch.Tensor, mask_logits: torch.Tensor | None,
                heads: int) -> torch.Tensor:
    """One (image, head, query) at a time, as the official rules read."""
    batch, tokens, channels = memory.shape
    d = channels // heads
    out = torch.zeros(batch, queries.shape[1], channels, dtype=memory.dtype)
    for b in range(batch):
        excluded = mask_logits[b] < 0 if mask_logits is not None else torch.zeros(queries.shape[1], tokens, dtype=bool)
        if excluded.all():
            excluded = torch.zeros_like(excluded)
        for h in range(heads):
            for q in range(queries.shape[1]):
                scores = [float(memory[b, n, h * d:(h + 1) * d] @ queries[b, q, h * d:(h + 1) * d])
                          if not excluded[q, n] else float("-inf") for n in range(tokens)]
                best = max(range(tokens), key=lambda n: (scores[n], -n))
                out[b, q, h * d:(h + 1) * d] = memory[b, best, h * d:(h + 1) * d]
    return out


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def test_gather_matches_loops_with_masks() -> None:
    torch.manual_seed(0)
    memory, queries = _unit(2, 12, 16), _unit(2, 5, 16)
    mask_logits = torch.randn(2, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(prototype_gather(memory, queries, mask_logits, 4),
                               loop_gather(memory, queries, mask_logits, 4), rtol=0, atol=0)


def test_heads_may_pick_different_tokens_and_no_per_head_renormalization() -> None:
    memory = torch.zeros(1, 2, 4, dtype=torch.float64)
    memory[0, 0] = torch.tensor([3.0, 0.0, 0.0, 0.1])  # large in head 0, small in head 1
    memory[0, 1] = torch.tensor([0.1, 0.0, 0.0, 3.0])
    queries = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]], dtype=torch.float64)
    out = prototype_gather(memory, queries, None, 2)
    assert out.tolist() == [[[3.0, 0.0, 0.0, 3.0]]]  # head 0 chose token 0, head 1 token 1


def test_all_masks_empty_switches_masking_off_for_that_image_only() -> None:
    torch.manual_seed(1)
    memory, queries = _unit(2, 9, 8), _unit(2, 3, 8)
    mask_logits = torch.randn(2, 3, 9, dtype=torch.float64)
    mask_logits[0] = -1.0  # image 0: every query empty
    out = prototype_gather(memory, queries, mask_logits, 2)
    unmasked = prototype_gather(memory, queries, None, 2)
    masked = loop_gather(memory, queries, mask_logits, 2)
    torch.testing.assert_close(out[0], unmasked[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1], masked[1], rtol=0, atol=0)


def test_one_empty_query_selects_token_zero_in_every_head() -> None:
    torch.manual_seed(2)
    memory, queries = _unit(1, 9, 8), _unit(1, 3, 8)
    mask_logits = torch.ones(1, 3, 9, dtype=torch.float64)
    mask_logits[0, 1] = -0.5  # query 1 has an empty mask; the others see every token
    out = prototype_gather(memory, queries, mask_logits, 2)
    torch.testing.assert_close(out[0, 1], memory[0, 0], rtol=0, atol=0)
    torch.testing.assert_close(out[0, [0, 2]], prototype_gather(memory, queries, None, 2)[0, [0, 2]])


def test_logit_exactly_zero_is_kept() -> None:
    memory, queries = _unit(1, 4, 4), _unit(1, 1, 4)
    mask_logits = torch.full((1, 1, 4), -1.0, dtype=torch.float64)
    mask_logits[0, 0, 2] = 0.0
    assert torch.equal(prototype_gather(memory, queries, mask_logits, 1)[0, 0], memory[0, 2])


def test_cross_attention_output_normalization_runs_over_queries() -> None:
    torch.manual_seed(3)
    layer = PrototypeCrossAttention(8, 2, "BN").double().eval()
    with torch.no_grad():
        layer.final.weight.copy_(torch.eye(8))
        layer.final.bias.zero_()
    queries, query_pos = torch.randn(1, 5, 8, dtype=torch.float64), torch.randn(1, 5, 8, dtype=torch.float64)
    memory, pos = torch.randn(1, 8, 3, 4, dtype=torch.float64), torch.randn(1, 8, 3, 4, dtype=torch.float64)
    out = layer(queries, memory, None, pos, query_pos) - queries
    with torch.no_grad():
        tokens = layer.memory_conv(layer.memory_norm(memory + pos)).flatten(2).transpose(1, 2)
        tokens = F.normalize(layer.memory_linear(tokens), dim=-1)
        query = F.normalize(layer.query_linear(layer.query_norm(queries + query_pos)), dim=-1)
        prototypes = prototype_gather(tokens, query, None, 2)
        mixed = layer.proj(prototypes * query)
    expected = mixed / mixed.norm(dim=1, keepdim=True) * layer.alpha + prototypes
    torch.testing.assert_close(out, expected)
    # each channel of the normalized term has unit norm across the 5 queries
    assert torch.allclose((out - prototypes).div(layer.alpha).norm(dim=1), torch.ones(1, 8, dtype=torch.float64))
