"""Exported heads at fusion sizes ``input`` and ``mask`` (trained tiny model, ONNX Runtime): no ``orig_size`` input,
id maps at the fusion size, parity with PyTorch in the same mode, the cheap head's graph (one MatMul contraction, no
large int64/float64 tensor), the TensorRT lint, and the torch backend in the same mode."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from pem.export.cli import build_parser
from pem.export.parity import LABEL_AGREEMENT, check_parity
from pem.inference import predict
from pem.modeling.pem_model import PEM
from pem.runtime import Predictor
from pem.runtime.contract import INPUT_IMAGE, META_FUSION_SIZE, SCOPE_SEPARATOR
from tests.export_lint.conftest import TABLES, lint_errors

SIZE = (128, 128)


@pytest.fixture(scope="module")
def scene(synthetic_scenes: list[np.ndarray]) -> np.ndarray:
    """A synthetic scene upscaled 2x: 512x640 (fed at 256x320 by the shortest-edge rule, or 128x128 static)."""
    image = synthetic_scenes[0]
    return np.asarray(Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.BILINEAR))


@pytest.fixture(scope="module")
def panoptic_input(tiny_onnx: Callable[..., Path]) -> Path:
    return tiny_onnx("panoptic", SIZE, True, "uint8_nhwc", "input")


@pytest.fixture(scope="module")
def semantic_mask(tiny_onnx: Callable[..., Path]) -> Path:
    return tiny_onnx("semantic", SIZE, False, "uint8_nhwc", "mask")


def test_pem_export_defaults_to_input() -> None:
    action = next(a for a in build_parser()._actions if "--fusion-size" in a.option_strings)
    assert action.default == "input" and tuple(action.choices) == ("original", "input", "mask")


def test_graphs_take_the_image_alone_and_record_the_mode(panoptic_input: Path, semantic_mask: Path) -> None:
    for path, mode in ((panoptic_input, "input"), (semantic_mask, "mask")):
        model = onnx.load(str(path))
        assert [value.name for value in model.graph.input] == [INPUT_IMAGE]
        assert {p.key: p.value for p in model.metadata_props}[META_FUSION_SIZE] == mode


def test_parity_with_pytorch_in_the_same_mode(tiny_model: PEM, panoptic_input: Path, semantic_mask: Path,
                                              scene: np.ndarray) -> None:
    panoptic = check_parity(tiny_model, panoptic_input, scene)
    assert panoptic.resized_size == (256, 320) and panoptic.original_size == (512, 640)
    assert panoptic.panoptic_agreement >= LABEL_AGREEMENT and panoptic.passed
    assert panoptic.reference_segments[0] >= 3
    semantic = check_parity(tiny_model, semantic_mask, scene)
    assert semantic.resized_size == SIZE and semantic.semantic_agreement >= LABEL_AGREEMENT and semantic.passed


def test_predictor_maps_agree_with_the_reference_chain(tiny_model: PEM, panoptic_input: Path,
                                                       scene: np.ndarray) -> None:
    with Predictor(panoptic_input) as predictor:
        result = predictor(scene)
    assert result.fusion_panoptic.shape == (256, 320) and result.panoptic.shape == (512, 640)
    assert result.fusion_scale == (0.5, 0.5)
    reference = predict(tiny_model, scene, fusion_size="input").panoptic
    assert float((result.panoptic == reference.panoptic).mean()) >= LABEL_AGREEMENT
    assert [s.area for s in result.segments] == [int((result.panoptic == s.id).sum()) for s in result.segments]
    assert sorted(s.area for s in result.segments) == sorted(s.area for s in reference.segments)


def test_the_semantic_head_is_cheap(semantic_mask: Path) -> None:
    """The wrapper's head (nodes without a module path): one Sigmoid over the [1, Q, F] mask logits, the contraction
    as one MatMul [1, F, Q] x [1, Q, K] (the argmax then runs over the contiguous class axis), softmax over
    [1, Q, K+1] only, no Einsum; nothing int64/float64 in the whole graph beyond the output's size."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(semantic_mask)))
    values = {v.name: v.type.tensor_type for v in [*model.graph.value_info, *model.graph.output]}

    def dims(name: str) -> list[int]:
        return [d.dim_value for d in values[name].shape.dim]

    head = [n for n in model.graph.node if n.name.startswith(SCOPE_SEPARATOR)]
    fusion = 32 * 32  # ceil(128 / 4) squared
    shapes = {op: [dims(n.output[0]) for n in head if n.op_type == op] for op in ("Sigmoid", "MatMul", "Softmax")}
    assert shapes == {"Sigmoid": [[1, 20, 32, 32]], "MatMul": [[1, fusion, 8]], "Softmax": [[1, 20, 9]]}
    assert not any(n.op_type == "Einsum" for n in head)  # 20 queries, 8 classes of the tiny preset
    assert dims("semantic") == [1, 32, 32]
    wide = [name for name, value in values.items()
            if value.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.DOUBLE)
            and int(np.prod(dims(name) or [1])) > fusion]
    assert wide == []


def test_new_heads_pass_the_tensorrt_lint(panoptic_input: Path, semantic_mask: Path) -> None:
    for path in (panoptic_input, semantic_mask):
        model = onnx.load(str(path))
        for version in TABLES:
            assert lint_errors(model, version) == [], f"{path.name} TensorRT {version}"


def test_torch_backend_takes_the_fusion_size(semantic_mask: Path, scene: np.ndarray) -> None:
    from pem.export.torch_backend import TorchBackend
    from tests.conftest import TINY_WEIGHTS

    backend = TorchBackend(TINY_WEIGHTS, head="semantic", fusion_size="mask")
    assert [info.name for info in backend.inputs] == [INPUT_IMAGE]
    with Predictor(backend, input_size=SIZE) as eager, Predictor(semantic_mask) as exported:
        assert eager.metadata.fusion_size == "mask"
        torch_result, onnx_result = eager(scene), exported(scene)
    assert torch_result.fusion_semantic.shape == (32, 32) and torch_result.semantic.shape == (512, 640)
    assert float((torch_result.semantic == onnx_result.semantic).mean()) >= LABEL_AGREEMENT
