#!/usr/bin/env bash
# Main job on a fresh machine: set up the environment, convert an official-format PEM checkpoint, and run the
# PyTorch forward pass and panoptic fusion on a real photograph. Outputs land in outputs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
out=outputs/quickstart
echo "== official-format checkpoint (deterministic parity weights, STDC2) -> pem-convert"
python scripts/make_official_like_checkpoint.py --keys cityscapes_semantic_stdc2 --seed 7 --out "$out/official_stdc2.pth"
pem-convert --config cityscapes_panoptic_stdc2 "$out/official_stdc2.pth" "$out/pem_stdc2.pth"
echo "== pem-info"
pem-info --config cityscapes_panoptic_stdc2
echo "== forward + panoptic fusion on skimage's astronaut photograph"
pem-demo --config cityscapes_panoptic_stdc2 --weights "$out/pem_stdc2.pth" --image skimage:astronaut.png --out "$out"
echo "== done: see $out/overlay.png, $out/panoptic.png + panoptic.json, $out/semantic.png"
