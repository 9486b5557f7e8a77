"""The torch reference inference: official test-time geometry and the runtime's fusion, on real photographs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pem
from pem.inference import predict, to_original_size
from pem.runtime.fusion import panoptic_inference
from pem.runtime.preprocess import resize_shortest_edge, shortest_edge_size
from tests.conftest import load_photo


def test_shortest_edge_size_follows_detectron2() -> None:
    assert shortest_edge_size(512, 512, 1024, 2048) == (1024, 1024)
    assert shortest_edge_size(400, 600, 256, 512) == (256, 384)
    assert shortest_edge_size(100, 1000, 640, 2560) == (256, 2560)  # long side capped
    assert shortest_edge_size(1024, 2048, 1024, 2048) == (1024, 2048)
    assert shortest_edge_size(333, 500, 512, 2048) == (512, 769)  # 768.77 rounds half up


def test_resize_is_pillow_bilinear_on_uint8() -> None:
    image = load_photo("coffee.png")  # 400 x 600
    resized = resize_shortest_edge(image, 256, 512)
    assert resized.shape == (256, 384, 3) and resized.dtype == np.uint8
    from PIL import Image

    expected = np.asarray(Image.fromarray(image).resize((384, 256), Image.BILINEAR))
    assert np.array_equal(resized, expected)
    assert resize_shortest_edge(image, 400, 600) is image


def test_mask_geometry_upsamples_crops_then_resizes() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 12, dtype=torch.float64)  # stride 4 of a 32 x 48 padded input
    out = to_original_size(logits, (32, 48), (30, 41), (60, 82))
    padded = F.interpolate(logits[None], size=(32, 48), mode="bilinear", align_corners=False)
    expected = F.interpolate(padded[:, :, :30, :41], size=(60, 82), mode="bilinear", align_corners=False)[0]
    assert out.shape == (3, 60, 82)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("photo", ["astronaut.png", "coffee.png"])
def test_predict_on_photographs_is_consistent(photo: str) -> None:
    torch.manual_seed(0)
    model = pem.build_model("synthetic_panoptic_tiny").eval()
    image = load_photo(photo)
    prediction = predict(model, image, instances=True)
    height, width = image.shape[:2]
    assert prediction.semantic.shape == (height, width)
    assert prediction.semantic_prob.shape == (model.config.num_classes, height, width)
    assert np.array_equal(prediction.semantic, prediction.semantic_prob.argmax(0))
    panoptic = prediction.panoptic
    assert panoptic.panoptic.shape == (height, width) and panoptic.panoptic.dtype == np.int32
    ids = sorted(int(i) for i in np.unique(panoptic.panoptic) if i != 0)
    assert ids == [s.id for s in panoptic.segments]
    for segment in panoptic.segments:
        assert segment.area == int((panoptic.panoptic == segment.id).sum())
        assert segment.isthing == (segment.category_id in model.config.thing_ids)
    assert prediction.instances.masks.shape[1:] == (height, width)


def test_predict_reproduces_the_chain_by_hand(official_weights, shared_dir) -> None:
    from pem.convert import convert_official

    preset = "cityscapes_panoptic_stdc2"
    state = official_weights.make_state_dict(
        str(shared_dir / "parity" / "keys" / "cityscapes_semantic_stdc2_keys.txt"), 7)
    model = pem.build_model(preset)
    model.load_state_dict(convert_official(state, model.config, model.state_dict()).state_dict)
    model.eval()
    image = load_photo("coffee.png")[200:264]  # 64 x 600 -> long side capped: 218 x 2048, padded to 224 x 2048
    prediction = predict(model, image)
    with torch.no_grad():
        resized = resize_shortest_edge(image, 1024, 2048)
        assert resized.shape == (218, 2048, 3)
        out = model(torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None].float())
    masks = F.interpolate(out["pred_masks"], size=(224, 2048), mode="bilinear", align_corners=False)
    masks = F.interpolate(masks[:, :, :218], size=(64, 600), mode="bilinear", align_corners=False)[0]
    expected = panoptic_inference(out["pred_logits"][0].numpy(), masks.numpy(), model.config.thing_ids)
    assert len(expected.segments) > 0
    assert np.array_equal(prediction.panoptic.panoptic, expected.panoptic)
    assert prediction.panoptic.segments == expected.segments


def test_bad_images_are_refused() -> None:
    model = pem.build_model("synthetic_panoptic_tiny").eval()
    with pytest.raises(ValueError, match=r"\[H, W, 3\].*\(10, 10, 4\)"):
        predict(model, np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        predict(model, np.zeros((10, 10, 3), np.float32))
