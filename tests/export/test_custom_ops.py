"""``pem::PrototypeGather``: the ONNX function body in ONNX Runtime against the PyTorch reference, and its export."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from pem.export.custom_ops import attach_local_functions, prototype_gather_function
from pem.export.onnx_export import _quiet
from pem.ops.prototype_gather import prototype_gather
from pem.runtime.contract import (
    PROTOTYPE_GATHER_DOMAIN,
    PROTOTYPE_GATHER_NUM_HEADS,
    PROTOTYPE_GATHER_OP,
    PROTOTYPE_GATHER_VERSION,
)

ELEMENT_TYPES = {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE}


def _session(num_heads: int, dtype: torch.dtype = torch.float32) -> ort.InferenceSession:
    """A one-node model: the custom node and its local function, all sizes free."""
    element = ELEMENT_TYPES[dtype]
    node = helper.make_node(PROTOTYPE_GATHER_OP, ["memory", "queries", "mask_logits"], ["out"],
                            domain=PROTOTYPE_GATHER_DOMAIN, **{PROTOTYPE_GATHER_NUM_HEADS: num_heads})
    inputs = [helper.make_tensor_value_info("memory", element, ["B", "N", "C"]),
              helper.make_tensor_value_info("queries", element, ["B", "Q", "C"]),
              helper.make_tensor_value_info("mask_logits", element, ["B", "Q", "N"])]
    output = helper.make_tensor_value_info("out", element, ["B", "Q", "C"])
    graph = helper.make_graph([node], "gather", inputs, [output])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("pem", PROTOTYPE_GATHER_VERSION)],
        functions=[prototype_gather_function(19)],
    )
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, memory: torch.Tensor, queries: torch.Tensor,
         mask_logits: torch.Tensor) -> torch.Tensor:
    feed = {"memory": memory.numpy(), "queries": queries.numpy(), "mask_logits": mask_logits.numpy()}
    return torch.from_numpy(session.run(None, feed)[0])


def _unit(generator: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=generator, dtype=dtype), dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_function_reproduces_the_reference_with_every_masking_rule(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    memory, queries = _unit(generator, 3, 40, 32, dtype=dtype), _unit(generator, 3, 9, 32, dtype=dtype)
    mask_logits = torch.randn(3, 9, 40, generator=generator, dtype=dtype)
    mask_logits[0, 4] = -1.0  # a query with every token excluded (image 0 still has others): selects token 0
    mask_logits[1] = -0.5  # every entry of image 1 excluded: masking is switched off for image 1 only
    mask_logits[2, :, :39] = -2.0  # image 2: only token 39 is allowed, for every query
    mask_logits[2, :, 39] = 1.0
    got = _run(_session(4, dtype), memory, queries, mask_logits)
    expected = prototype_gather(memory, queries, mask_logits, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(got[0, 4], memory[0, 0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], prototype_gather(memory, queries, None, 4)[1], rtol=0, atol=0)
    torch.testing.assert_close(got[2], memory[2, 39].expand(9, -1), rtol=0, atol=0)


def test_zero_logits_exclude_nothing_and_the_boundary_is_strict() -> None:
    generator = torch.Generator().manual_seed(1)
    memory, queries = _unit(generator, 2, 12, 8), _unit(generator, 2, 5, 8)
    zeros = torch.zeros(2, 5, 12)
    torch.testing.assert_close(_run(_session(2), memory, queries, zeros), prototype_gather(memory, queries, None, 2),
                               rtol=0, atol=0)
    tiny_negative = torch.full((2, 5, 12), -1e-30)
    tiny_negative[:, :, 7] = 0.0  # token 7 is the only one not excluded
    got = _run(_session(2), memory, queries, tiny_negative)
    torch.testing.assert_close(got, memory[:, 7:8].expand(-1, 5, -1), rtol=0, atol=0)


def test_ties_select_the_first_token_per_head() -> None:
    memory = torch.zeros(1, 4, 4)
    memory[0, 0] = torch.tensor([0.0, 0.5, 0.5, 0.0])
    memory[0, 1] = torch.tensor([0.5, 0.0, 0.25, 0.25])
    memory[0, 2] = torch.tensor([0.5, 0.0, 0.0, 0.5])  # ties token 1 in head 0 (and beats it in head 1)
    memory[0, 3] = torch.tensor([0.5, 0.0, 0.25, 0.25])  # exact copy of token 1
    queries = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])  # query 1: every similarity 0
    mask_logits = torch.ones(1, 2, 4)
    got = _run(_session(2), memory, queries, mask_logits)
    expected = prototype_gather(memory, queries, mask_logits, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got[0, 0].tolist() == [0.5, 0.0, 0.0, 0.5]  # head 0: token 1 (first of 1, 2, 3), head 1: token 2
    assert got[0, 1].tolist() == [0.0, 0.5, 0.5, 0.0]  # all tied: token 0 in both heads


def test_function_declares_the_contract() -> None:
    function = prototype_gather_function(19)
    assert (function.domain, function.name) == (PROTOTYPE_GATHER_DOMAIN, PROTOTYPE_GATHER_OP)
    assert list(function.input) == ["memory", "queries", "mask_logits"] and list(function.attribute) == ["num_heads"]
    standard = {"MatMul", "Where", "ArgMax", "GatherElements", "Reshape", "Transpose"}
    assert standard <= {n.op_type for n in function.node} and all(n.domain == "" for n in function.node)


class _Gather(torch.nn.Module):
    def __init__(self, with_mask: bool) -> None:
        super().__init__()
        self.with_mask = with_mask

    def forward(self, memory: torch.Tensor, queries: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        return prototype_gather(memory, queries, mask_logits if self.with_mask else None, 4) * 2.0


@pytest.mark.parametrize("with_mask", [True, False])
def test_export_emits_the_custom_node_and_eager_is_unchanged(with_mask: bool) -> None:
    generator = torch.Generator().manual_seed(2)
    memory, queries = _unit(generator, 2, 24, 16), _unit(generator, 2, 6, 16)
    mask_logits = torch.randn(2, 6, 24, generator=generator)
    module = _Gather(with_mask)
    eager = module(memory, queries, mask_logits)
    with _quiet():
        proto = torch.onnx.export(module, (memory, queries, mask_logits), dynamo=True, opset_version=19,
                                  input_names=["memory", "queries", "mask_logits"], verbose=False).model_proto
    attach_local_functions(proto)
    attach_local_functions(proto)  # idempotent
    nodes = [n for n in proto.graph.node if n.domain == PROTOTYPE_GATHER_DOMAIN]
    assert [n.op_type for n in nodes] == [PROTOTYPE_GATHER_OP] and len(nodes[0].input) == 3
    assert {a.name: a.i for a in nodes[0].attribute}[PROTOTYPE_GATHER_NUM_HEADS] == 4
    assert len(proto.functions) == 1
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"memory": memory.numpy(), "queries": queries.numpy(), "mask_logits": mask_logits.numpy()}
    got = session.run(None, feed)[0]
    np.testing.assert_array_equal(got, eager.numpy())
    torch.testing.assert_close(module(memory, queries, mask_logits), eager, rtol=0, atol=0)
