"""The shipped Triton prototype-gather kernel against ``pem.ops.prototype_gather`` (interpreter on CPU, and GPU)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pem.kernels import prototype_gather_fast, prototype_gather_triton
from pem.ops.prototype_gather import prototype_gather
from tests.kernels.gpu_timing import cuda_milliseconds, report

FP16_SIMILARITY_LOSS = 2e-3  # per-head similarity of unit vectors lost by selecting on float16-rounded inputs
BF16_SIMILARITY_LOSS = 1.6e-2


def _inputs(batch: int, tokens: int, queries: int, channels: int, seed: int = 0,
            device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-norm memory [B, N, C] and queries [B, Q, C], mask logits [B, Q, N] with about 40 % negative."""
    generator = torch.Generator().manual_seed(seed)
    memory = F.normalize(torch.randn(batch, tokens, channels, generator=generator), dim=-1)
    query = F.normalize(torch.randn(batch, queries, channels, generator=generator), dim=-1)
    logits = torch.randn(batch, queries, tokens, generator=generator) + 0.25
    return memory.to(device), query.to(device), logits.to(device)


def _selected_similarity(memory: torch.Tensor, queries: torch.Tensor, prototypes: torch.Tensor,
                         heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarity of the selected slices, best similarity over all tokens), both [B, Q, heads] float64, no mask."""
    batch, tokens, channels = memory.shape
    d = channels // heads
    query = queries.double().reshape(batch, -1, heads, d)
    chosen = (prototypes.double().reshape(batch, -1, heads, d) * query).sum(-1)
    best = torch.einsum("bnhd,bqhd->bqhn", memory.double().reshape(batch, tokens, heads, d), query).amax(-1)
    return chosen, best


SHAPES = {
    "chunks_and_query_tails": (2, 150, 20, 64, 2),
    "head_dim_24": (1, 37, 5, 72, 3),
    "single_token": (1, 1, 1, 16, 1),
}


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_matches_reference_fp32(interpreter: None, shape: str, masked: bool) -> None:
    batch, tokens, queries, channels, heads = SHAPES[shape]
    memory, query, logits = _inputs(batch, tokens, queries, channels)
    mask = logits if masked else None
    expected = prototype_gather(memory, query, mask, heads)
    assert torch.equal(prototype_gather_triton(memory, query, mask, heads), expected)


def test_strided_inputs(interpreter: None) -> None:
    memory, query, logits = _inputs(2, 70, 17, 64, seed=1)
    memory_t = memory.transpose(1, 2).contiguous().transpose(1, 2)  # [B, N, C] view with channel stride N
    logits_t = logits.transpose(1, 2).contiguous().transpose(1, 2)
    assert not memory_t.is_contiguous() and not logits_t.is_contiguous()
    out = prototype_gather_triton(memory_t, query, logits_t, 4)
    assert torch.equal(out, prototype_gather(memory, query, logits, 4))


def test_all_excluded_image_is_unmasked_and_excluded_query_takes_token_0(interpreter: None) -> None:
    memory, query, logits = _inputs(3, 90, 18, 32, seed=2)
    logits[0] = -1.0  # every entry of image 0 excluded: masking is off for image 0
    logits[1, 4] = -2.0  # query 4 of image 1 excludes every token: token 0
    logits[2, :, 70:] = -1.0
    logits[2, :, :70] = float("-inf")  # image 2: masked everywhere as well
    out = prototype_gather_triton(memory, query, logits, 2)
    assert torch.equal(out, prototype_gather(memory, query, logits, 2))
    assert torch.equal(out[0], prototype_gather(memory[:1], query[:1], None, 2)[0])
    assert torch.equal(out[1, 4], memory[1, 0])


def test_exact_ties_pick_the_first_token(interpreter: None) -> None:
    """Queries are one-hot per head, so a token's similarity is one coordinate, exact in any summation order."""
    heads, d, tokens = 2, 16, 150
    memory, _, logits = _inputs(1, tokens, 4, heads * d, seed=3)
    query = torch.zeros(1, 4, heads * d)
    query[0, :, 0] = query[0, :, d + 3] = 1.0
    memory[0, :, 0] = memory[0, :, d + 3] = -1.0
    memory[0, [5, 9, 70], 0] = 0.9  # head 0: tie inside the first chunk of 64 tokens and with a later chunk
    memory[0, [64, 140], d + 3] = 0.8  # head 1: tie across chunks
    logits[:] = 1.0
    logits[0, 1, 5] = -1.0  # query 1: token 5 excluded, so 9 wins head 0
    logits[0, 2, 64] = -1.0  # query 2: token 64 excluded, so 140 wins head 1
    out = prototype_gather_triton(memory, query, logits, heads)
    assert torch.equal(out, prototype_gather(memory, query, logits, heads))
    expected = {0: (5, 64), 1: (9, 64), 2: (5, 140), 3: (5, 64)}
    for q, (token0, token1) in expected.items():
        assert torch.equal(out[0, q, :d], memory[0, token0, :d])
        assert torch.equal(out[0, q, d:], memory[0, token1, d:])


@pytest.mark.parametrize(("dtype", "loss"), [(torch.float16, FP16_SIMILARITY_LOSS),
                                             (torch.bfloat16, BF16_SIMILARITY_LOSS)])
def test_half_inputs(interpreter: None, dtype: torch.dtype, loss: float) -> None:
    """Half inputs: same selection as the FP32 reference on the rounded values (FP32 accumulation), and within
    ``loss`` of the best FP32 similarity of the unrounded inputs; the output is the rounded memory, exactly."""
    memory, query, logits = _inputs(2, 150, 20, 64, seed=4)
    out = prototype_gather_triton(memory.to(dtype), query.to(dtype), logits.to(dtype), 2)
    assert out.dtype == dtype
    expected = prototype_gather(memory.to(dtype).float(), query.to(dtype).float(), logits.to(dtype).float(), 2)
    assert torch.equal(out.float(), expected)
    chosen, best = _selected_similarity(memory, query, prototype_gather_triton(memory.to(dtype), query.to(dtype),
                                                                              None, 2), 2)
    assert float((best - chosen).max()) <= loss


def test_rejects_bad_shapes(interpreter: None) -> None:
    memory, query, logits = _inputs(1, 10, 3, 32)
    with pytest.raises(ValueError, match="divisible"):
        prototype_gather_triton(memory, query, logits, 3)
    with pytest.raises(ValueError, match="mask_logits"):
        prototype_gather_triton(memory, query, logits[:, :, :5], 2)
    with pytest.raises(ValueError, match="dtype"):
        prototype_gather_triton(memory.double(), query.double(), logits, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_matches_reference_and_timing(compiled_triton: None, dtype: torch.dtype) -> None:
    """PEM-sized level (N = 64 x 128 tokens, Q = 100, C = 256, 8 heads) with masks, on CUDA."""
    memory, query, logits = _inputs(2, 64 * 128, 100, 256, seed=5, device="cuda")
    logits[0] = -1.0
    logits[1, 7] = -1.0
    memory, query, logits = memory.to(dtype), query.to(dtype), logits.to(dtype)
    out = prototype_gather_triton(memory, query, logits, 8)
    reference = prototype_gather(memory.float(), query.float(), logits.float(), 8)
    # near-ties may break differently between two FP32 summation orders: require the selected similarity to be
    # the best one within 1e-5, and identical outputs for at least 99.9 % of the (image, query, head) slices
    unmasked = prototype_gather_triton(memory, query, None, 8)
    chosen, best = _selected_similarity(memory, query, unmasked, 8)
    assert float((best - chosen).max()) <= 1e-5
    same = (out.float() == reference).reshape(2, 100, 8, 32).all(-1)
    assert float(same.double().mean()) >= 0.999
    assert torch.equal(out[1, 7].float(), reference[1, 7])
    assert torch.equal(prototype_gather_fast(memory, query, logits, 8), out)
    timings = {"triton": cuda_milliseconds(lambda: prototype_gather_triton(memory, query, logits, 8)),
               "reference": cuda_milliseconds(lambda: prototype_gather(memory, query, logits, 8))}
    report("prototype_gather", f"B=2 N=8192 Q=100 C=256 h=8 {dtype}", timings)
