"""Predictor on toy graphs: the raw head against the official chain (torch geometry + numpy fusion), the semantic
and panoptic heads' glue, layouts, static sizes and the errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pem.inference import to_original_size
from pem.runtime import ArtifactError, Predictor
from pem.runtime.fusion import Segment, panoptic_inference, semantic_inference
from pem.runtime.geometry import padded_size
from pem.runtime.preprocess import resize_shortest_edge
from tests.runtime import graphs
from tests.runtime.conftest import quadrants


def reference(image: np.ndarray, resized: np.ndarray, panoptic_on: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(semantic, panoptic) of the toy raw graph by the official chain: torch resizes, numpy fusion."""
    masks = torch.from_numpy(graphs.raw_reference(resized))
    padded = padded_size(*resized.shape[:2], 32)
    logits = graphs.default_logits()
    if not panoptic_on:
        up = torch.nn.functional.interpolate(masks[None], size=padded, mode="bilinear", align_corners=False)[0]
        prob = torch.from_numpy(semantic_inference(logits, up.numpy()))
        return to_original_size(prob, padded, resized.shape[:2], image.shape[:2]).numpy().argmax(0), None
    full = to_original_size(masks, padded, resized.shape[:2], image.shape[:2]).numpy()
    fused = panoptic_inference(logits, full, [2, 3])
    return semantic_inference(logits, full).argmax(0), fused.panoptic


def test_raw_head_follows_the_official_chain(toy_dir: Path, scene: np.ndarray) -> None:
    with Predictor(toy_dir / "raw.onnx") as predictor:
        result = predictor(scene)
    semantic, panoptic = reference(scene, resize_shortest_edge(scene, 64, 128))
    assert result.panoptic.dtype == np.int32 and result.panoptic.shape == scene.shape[:2]
    np.testing.assert_array_equal(result.panoptic, panoptic)
    np.testing.assert_array_equal(result.semantic, semantic)
    assert [(s.id, s.category_id, s.isthing) for s in result.segments] == [(1, 0, False), (2, 1, False), (3, 2, True)]
    assert sum(s.area for s in result.segments) == np.count_nonzero(result.panoptic)
    assert set(result.timings) == {"preprocess_ms", "infer_ms", "postprocess_ms", "h2d_ms", "compute_ms", "d2h_ms"}
    assert result.image is scene


def test_float_layout_and_bgr_input_agree(toy_dir: Path, scene: np.ndarray) -> None:
    with Predictor(toy_dir / "raw.onnx") as uint8_graph, Predictor(toy_dir / "raw_float.onnx") as float_graph:
        expected = uint8_graph(scene)
        np.testing.assert_array_equal(float_graph(scene).panoptic, expected.panoptic)
        from_bgr = uint8_graph(np.ascontiguousarray(scene[..., ::-1]), bgr=True)
        np.testing.assert_array_equal(from_bgr.panoptic, expected.panoptic)
        np.testing.assert_array_equal(from_bgr.image, scene)


def test_static_graph_gets_its_fixed_size(toy_dir: Path, scene: np.ndarray) -> None:
    with Predictor(toy_dir / "raw_static.onnx") as predictor:
        assert predictor.resized_size(60, 80) == (64, 96)  # shortest edge would give 64x85
        assert predictor.resized_size(64, 96) == (64, 96)
        result = predictor(scene)
    resized = np.asarray(Image.fromarray(scene).resize((96, 64), Image.BILINEAR))
    np.testing.assert_array_equal(result.panoptic, reference(scene, resized)[1])


def test_semantic_preset_resizes_scores_not_masks(toy_dir: Path, scene: np.ndarray) -> None:
    with Predictor(toy_dir / "raw_semantic.onnx") as predictor:
        result = predictor(scene)
    assert result.panoptic is None and result.segments == []
    np.testing.assert_array_equal(result.semantic, reference(scene, resize_shortest_edge(scene, 64, 128), False)[0])


def test_semantic_head(toy_dir: Path) -> None:
    image = quadrants()
    with Predictor(toy_dir / "semantic.onnx") as predictor:
        result = predictor(image)
    assert result.panoptic is None and result.semantic.shape == (60, 80)
    assert (result.semantic[:25] == 0).all() and (result.semantic[35:, :35] == 1).all()
    assert (result.semantic[35:, 45:] == 2).all()


def test_panoptic_head_applies_the_query_rules(toy_dir: Path) -> None:
    image = quadrants()
    with Predictor(toy_dir / "panoptic.onnx") as predictor:
        result = predictor(image)
    # query 0 (red, disk) and 1 (green, grass) survive; query 2 (blue) fails the overlap rule, query 3 is not kept
    assert result.segments == [Segment(1, 2, True, 9, pytest.approx(0.95)), Segment(2, 0, False, 10,
                                                                                 pytest.approx(0.9))]
    assert (result.panoptic[:25] == 1).all() and (result.panoptic[35:, :35] == 2).all()
    assert (result.panoptic[35:, 45:] == 0).all()
    assert (result.semantic[:25] == 2).all() and (result.semantic[35:, :35] == 0).all()
    assert (result.semantic[35:, 45:] == 255).all()


def test_wrong_preset_and_inconsistent_artifacts(toy_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="exported from preset 'toy_panoptic', not 'synthetic_panoptic_tiny'"):
        Predictor(toy_dir / "raw.onnx", expect_preset="synthetic_panoptic_tiny")
    three = graphs.CLASSES[:3]
    graphs.raw_graph(tmp_path / "k.onnx", props=graphs.metadata("raw", classes=three))
    with pytest.raises(ArtifactError, match="predicts 4 classes but its metadata lists 3"):
        Predictor(tmp_path / "k.onnx")
    graphs.raw_graph(tmp_path / "head.onnx", props=graphs.metadata("panoptic"))
    with pytest.raises(ArtifactError, match="needs the input 'orig_size'"):
        Predictor(tmp_path / "head.onnx")
    graphs.raw_graph(tmp_path / "head2.onnx", props=graphs.metadata("semantic"), with_orig_size=True)
    with pytest.raises(ArtifactError, match=r"lacks the outputs \['semantic'\]"):
        Predictor(tmp_path / "head2.onnx")
    graphs.raw_graph(tmp_path / "layout.onnx", props=graphs.metadata("raw", layout="float_nchw"))
    with pytest.raises(ArtifactError, match="do not match layout 'float_nchw'"):
        Predictor(tmp_path / "layout.onnx")
    graphs.raw_graph(tmp_path / "batch.onnx", static_size=(64, 96), batch=2)
    with pytest.raises(ArtifactError, match="fixed batch of 2"):
        Predictor(tmp_path / "batch.onnx")
    props = graphs.metadata("raw")
    del props["pem.format"]
    graphs.raw_graph(tmp_path / "plain.onnx", props=props)
    with pytest.raises(ArtifactError, match="no PEM metadata"):
        Predictor(tmp_path / "plain.onnx")


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((0, 5, 3), np.uint8), "empty image"),
    (np.zeros((5, 5), np.uint8), "3 colour channels"),
    (np.zeros((5, 5, 4), np.uint8), "3 colour channels"),
    (np.zeros((5, 5, 3), np.float32), "uint8"),
    ([[1, 2, 3]], "numpy image"),
])
def test_bad_images_are_refused(toy_dir: Path, image: np.ndarray, message: str) -> None:
    with Predictor(toy_dir / "raw.onnx") as predictor, pytest.raises(ValueError, match=message):
        predictor(image)


def test_backend_instance_and_forced_input_size(toy_dir: Path, scene: np.ndarray) -> None:
    from pem.runtime.backends import open_backend

    with Predictor(open_backend(toy_dir / "raw.onnx"), input_size=(64, 96)) as predictor:
        assert predictor.fixed_size == (64, 96) and predictor.resized_size(600, 800) == (64, 96)
        result = predictor(scene)
    resized = np.asarray(Image.fromarray(scene).resize((96, 64), Image.BILINEAR))
    np.testing.assert_array_equal(result.panoptic, reference(scene, resized)[1])
    assert predictor.backend._closed  # the predictor owns the backend it was given
    with pytest.raises(ArtifactError, match="takes 64x96 images only, not 32x32"):
        Predictor(toy_dir / "raw_static.onnx", input_size=(32, 32))
    given = open_backend(toy_dir / "raw.onnx")
    with pytest.raises(ValueError, match="threads applies when the Predictor opens the artifact"):
        Predictor(given, threads=2)
    assert given._closed
