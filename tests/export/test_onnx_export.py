"""Exported graphs against PyTorch in ONNX Runtime, with realistic weights, on photographs and synthetic scenes.

CI exports six graphs (module-scoped fixtures) so that each backbone is checked static and dynamic, and each head
at least once: STDC2 raw static, STDC2 semantic dynamic, R50 raw dynamic, R50 panoptic static (official-format
weights of the parity oracle) and the trained tiny model's panoptic head (static, batch 3; and of free batch only,
128x128). Raw graphs of panoptic presets are also checked through the reference chain (semantic labels and panoptic
ids). The remaining combinations run under ``-m slow``.

The official-format weights are untrained: their queries are confident (scores up to 0.97) but their masks overlap
so much that at the preset's thresholds (0.8 / 0.8) only 0-3 segments survive. Their panoptic graphs are therefore
exported with the object-mask threshold lowered to 0.5 and the overlap threshold to 0.0 (both stored in the
metadata, so the host fusion and the reference use them too), which gives 11-17 segments over >= 50% of the pixels.
The trained tiny model runs at the preset's thresholds; a synthetic scene holds 4-6 segments (2-4 stuff regions,
2-6 things, 20 queries), so its references are a batch of three scenes with >= 10 segments together.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pem.export.errors import ExportError
from pem.export.onnx_export import ExportOptions, export_onnx, save_onnx
from pem.export.parity import ParityReport, check_parity
from pem.modeling.pem_model import PEM
from pem.runtime.contract import (
    INPUT_IMAGE,
    INPUT_ORIG_SIZE,
    META_SHAPES,
    META_TEST,
    OUTPUTS,
    PROTOTYPE_GATHER_DOMAIN,
    PROTOTYPE_GATHER_OP,
)
from pem.runtime.metadata import ArtifactMetadata, graph_metadata, read_metadata
from pem.runtime.preprocess import resize_to
from tests.conftest import load_photo
from tests.export_lint.conftest import TABLES, lint_errors

STDC = ("cityscapes_panoptic_stdc2", "cityscapes_semantic_stdc2")  # (preset, key listing of the weights)
STDC_SEMANTIC = ("cityscapes_semantic_stdc2", "cityscapes_semantic_stdc2")
R50 = ("cityscapes_panoptic_r50", "cityscapes_panoptic_r50")
UNTRAINED_THRESHOLDS = {"object_mask_threshold": 0.5, "overlap_threshold": 0.0}


@dataclass(frozen=True)
class Exported:
    """A model and its exported graph (ModelProto and serialized bytes)."""

    model: PEM
    proto: onnx.ModelProto
    data: bytes
    options: ExportOptions


def _export(model: PEM, **options: object) -> Exported:
    export_options = ExportOptions(**options)
    proto = export_onnx(model, export_options)
    return Exported(model, proto, proto.SerializeToString(), export_options)


@pytest.fixture(scope="module")
def stdc_raw_static(official_model: Callable[[str, str], PEM]) -> Exported:
    return _export(official_model(*STDC), head="raw", imgsz=(256, 512), **UNTRAINED_THRESHOLDS)


@pytest.fixture(scope="module")
def stdc_semantic_dynamic(official_model: Callable[[str, str], PEM]) -> Exported:
    return _export(official_model(*STDC_SEMANTIC), head="semantic", imgsz=(256, 384), dynamic=True)


@pytest.fixture(scope="module")
def r50_raw_dynamic(official_model: Callable[[str, str], PEM]) -> Exported:
    return _export(official_model(*R50), head="raw", imgsz=(256, 384), dynamic=True, **UNTRAINED_THRESHOLDS)


@pytest.fixture(scope="module")
def r50_panoptic_static(official_model: Callable[[str, str], PEM]) -> Exported:
    return _export(official_model(*R50), head="panoptic", imgsz=(256, 512), **UNTRAINED_THRESHOLDS)


@pytest.fixture(scope="module")
def tiny_panoptic_static(tiny_model: PEM) -> Exported:
    return _export(tiny_model, head="panoptic", imgsz=(256, 320), batch=3)


@pytest.fixture(scope="module")
def tiny_panoptic_free_batch(tiny_model: PEM) -> Exported:
    return _export(tiny_model, head="panoptic", imgsz=(128, 128), dynamic_batch=True, fusion_size="input")


def _assert_parity(report: ParityReport, rich_reference: bool = True) -> None:
    """Within tolerance; with ``rich_reference`` every reference has >= 10 segments (or classes) and >= 50%
    non-void pixels."""
    print("\n".join(report.lines()))
    assert report.passed, report.failures
    if rich_reference:
        assert min(report.reference_segments) >= 10 and min(report.reference_non_void) >= 0.5, report.lines()


def _half_and_flipped(image: np.ndarray) -> list[np.ndarray]:
    """The photograph at half resolution (a cheaper original size) and its mirror image: a batch of two."""
    half = np.ascontiguousarray(image[::2, ::2])
    return [half, np.ascontiguousarray(half[:, ::-1])]


def test_stdc_static_raw_graph(stdc_raw_static: Exported) -> None:
    report = check_parity(stdc_raw_static.model, stdc_raw_static.data, load_photo("astronaut.png"))  # 512 x 512
    assert set(report.raw_rel_l2) == set(OUTPUTS["raw"]) and report.resized_size == (256, 512)
    assert report.semantic_agreement is not None and report.panoptic_agreement is not None
    _assert_parity(report)


def test_stdc_dynamic_semantic_graph_at_two_sizes_and_batch_two(stdc_semantic_dynamic: Exported) -> None:
    """The semantic preset's head: classes scored at the padded size, then cropped and resized (official)."""
    model, data = stdc_semantic_dynamic.model, stdc_semantic_dynamic.data
    _assert_parity(check_parity(model, data, load_photo("astronaut.png"), size=(256, 512)))
    report = check_parity(model, data, _half_and_flipped(load_photo("coffee.png")), size=(192, 288))
    assert report.batch == 2
    _assert_parity(report, rich_reference=False)


def test_r50_dynamic_raw_graph_at_two_sizes_and_batch_two(r50_raw_dynamic: Exported) -> None:
    model, data = r50_raw_dynamic.model, r50_raw_dynamic.data
    _assert_parity(check_parity(model, data, load_photo("astronaut.png"), size=(256, 512)))
    report = check_parity(model, data, _half_and_flipped(load_photo("motorcycle_left.png")), size=(192, 288))
    assert report.batch == 2
    _assert_parity(report)


def test_r50_static_panoptic_graph(r50_panoptic_static: Exported) -> None:
    report = check_parity(r50_panoptic_static.model, r50_panoptic_static.data, load_photo("coffee.png"))
    assert report.panoptic_agreement is not None and not report.raw_rel_l2
    _assert_parity(report)


def test_trained_tiny_panoptic_graph_on_synthetic_scenes(
    tiny_panoptic_static: Exported, synthetic_scenes: list[np.ndarray]
) -> None:
    """Preset thresholds (0.8 / 0.8), a batch of three scenes (the graph's batch) at their own size."""
    model, data = tiny_panoptic_static.model, tiny_panoptic_static.data
    test = json.loads(read_metadata(tiny_panoptic_static.proto)[META_TEST])
    assert (test["object_mask_threshold"], test["overlap_threshold"]) == (0.8, 0.8)
    report = check_parity(model, data, synthetic_scenes)
    assert report.batch == 3 and report.resized_size == (256, 320)
    _assert_parity(report, rich_reference=False)
    assert sum(report.reference_segments) >= 10 and min(report.reference_non_void) >= 0.5


def test_free_batch_graph_fixes_its_size_and_runs_any_batch(
    tiny_panoptic_free_batch: Exported, synthetic_scenes: list[np.ndarray]
) -> None:
    """``dynamic_batch``: batch free, 128x128 fixed; a batch of three answers each scene as alone, and PyTorch."""
    exported = tiny_panoptic_free_batch
    session = ort.InferenceSession(exported.data, providers=["CPUExecutionProvider"])
    shapes = {v.name: v.shape for v in [*session.get_inputs(), *session.get_outputs()]}
    assert shapes[INPUT_IMAGE] == ["batch", 128, 128, 3] and INPUT_ORIG_SIZE not in shapes
    assert shapes["winner"] == ["batch", 128, 128]
    props = read_metadata(exported.proto)
    assert json.loads(props[META_SHAPES]) == {"batch": "dynamic", "height": 128, "width": 128}
    assert ArtifactMetadata.from_props(props, "free batch").static_size == (128, 128)
    frames = np.stack([resize_to(scene, (128, 128)) for scene in synthetic_scenes])
    together = session.run(None, {INPUT_IMAGE: frames})
    for row in range(len(frames)):
        alone = session.run(None, {INPUT_IMAGE: frames[row:row + 1]})
        for batched, single in zip(together, alone):
            np.testing.assert_allclose(batched[row:row + 1], single, rtol=0, atol=1e-5)
    report = check_parity(exported.model, exported.data, synthetic_scenes)
    assert report.batch == 3 and report.resized_size == (128, 128)
    _assert_parity(report, rich_reference=False)
    for version in TABLES:  # the graph TensorRT builds with a batch profile (--shapes 1x128x128,4x128x128,...)
        assert lint_errors(exported.proto, version) == [], f"TensorRT {version}"


def test_dynamic_and_dynamic_batch_are_one_choice() -> None:
    with pytest.raises(ExportError, match="ask for dynamic or dynamic_batch"):
        ExportOptions(dynamic=True, dynamic_batch=True).validate()


def _custom_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if (n.domain, n.op_type) == (PROTOTYPE_GATHER_DOMAIN, PROTOTYPE_GATHER_OP)]


def test_graphs_hold_deform_conv_and_the_custom_op_with_its_function(
    stdc_raw_static: Exported, r50_raw_dynamic: Exported, tiny_panoptic_static: Exported
) -> None:
    for exported in (stdc_raw_static, r50_raw_dynamic, tiny_panoptic_static):
        proto = exported.proto
        imports = {entry.domain: entry.version for entry in proto.opset_import}
        assert imports[""] >= 19 and imports[PROTOTYPE_GATHER_DOMAIN] == 1
        assert sum(n.op_type == "DeformConv" for n in proto.graph.node) == 3  # one per deformable layer
        assert len(_custom_nodes(proto)) == exported.model.config.model.dec_layers
        assert [(f.domain, f.name) for f in proto.functions] == [(PROTOTYPE_GATHER_DOMAIN, PROTOTYPE_GATHER_OP)]


def test_onnxslim_keeps_the_custom_op_its_function_and_deform_conv(tiny_panoptic_static: Exported) -> None:
    import onnxslim

    proto = tiny_panoptic_static.proto
    slimmed = onnxslim.slim(proto)
    assert len(_custom_nodes(slimmed)) == len(_custom_nodes(proto)) == 6
    assert sum(n.op_type == "DeformConv" for n in slimmed.graph.node) == 3
    assert [f.SerializeToString() for f in slimmed.functions] == [f.SerializeToString() for f in proto.functions]


def test_graphs_name_their_free_dimensions(stdc_semantic_dynamic: Exported, tiny_panoptic_static: Exported) -> None:
    session = ort.InferenceSession(stdc_semantic_dynamic.data, providers=["CPUExecutionProvider"])
    shapes = {v.name: v.shape for v in [*session.get_inputs(), *session.get_outputs()]}
    assert shapes[INPUT_IMAGE] == ["batch", "height", "width", 3] and shapes[INPUT_ORIG_SIZE] == [2]
    assert shapes["semantic"] == ["batch", "orig_height", "orig_width"]
    session = ort.InferenceSession(tiny_panoptic_static.data, providers=["CPUExecutionProvider"])
    shapes = {v.name: v.shape for v in [*session.get_inputs(), *session.get_outputs()]}
    assert shapes[INPUT_IMAGE] == [3, 256, 320, 3] and shapes["query_scores"] == [3, 20]
    assert shapes["winner"] == [3, "orig_height", "orig_width"]


def test_metadata_round_trips_through_the_file(r50_panoptic_static: Exported, tmp_path) -> None:
    path = tmp_path / "sub" / "r50_panoptic.onnx"
    save_onnx(r50_panoptic_static.proto, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    props = read_metadata(onnx.load(str(path), load_external_data=False))
    config = r50_panoptic_static.model.config
    expected = graph_metadata(config, "panoptic", "uint8_nhwc", {"batch": 1, "height": 256, "width": 512}, 19,
                              **UNTRAINED_THRESHOLDS)
    assert props == expected
    meta = ArtifactMetadata.from_props(props, str(path))
    assert (meta.preset, meta.head, meta.input_layout, meta.static_size) == (config.name, "panoptic", "uint8_nhwc",
                                                                             (256, 512))
    assert (meta.object_mask_threshold, meta.overlap_threshold, meta.precision) == (0.5, 0.0, "fp32")
    assert meta.thing_ids == config.thing_ids and [c.name for c in meta.classes] == list(config.class_names)
    assert (meta.min_size, meta.max_size, meta.panoptic_on) == (1024, 2048, True)


SLOW_CASES = [
    (backbone, head, dynamic)
    for backbone in ("stdc2", "r50")
    for head in ("raw", "semantic", "panoptic")
    for dynamic in (False, True)
]


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "head", "dynamic"), SLOW_CASES)
def test_every_head_and_shape_mode(
    official_model: Callable[[str, str], PEM], backbone: str, head: str, dynamic: bool
) -> None:
    """The full matrix (panoptic presets; the semantic head of a semantic preset too, for its padded-size path)."""
    presets = {"stdc2": [STDC, STDC_SEMANTIC] if head == "semantic" else [STDC], "r50": [R50]}[backbone]
    for preset in presets:
        exported = _export(official_model(*preset), head=head, imgsz=(256, 512), dynamic=dynamic,
                           **UNTRAINED_THRESHOLDS)
        images = [load_photo("astronaut.png")] * (2 if dynamic else 1)
        _assert_parity(check_parity(exported.model, exported.data, images, size=(256, 512)))
        if dynamic:
            _assert_parity(check_parity(exported.model, exported.data, load_photo("coffee.png"), size=(192, 288)),
                           rich_reference=False)
