"""The export wrapper in eager mode: the same numbers as the model, the reference chain and the numpy fusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pem.export.wrapper import ExportWrapper
from pem.inference import postprocess, predict, to_original_size
from pem.modeling.pem_model import PEM
from pem.runtime.fusion import keep_queries, panoptic_pixel_stage, query_scores
from pem.runtime.preprocess import resize_shortest_edge, resize_to
from tests.conftest import load_photo

SIZE = (200, 296)  # not a multiple of 32: padding, crop and resize all matter


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_photo("coffee.png")  # 400 x 600


def _uint8_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image))[None]


def _raw(model: PEM, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The wrapper's network part on one uint8 image: class logits, mask logits, padded size."""
    return ExportWrapper(model, "raw").predict(_uint8_batch(image).permute(0, 3, 1, 2).float().contiguous())


def test_raw_head_is_the_model_bit_for_bit(tiny_model: PEM, photo: np.ndarray) -> None:
    resized = resize_to(photo, SIZE)
    nchw = _uint8_batch(resized).permute(0, 3, 1, 2).float().contiguous()
    with torch.no_grad():
        expected = tiny_model(nchw)
        uint8_out = ExportWrapper(tiny_model, "raw")(_uint8_batch(resized))
        float_out = ExportWrapper(tiny_model, "raw", "float_nchw")(nchw)
    for got in (uint8_out, float_out):
        torch.testing.assert_close(got[0], expected["pred_logits"], rtol=0, atol=0)
        torch.testing.assert_close(got[1], expected["pred_masks"], rtol=0, atol=0)


def test_panoptic_head_is_the_numpy_pixel_stage(tiny_model: PEM, photo: np.ndarray) -> None:
    resized = resize_to(photo, SIZE)
    orig_size = torch.tensor(photo.shape[:2])
    with torch.no_grad():
        logits, masks, padded = _raw(tiny_model, resized)
        outputs = ExportWrapper(tiny_model, "panoptic")(_uint8_batch(resized), orig_size)
    full = to_original_size(masks, padded, SIZE, photo.shape[:2])[0].numpy()
    scores, labels = query_scores(logits[0].numpy())
    keep = keep_queries(scores, labels, tiny_model.config.num_classes, 0.8)
    stage = panoptic_pixel_stage(scores, keep, full)
    query_scores_out, labels_out, winner, winner_area, mask_area, visible_area = (o[0].numpy() for o in outputs)
    np.testing.assert_allclose(query_scores_out, scores, rtol=1e-6)
    np.testing.assert_array_equal(labels_out, labels)
    assert winner.dtype == np.int32 and winner.shape == photo.shape[:2] and 3 <= keep.sum() < len(keep)
    np.testing.assert_array_equal(winner, stage.winner)
    for got, expected in ((winner_area, stage.winner_area), (mask_area, stage.mask_area),
                          (visible_area, stage.visible_area)):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


def test_panoptic_head_without_kept_queries(tiny_model: PEM, photo: np.ndarray) -> None:
    wrapper = ExportWrapper(tiny_model, "panoptic", object_mask_threshold=1.0)  # no score exceeds 1
    with torch.no_grad():
        _, _, winner, *areas = wrapper(_uint8_batch(resize_to(photo, SIZE)), torch.tensor([50, 70]))
    assert winner.shape == (1, 50, 70) and bool((winner == -1).all())
    assert all(int(area.abs().sum()) == 0 for area in areas)


@pytest.mark.parametrize("preset", ["cityscapes_panoptic_stdc2", "cityscapes_semantic_stdc2"])
def test_semantic_head_follows_the_reference_chain(official_model, photo: np.ndarray, preset: str) -> None:
    """Panoptic presets score classes at the original size, semantic presets at the padded size (official)."""
    model = official_model(preset, "cityscapes_semantic_stdc2")
    resized = resize_to(photo, SIZE)
    with torch.no_grad():
        logits, masks, _ = _raw(model, resized)
        (semantic,) = ExportWrapper(model, "semantic")(_uint8_batch(resized), torch.tensor(photo.shape[:2]))
    reference = postprocess(model.config, logits[0], masks[0], SIZE, photo.shape[:2], panoptic=False)
    assert semantic.dtype == torch.int64 and semantic.shape == (1, *photo.shape[:2])
    assert (semantic[0].numpy() == reference.semantic).mean() > 0.9999


def test_postprocess_of_model_outputs_is_pem_inference_predict(tiny_model: PEM, photo: np.ndarray) -> None:
    """The parity reference (model outputs -> ``postprocess``) is ``predict`` when the host resizes by the shortest
    edge; ``semantic=False`` leaves the panoptic result unchanged."""
    test = tiny_model.config.test
    resized = resize_shortest_edge(photo, test.min_size, test.max_size)
    with torch.no_grad():
        out = tiny_model(_uint8_batch(resized).permute(0, 3, 1, 2).float())
    chain = postprocess(tiny_model.config, out["pred_logits"][0], out["pred_masks"][0], resized.shape[:2],
                        photo.shape[:2], semantic=False)
    prediction = predict(tiny_model, photo)
    assert chain.semantic.size == 0 and prediction.semantic.shape == photo.shape[:2]
    np.testing.assert_array_equal(chain.panoptic.panoptic, prediction.panoptic.panoptic)
    assert len(chain.panoptic.segments) == len(prediction.panoptic.segments) > 0


def test_bad_heads_and_layouts_are_refused(tiny_model: PEM) -> None:
    with pytest.raises(ValueError, match="unknown head 'instances'"):
        ExportWrapper(tiny_model, "instances")
    with pytest.raises(ValueError, match="unknown input layout"):
        ExportWrapper(tiny_model, "raw", "bgr")
