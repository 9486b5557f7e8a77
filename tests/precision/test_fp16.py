"""The FP16 pass: FP32 islands stay FP32, the rest is FP16, ONNX Runtime runs the result close to FP32."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pem.export.precision.compare import compare_with_fp32
from pem.export.precision.fp16 import Fp32Islands, convert_to_fp16, to_finite_fp16
from pem.export.precision.scopes import node_scopes
from pem.runtime.contract import META_PRECISION
from pem.runtime.metadata import read_metadata
from pem.runtime.predictor import Predictor
from tests.conftest import load_photo
from tests.precision.scenes import scenes

FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)


def _input_types(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Node name -> element types of its float inputs (from ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.input, *inferred.graph.value_info)}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    return {node.name: [types[i] for i in node.input if types.get(i) in FLOATS] for node in model.graph.node}


@pytest.fixture(scope="module")
def raw_fp16(tiny_onnx: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    fp32 = tiny_onnx("raw", (128, 128))
    model, _ = convert_to_fp16(onnx.load(str(fp32)))
    path = tmp_path_factory.mktemp("fp16") / "raw_fp16.onnx"
    onnx.save(model, str(path))
    return fp32, path


def test_islands_stay_fp32_and_the_rest_is_fp16(raw_fp16: tuple[Path, Path]) -> None:
    model = onnx.load(str(raw_fp16[1]))
    types = _input_types(model)
    scopes = dict(zip((n.name for n in model.graph.node), node_scopes(model.graph)))
    islands = Fp32Islands()
    kept = [n for n in model.graph.node if islands.keeps(n.op_type, scopes[n.name])]
    assert {"DeformConv", "PrototypeGather", "Softmax", "LayerNormalization", "Einsum"} <= {n.op_type for n in kept}
    for node in kept:
        assert set(types[node.name]) <= {TensorProto.FLOAT}, f"{node.op_type} {node.name} reads FP16"
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and not islands.keeps(n.op_type,
                                                                                               scopes[n.name])]
    assert len(convs) > 40
    for node in convs:
        assert set(types[node.name]) == {TensorProto.FLOAT16}, f"{node.name} is not FP16"
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT, TensorProto.FLOAT]
    assert read_metadata(model)[META_PRECISION] == "fp32"  # convert_to_fp16 alone leaves the metadata to its caller


def test_fp16_graph_runs_close_to_fp32(raw_fp16: tuple[Path, Path]) -> None:
    comparison = compare_with_fp32(*raw_fp16, load_photo("astronaut.png"))
    # measured 5e-4..2e-3: FP16 storage of weights and activations outside the islands
    assert comparison.float_rel_l2["pred_logits"] < 1e-2
    assert comparison.float_rel_l2["pred_masks"] < 1e-2


@pytest.mark.parametrize("dynamic", [False, True])
def test_fp16_panoptic_ids_match_fp32(tiny_onnx: Callable[..., Path], tmp_path: Path, dynamic: bool) -> None:
    """A graph of free size computes its position encodings at run time (Range has no float16: it stays FP32)."""
    fp32 = tiny_onnx("panoptic", (128, 128), dynamic=dynamic)
    model, summary = convert_to_fp16(onnx.load(str(fp32)))
    assert summary.fp16_nodes > summary.fp32_nodes and summary.fp32_compute["DeformConv"] == 3
    path = tmp_path / "fp16.onnx"
    onnx.save(model, str(path))
    equal = total = 0
    with Predictor(fp32) as reference, Predictor(path) as half:
        for image in scenes(4, (128, 160), seed=3):
            want, got = reference(image), half(image)
            equal += int((want.panoptic == got.panoptic).sum())
            total += want.panoptic.size
            assert len(want.segments) >= 3
    assert equal / total >= 0.995


def test_configured_islands_are_honoured(tiny_onnx: Callable[..., Path]) -> None:
    model, _ = convert_to_fp16(onnx.load(str(tiny_onnx("raw", (128, 128)))),
                               Fp32Islands(op_types=("Conv",), scope_patterns=(r"^model\.backbone\.stem",)))
    types = _input_types(model)
    for node in model.graph.node:
        if node.op_type == "Conv" or node.name.startswith("model.backbone.stem"):
            assert set(types[node.name]) <= {TensorProto.FLOAT}, node.name
    assert any(TensorProto.FLOAT16 in t for t in types.values())


def test_bad_scope_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="bad FP32 scope pattern"):
        Fp32Islands(scope_patterns=("model.(",))


def test_infinities_become_finite_where_fp16_reads_them() -> None:
    values = np.array([-np.inf, -1e9, -1.5, 0.0, 7e4, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(to_finite_fp16(values), np.array([-65504, -65504, -1.5, 0, 65504, 65504],
                                                                   dtype=np.float16))
    penalty = numpy_helper.from_array(np.array([0.0, -np.inf], dtype=np.float32), "penalty")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "penalty"], ["y"], name="model.block/add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [penalty])
    model, _ = convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
    stored = [numpy_helper.to_array(i) for i in model.graph.initializer]
    assert len(stored) == 1 and stored[0].dtype == np.float16 and stored[0][1] == -65504


@pytest.mark.gpu
def test_torch_fp16_on_cuda_agrees_with_fp32() -> None:
    """On a CUDA GPU: the model under FP16 autocast (real FP16 arithmetic) against FP32, panoptic ids."""
    import torch

    import pem
    from pem.inference import predict
    from tests.conftest import TINY_WEIGHTS

    model = pem.build_model("synthetic_panoptic_tiny", weights=str(TINY_WEIGHTS)).cuda().eval()
    equal = total = 0
    for image in scenes(4, (128, 160), seed=3):
        want = predict(model, image)
        with torch.autocast("cuda", dtype=torch.float16):
            got = predict(model, image)
        equal += int((want.panoptic.panoptic == got.panoptic.panoptic).sum())
        total += want.panoptic.panoptic.size
    assert equal / total >= 0.995
