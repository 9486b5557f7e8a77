"""The semantic head of fusion size ``input`` with more classes than ``SEMANTIC_CANDIDATES``: the contraction at the
input resolution runs over the candidate classes only (``ExportWrapper.candidate_classes``). Exact when few classes
win; every mask-resolution winner ranked first; the exported graph (150 classes) agrees with PyTorch in the same
mode and with the full contraction, and passes the TensorRT lint."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from pem.config import get_preset
from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx
from pem.export.parity import LABEL_AGREEMENT
from pem.export.wrapper import SEMANTIC_CANDIDATES, ExportWrapper
from pem.inference import predict
from pem.modeling.pem_model import PEM
from pem.runtime import Predictor
from pem.runtime.contract import SCOPE_SEPARATOR
from pem.runtime.preprocess import resize_to
from tests.conftest import load_photo
from tests.export_lint.conftest import TABLES, lint_errors

CLASSES = 150  # ADE20K's count
QUERIES = 40


def smooth_mask_logits(generator: torch.Generator, queries: int, size: int) -> torch.Tensor:
    """float32 [1, queries, size, size]: blobs (random 4x4 fields upsampled), logits in about -8..8."""
    coarse = torch.randn(1, queries, 4, 4, generator=generator) * 8.0
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def upsampled_rows(mask_logits: torch.Tensor) -> torch.Tensor:
    """The input-resolution sigmoids of ``input`` mode as rows [1, H*W, Q], for an input 4x the mask size."""
    upsampled = F.interpolate(mask_logits, scale_factor=4, mode="bilinear", align_corners=False)
    return upsampled.sigmoid().flatten(2).transpose(1, 2)


def test_pruned_contraction_is_exact_when_few_classes_win() -> None:
    generator = torch.Generator().manual_seed(0)
    favoured = torch.randperm(CLASSES, generator=generator)[:12]
    class_logits = torch.zeros(1, QUERIES, CLASSES + 1)
    class_logits[0, torch.arange(QUERIES), favoured[torch.arange(QUERIES) % 12]] = 8.0
    probs = class_logits.softmax(-1)[..., :-1].transpose(1, 2)
    mask_logits = smooth_mask_logits(generator, QUERIES, 24)
    rows = upsampled_rows(mask_logits)
    full = ExportWrapper.contract_argmax(probs, rows, (96, 96))
    pruned = ExportWrapper.candidates_argmax(probs, mask_logits, rows, (96, 96), SEMANTIC_CANDIDATES)
    assert full.shape == pruned.shape == (1, 96, 96)
    assert len(torch.unique(full)) >= 6  # several classes share the frame
    assert torch.equal(pruned, full)


def test_every_mask_resolution_winner_ranks_before_the_others() -> None:
    generator = torch.Generator().manual_seed(1)
    probs = (torch.randn(1, QUERIES, CLASSES + 1, generator=generator) * 3.0).softmax(-1)[..., :-1].transpose(1, 2)
    mask_logits = torch.randn(1, QUERIES, 12, 12, generator=generator) * 4.0
    low = torch.einsum("bkq,bqn->bkn", probs, mask_logits.flatten(2).sigmoid())
    winners = set(low.argmax(1).unique().tolist())
    assert 8 <= len(winners) <= SEMANTIC_CANDIDATES
    ranked = ExportWrapper.candidate_classes(probs, mask_logits, SEMANTIC_CANDIDATES)[0].tolist()
    assert len(set(ranked)) == SEMANTIC_CANDIDATES
    assert set(ranked[: len(winners)]) == winners


@pytest.fixture(scope="module")
def many_class_model() -> PEM:
    """The tiny architecture with 150 classes, random weights (seed 0), semantic preset (panoptic off); the class
    and last mask-embedding weights scaled up so that queries disagree and several classes share a photograph
    (the initial weights give one class everywhere)."""
    config = get_preset("synthetic_panoptic_tiny")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=CLASSES),
                                 test=dataclasses.replace(config.test, panoptic_on=False))
    torch.manual_seed(0)
    model = PEM(config).eval()
    with torch.no_grad():
        model.transformer_decoder.head.class_embed.weight.mul_(20.0)
        model.transformer_decoder.head.mask_embed.layers[-1].weight.mul_(16.0)
    return model


@pytest.fixture(scope="module")
def many_class_graph(many_class_model: PEM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("candidates") / "semantic_input_150.onnx"
    save_onnx(export_onnx(many_class_model, ExportOptions(head="semantic", imgsz=(128, 128), fusion_size="input")),
              path)
    return path


def test_exported_head_agrees_with_pytorch_and_the_full_contraction(
    many_class_model: PEM, many_class_graph: Path
) -> None:
    photo = load_photo("astronaut.png")
    with Predictor(many_class_graph) as predictor:
        exported = predictor(photo).fusion_semantic
    wrapper = ExportWrapper(many_class_model, "semantic", fusion_size="input").eval()
    image = torch.from_numpy(resize_to(photo, (128, 128)).copy())[None]
    with torch.no_grad():
        eager = wrapper(image)[0][0].numpy()
    full = predict(many_class_model, photo, size=(128, 128), fusion_size="input").semantic_prob.argmax(0)
    assert exported.shape == eager.shape == full.shape == (128, 128)
    assert len(np.unique(full)) >= 5
    assert float((exported == eager).mean()) >= LABEL_AGREEMENT
    assert float((eager == full).mean()) >= LABEL_AGREEMENT


def test_exported_head_passes_the_tensorrt_lint(many_class_graph: Path) -> None:
    model = onnx.load(str(many_class_graph))
    assert any(node.op_type == "TopK" for node in model.graph.node)
    for version in TABLES:
        assert lint_errors(model, version) == [], f"TensorRT {version}"


def test_graph_of_free_size_on_a_padded_input(many_class_model: PEM, tmp_path: Path) -> None:
    """A dynamic graph fed 256x350 (padded to 256x352 in the graph): candidates from the image's mask pixels only."""
    path = tmp_path / "semantic_input_150_dynamic.onnx"
    save_onnx(export_onnx(many_class_model, ExportOptions(head="semantic", imgsz=(128, 128), dynamic=True,
                                                          fusion_size="input")), path)
    photo = load_photo("astronaut.png")[:300, :410]
    with Predictor(path) as predictor:
        exported = predictor(photo).fusion_semantic
    full = predict(many_class_model, photo, fusion_size="input").semantic_prob.argmax(0)
    assert exported.shape == full.shape == (256, 350)
    assert len(np.unique(full)) >= 5
    assert float((exported == full).mean()) >= LABEL_AGREEMENT


def test_input_mode_resizes_channels_last(many_class_graph: Path) -> None:
    """The head (nodes outside the model's modules) has one Resize: scales [1, 4, 4, 1] on the transposed
    (channels-last) mask logits."""
    model = onnx.load(str(many_class_graph))
    resizes = [node for node in model.graph.node if node.op_type == "Resize" and node.name.startswith(SCOPE_SEPARATOR)]
    constants = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    constants.update({node.output[0]: onnx.numpy_helper.to_array(node.attribute[0].t)
                      for node in model.graph.node if node.op_type == "Constant" and node.attribute[0].name == "value"})
    assert len(resizes) == 1 and constants[resizes[0].input[2]].tolist() == [1.0, 4.0, 4.0, 1.0]
    producer = next(node for node in model.graph.node if resizes[0].input[0] in node.output)
    assert producer.op_type == "Transpose" and list(producer.attribute[0].ints) == [0, 2, 3, 1]
