"""ONNX Runtime's calibration data reader over image files (imports onnxruntime: load it lazily)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from pem.calibration.images import load_rgb
from pem.runtime.predictor import Predictor


class CalibrationFeeds(CalibrationDataReader):
    """The graph inputs of each image, pre-processed as the runtime's ``Predictor`` does for ``model``.

    A graph of free size gets every image at one size, the preset's test short side squared (ONNX Runtime's
    histogram calibrators need one shape per tensor); a fixed-size graph takes its own size anyway.
    """

    def __init__(self, model: str | Path, images: Sequence[str | Path]) -> None:
        self._predictor = Predictor(model, providers=["cpu"])
        if self._predictor.fixed_size is None:
            side = self._predictor.metadata.min_size
            self._predictor.close()
            self._predictor = Predictor(model, providers=["cpu"], input_size=(side, side))
        self._images = iter([Path(p) for p in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next image's feed (names -> arrays), or None when all were given."""
        path = next(self._images, None)
        if path is None:
            self._predictor.close()
            return None
        feed, _ = self._predictor.preprocess(load_rgb(path))
        return feed
