"""``pem-demo``: the PyTorch model's forward pass and fusion on one photograph, with files to look at.

Writes into ``--out``: ``panoptic.png`` (COCO-panoptic id2rgb) and ``panoptic.json`` (segments) for panoptic
presets, ``semantic.png`` (class ids, 255 = none), ``overlay.png`` and ``timings.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pem.runtime.coco_panoptic import write_atomic, write_json_atomic, write_panoptic_png
from pem.runtime.visualize import colorize_panoptic, colorize_semantic, overlay


def read_image(source: str) -> np.ndarray:
    """A file path, or ``skimage:NAME`` for a photograph shipped with scikit-image -> [H, W, 3] uint8 RGB."""
    if source.startswith("skimage:"):
        try:
            from skimage.data import data_dir
        except ImportError:
            raise ValueError("skimage: images need scikit-image (pip install scikit-image)") from None
        source = str(Path(data_dir) / source.removeprefix("skimage:"))
    try:
        with Image.open(source) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"image not found: {source}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {source}: {error}") from None


def _save_png(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda handle: Image.fromarray(array).save(handle, format="PNG"), ".png")


def run(config_name: str, weights: str | None, image_source: str, out: Path) -> dict[str, float]:
    """Run the demo and return stage timings in milliseconds."""
    import torch

    import pem
    from pem.inference import predict

    image = read_image(image_source)
    started = time.perf_counter()
    model = pem.build_model(config_name, weights).eval()
    built = time.perf_counter()
    torch.set_grad_enabled(False)
    prediction = predict(model, image)
    predicted = time.perf_counter()
    config = model.config
    colors = [c.color for c in config.categories]
    out.mkdir(parents=True, exist_ok=True)
    semantic = prediction.semantic.astype(np.uint8)
    _save_png(out / "semantic.png", semantic)
    if prediction.panoptic is not None:
        panoptic = prediction.panoptic
        write_panoptic_png(out / "panoptic.png", panoptic.panoptic)
        segments = [dict(asdict(s), name=config.categories[s.category_id].name) for s in panoptic.segments]
        write_json_atomic(out / "panoptic.json", {"file_name": "panoptic.png", "segments_info": segments})
        colored = colorize_panoptic(panoptic.panoptic, panoptic.segments, colors)
        _save_png(out / "overlay.png", overlay(image, colored, panoptic.panoptic))
    else:
        colored = colorize_semantic(semantic, colors)
        _save_png(out / "overlay.png", overlay(image, colored, semantic.astype(np.int64) + 1))
    timings = {"build_model_ms": (built - started) * 1e3, "predict_ms": (predicted - built) * 1e3}
    write_json_atomic(out / "timings.json", {"image": image_source, "shape": list(image.shape), **timings})
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pem-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="synthetic_panoptic_tiny", help="preset name")
    parser.add_argument("--weights", help="checkpoint from pem-convert or pem-train (default: random init)")
    parser.add_argument("--image", default="skimage:astronaut.png", help="image path or skimage:NAME")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    args = parser.parse_args(argv)
    from pem.checkpoint import CheckpointError

    try:
        timings = run(args.config, args.weights, args.image, args.out)
    except (ValueError, KeyError, CheckpointError) as error:
        print(f"pem-demo: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir() if not p.name.startswith('.')))} to {args.out}")
    print(f"model build {timings['build_model_ms']:.0f} ms, predict {timings['predict_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
