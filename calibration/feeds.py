"""ONNX Runtime's calibration data reader over image files (imports onnxruntime: load it lazily)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from pem.calibration.images import load_rgb
from pem.runtime.predictor import Predictor


class CalibrationFeeds(CalibrationDataReader):
    """The graph inputs of each image, pre-processed exactly as the runtime's ``Predictor`` does for ``model``."""

    def __init__(self, model: str | Path, images: Sequence[str | Path]) -> None:
        self._predictor = Predictor(model, providers=["cpu"])
        self._images = iter([Path(p) for p in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next image's feed (names -> arrays), or None when all were given."""
        path = next(self._images, None)
        if path is None:
            self._predictor.close()
            return None
        feed, _ = self._predictor.preprocess(load_rgb(path))
        return feed
