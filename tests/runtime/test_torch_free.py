"""The runtime works with torch (and pem's model side) unimportable: Predictor, savers and pem-predict."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pem.runtime import Predictor
from tests.runtime.conftest import quadrants
from tests.runtime.torch_free import run_torch_free


def test_blocker_blocks() -> None:
    with pytest.raises(AssertionError, match="blocked import of torch"):
        run_torch_free("import torch")
    with pytest.raises(AssertionError, match="blocked import of pem.inference"):
        run_torch_free("import pem.inference")


def test_predictor_and_cli_without_torch(toy_dir: Path, tmp_path: Path) -> None:
    Image.fromarray(quadrants()).save(tmp_path / "a.png")
    run_torch_free(f'''
        import numpy as np
        from pem.runtime import Predictor
        from pem.runtime.cli import main
        from pem.runtime.images import read_image

        with Predictor({str(toy_dir / "raw.onnx")!r}) as predictor:
            result = predictor(read_image({str(tmp_path / "a.png")!r}).image)
        result.save_coco_panoptic({str(tmp_path / "api")!r}, "a.png")
        result.save_cityscapes({str(tmp_path / "api")!r}, "a")
        result.save_semantic({str(tmp_path / "api" / "a_semantic.png")!r})
        result.plot()
        np.save({str(tmp_path / "panoptic.npy")!r}, result.panoptic)
        code = main([{str(toy_dir / "raw.onnx")!r}, {str(tmp_path / "a.png")!r}, "--out", {str(tmp_path / "cli")!r},
                     "--save", "panoptic,semantic,overlay,cityscapes", "--video-out", {str(tmp_path / "v.avi")!r}])
        assert code == 0, code
    ''')
    with Predictor(toy_dir / "raw.onnx") as predictor:
        expected = predictor(quadrants()).panoptic
    np.testing.assert_array_equal(np.load(tmp_path / "panoptic.npy"), expected)
    assert (tmp_path / "cli" / "panoptic" / "a.png").is_file() and (tmp_path / "v.avi").is_file()
