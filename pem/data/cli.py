"""``pem-data``: dataset tools.

    pem-data synthetic --out DIR --n N --size HxW [--seed S] [--overwrite]   a synthetic COCO-panoptic dataset
    pem-data video --out CLIP.mp4 --frames N --size HxW [--seed S] [--fps F]  a camera panning over a synthetic scene

Exit codes: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pem.data.synthetic import MIN_SIDE, generate_synthetic_dataset
from pem.runtime.entry import command
from pem.runtime.limits import MAX_IMAGE_SIDE, float_in
from pem.runtime.sizes import parse_size as parse_image_size

PROG = "pem-data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="PEM dataset tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    synthetic = commands.add_parser("synthetic", help="write a synthetic COCO-panoptic dataset")
    synthetic.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    synthetic.add_argument("--n", type=int, required=True, help="number of images")
    synthetic.add_argument("--size", required=True,
                           help=f"image size HxW, each side {MIN_SIDE}..{MAX_IMAGE_SIDE}, e.g. 256x256")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synthetic.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    video = commands.add_parser("video", help="write a synthetic test video (a camera panning over a scene)")
    video.add_argument("--out", required=True, help="the .mp4 or .avi file to write")
    video.add_argument("--frames", type=int, required=True, help="number of frames")
    video.add_argument("--size", required=True,
                       help=f"frame size HxW, each side {MIN_SIDE}..{MAX_IMAGE_SIDE}, e.g. 256x320")
    video.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    video.add_argument("--fps", type=float_in(0.0, 1000.0, low_open=True), default=10.0,
                       help="frames per second, over 0 and up to 1000 (default 10)")
    return parser


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> (H, W); ValueError unless both sides are in ``MIN_SIDE..MAX_IMAGE_SIDE``."""
    height, width = parse_image_size(text)
    if not (MIN_SIDE <= height <= MAX_IMAGE_SIDE and MIN_SIDE <= width <= MAX_IMAGE_SIDE):
        raise ValueError(f"--size {text!r} out of range: each side must be in {MIN_SIDE}..{MAX_IMAGE_SIDE} px")
    return height, width


def _fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return 2


def _synthetic(args: argparse.Namespace) -> int:
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        return _fail(str(exc))
    if args.n < 1:
        return _fail(f"--n must be at least 1, got {args.n}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        return _fail(f"--out {out} is not empty; pass --overwrite to write into it")
    start = time.perf_counter()
    try:
        generate_synthetic_dataset(out, args.n, size, args.seed)
    except OSError as exc:
        return _fail(f"cannot write to {out}: {exc.strerror or exc}")
    with open(out / "panoptic.json", encoding="utf-8") as handle:
        segments = [s for a in json.load(handle)["annotations"] for s in a["segments_info"]]
    crowd = sum(s["iscrowd"] for s in segments)
    print(
        f"wrote {args.n} images of {size[0]}x{size[1]} (seed {args.seed}) to {out} in "
        f"{time.perf_counter() - start:.1f} s: images/*.jpg, panoptic/*.png, semantic/*.png, panoptic.json "
        f"({len(segments)} segments, {crowd} crowd)"
    )
    return 0


def _video(args: argparse.Namespace) -> int:
    from pem.data.video import write_synthetic_video

    try:
        size = parse_size(args.size)
        path = write_synthetic_video(args.out, args.frames, size, args.seed, args.fps)
    except (ValueError, OSError, ImportError) as exc:
        return _fail(str(exc))
    print(f"wrote {args.frames} frames of {size[0]}x{size[1]} at {args.fps:g} fps (seed {args.seed}) to {path}")
    return 0


@command("pem-data")
def main(argv: list[str] | None = None) -> int:
    """Run ``pem-data``; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    return _video(args) if args.command == "video" else _synthetic(args)


if __name__ == "__main__":
    sys.exit(main())
