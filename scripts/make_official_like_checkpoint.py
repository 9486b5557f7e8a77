"""Write an official-format (detectron2) PEM checkpoint with the parity oracle's deterministic weights.

    python scripts/make_official_like_checkpoint.py --keys cityscapes_semantic_stdc2 --seed 7 --out official.pth

Needs ``../shared/parity`` beside the checkout (or $PEM_SHARED). The weights are synthetic but well conditioned
(the same ones the parity vectors were computed with), so the outputs are informative without trained weights.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="cityscapes_semantic_stdc2", help="key listing name in parity/keys/")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    shared = Path(os.environ.get("PEM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    module_path = shared / "parity" / "official_weights.py"
    if not module_path.is_file():
        print(f"error: {module_path} not found (set PEM_SHARED to the shared folder)", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("official_weights", module_path)
    official_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official_weights)
    state = official_weights.make_state_dict(str(shared / "parity" / "keys" / f"{args.keys}_keys.txt"), args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, args.out)
    print(f"wrote {args.out} ({len(state)} tensors, official key names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
