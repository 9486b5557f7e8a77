"""``pem-demo``: the PyTorch model's forward pass and fusion on one photograph, with files to look at.

Writes into ``--out`` the files ``pem-predict`` writes for one image, with the same savers: ``panoptic.png``
(COCO-panoptic id2rgb) and ``panoptic.json`` (segments with dataset category ids) for panoptic presets,
``semantic.png`` (palette PNG of class ids, 255 = none), ``overlay.png`` and ``timings.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pem.runtime.coco_panoptic import write_json_atomic
from pem.runtime.entry import command
from pem.runtime.errors import PemError
from pem.runtime.images import read_image, resolve_image_source


def load_image(source: str) -> np.ndarray:
    """A file path, or ``skimage:NAME`` for a photograph shipped with scikit-image -> [H, W, 3] uint8 RGB, read by
    ``pem.runtime.images.read_image`` as ``pem-predict`` reads it."""
    return read_image(resolve_image_source(source)).image


def run(config_name: str, weights: str | None, image_source: str, out: Path) -> dict[str, float]:
    """Run the demo and return stage timings in milliseconds."""
    import torch

    import pem
    from pem.inference import predict
    from pem.runtime.metadata import ArtifactMetadata, graph_metadata
    from pem.runtime.outputs import write_image
    from pem.runtime.result import Result

    image = load_image(image_source)
    started = time.perf_counter()
    model = pem.build_model(config_name, weights).eval()
    built = time.perf_counter()
    with torch.no_grad():
        prediction = predict(model, image)
    predicted = time.perf_counter()
    timings = {"build_model_ms": (built - started) * 1e3, "predict_ms": (predicted - built) * 1e3}
    shapes = {"batch": "dynamic", "height": "dynamic", "width": "dynamic"}
    meta = ArtifactMetadata.from_props(graph_metadata(model.config, "raw", "uint8_nhwc", shapes, opset=0),
                                       f"preset:{model.config.name}")
    fused = prediction.panoptic
    result = Result(image, prediction.semantic, None if fused is None else fused.panoptic,
                    [] if fused is None else fused.segments, meta, timings)
    out.mkdir(parents=True, exist_ok=True)
    result.save_semantic(out / "semantic.png")
    if fused is not None:
        result.save_coco_panoptic(out, "panoptic.png")
    write_image(out / "overlay.png", result.plot())
    write_json_atomic(out / "timings.json", {"image": image_source, "shape": list(image.shape), **timings})
    return timings


@command("pem-demo")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pem-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="synthetic_panoptic_tiny", help="preset name")
    parser.add_argument("--weights", help="checkpoint from pem-convert or pem-train (default: random init)")
    parser.add_argument("--image", default="skimage:astronaut.png", help="image path or skimage:NAME")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    args = parser.parse_args(argv)
    try:
        timings = run(args.config, args.weights, args.image, args.out)
    except PemError as error:  # expected failures only: a bug keeps its traceback
        print(f"pem-demo: error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir() if not p.name.startswith('.')))} to {args.out}")
    print(f"model build {timings['build_model_ms']:.0f} ms, predict {timings['predict_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
