"""A synthetic test video: a camera panning across one synthetic panoptic scene (needs OpenCV: the video extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pem.data.synthetic import synthetic_scene

PAN_FACTOR = 1.5  # the scene is this much wider than the frame


def write_synthetic_video(path: str | Path, frames: int, size: tuple[int, int], seed: int, fps: float = 10.0) -> Path:
    """Write ``frames`` frames of ``size`` (H, W) to ``path`` (.mp4 or .avi): a window panning left to right at
    constant speed across a scene ``PAN_FACTOR`` times wider. Written to a temporary file, then renamed."""
    from pem.runtime.video_writer import VideoWriter

    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    height, width = size
    wide = int(round(width * PAN_FACTOR))
    scene = synthetic_scene(np.random.default_rng([seed, 0]), (height, wide), max(24, int(0.0015 * height * wide)))[0]
    offsets = np.linspace(0, wide - width, frames).round().astype(int)
    writer = VideoWriter(path, fps)
    try:
        for offset in offsets:
            writer.write(np.ascontiguousarray(scene[:, offset:offset + width]))
    except BaseException:
        writer.abort()
        raise
    return writer.close()
