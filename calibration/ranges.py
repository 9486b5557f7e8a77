"""Activation ranges from calibration images: ONNX Runtime's calibrators fed by :class:`CalibrationFeeds`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pem.calibration.images import CalibrationDataError

__all__ = ["calibrate_ranges"]


def calibrate_ranges(model: Path, images: Sequence[Path], op_types: Sequence[str], method: Any,
                     options: Mapping[str, Any], ranges: Path, work: Path) -> None:
    """Run ``images`` through the FP32 graph ``model`` and save the ranges of the outputs of ``op_types`` nodes to
    ``ranges`` (the calibration cache ``quantize_static`` reads; it does not pass histogram settings on to a
    calibrator of its own).

    ``method``: an ONNX Runtime ``CalibrationMethod``; ``options``: its calibrator's ``extra_options``; ``work``: an
    existing scratch folder (the augmented graph). Raises CalibrationDataError for an unreadable image or a failed
    calibration."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    from pem.calibration.feeds import CalibrationFeeds

    calibrator = create_calibrator(model, list(op_types), work / "augmented.onnx", calibrate_method=method,
                                   extra_options=dict(options))
    try:
        calibrator.collect_data(CalibrationFeeds(model, images))
        computed = calibrator.compute_data()
    except (ValueError, RuntimeError) as error:  # ONNX Runtime's calibrator; image errors pass through
        if isinstance(error, CalibrationDataError):
            raise
        raise CalibrationDataError(f"calibrating {model.name} failed: {error}") from error
    save_tensors_data(computed, ranges)
