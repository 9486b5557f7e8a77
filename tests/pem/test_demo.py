"""pem-demo saves what pem-predict saves: COCO-panoptic files with dataset category ids, a palette semantic PNG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pem
from pem.demo import main
from pem.inference import predict
from pem.runtime.coco_panoptic import read_panoptic_png

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_panoptic_tiny.pth"


def test_demo_writes_dataset_category_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pem.data.synthetic import synthetic_scene

    scene = synthetic_scene(np.random.default_rng(3), (192, 256), 24)[0]
    Image.fromarray(scene).save(tmp_path / "scene.png")
    out = tmp_path / "demo"
    assert main(["--weights", str(FIXTURE), "--image", str(tmp_path / "scene.png"), "--out", str(out)]) == 0
    model = pem.build_model("synthetic_panoptic_tiny", str(FIXTURE)).eval()
    expected = predict(model, scene)
    dataset_ids = {c.id: c.dataset_id for c in model.config.categories}  # contiguous c -> dataset id c + 1
    saved = json.loads((out / "panoptic.json").read_text())
    (annotation,) = saved["annotations"]
    assert [(s["id"], s["category_id"]) for s in annotation["segments_info"]] == [
        (s.id, dataset_ids[s.category_id]) for s in expected.panoptic.segments] and len(expected.panoptic.segments) >= 3
    assert [c["id"] for c in saved["categories"]] == list(range(1, 9))
    np.testing.assert_array_equal(read_panoptic_png(out / "panoptic.png"), expected.panoptic.panoptic)
    with Image.open(out / "semantic.png") as semantic:
        assert semantic.mode == "P"
        np.testing.assert_array_equal(np.asarray(semantic), expected.semantic)
    assert sorted(p.name for p in out.iterdir()) == ["overlay.png", "panoptic.json", "panoptic.png", "semantic.png",
                                                     "timings.json"]
    assert main(["--image", str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"pem-demo: error: {tmp_path / 'missing.png'}: file not found\n"
