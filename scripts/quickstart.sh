#!/usr/bin/env bash
# Main job on a fresh machine: set up the environment, convert an official-format checkpoint and run the PyTorch
# model on a photograph, then export the trained tiny model to ONNX and run the torch-free runtime on held-out
# synthetic scenes and real photographs. Outputs land in outputs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
out=outputs/quickstart
echo "== 1. official-format checkpoint (deterministic parity weights, STDC2) -> pem-convert"
python scripts/make_official_like_checkpoint.py --keys cityscapes_semantic_stdc2 --seed 7 --out "$out/official_stdc2.pth"
pem-convert --config cityscapes_panoptic_stdc2 "$out/official_stdc2.pth" "$out/pem_stdc2.pth"
pem-info --config cityscapes_panoptic_stdc2
echo "== 2. PyTorch forward + panoptic fusion on skimage's astronaut photograph"
pem-demo --config cityscapes_panoptic_stdc2 --weights "$out/pem_stdc2.pth" --image skimage:astronaut.png --out "$out"
echo "== 3. trained synthetic_panoptic_tiny -> ONNX (parity-checked against PyTorch)"
pem-export --config synthetic_panoptic_tiny --weights tests/fixtures/synthetic_panoptic_tiny.pth --format onnx \
  --head panoptic --imgsz 256x256 --dynamic --output "$out/tiny_panoptic.onnx"
echo "== 4. pem-predict (ONNX Runtime, no torch) on held-out synthetic scenes and on photographs"
rm -rf "$out/scenes" "$out/photos"
pem-data synthetic --out "$out/scenes" --n 8 --size 256x256 --seed 12
mkdir -p "$out/photos"
python -c "import shutil, skimage.data as d, pathlib; [shutil.copy(pathlib.Path(d.data_dir) / n, '$out/photos') for n in ('astronaut.png', 'coffee.png', 'motorcycle_left.png')]"
pem-predict "$out/tiny_panoptic.onnx" "$out/scenes/images" --out "$out/predict/scenes" --save panoptic,overlay
pem-predict "$out/tiny_panoptic.onnx" "$out/photos" --out "$out/predict/photos" --save panoptic,overlay
pem-eval-panoptic --gt-json "$out/scenes/panoptic.json" --gt-folder "$out/scenes/panoptic" \
  --pred-json "$out/predict/scenes/panoptic.json" --pred-folder "$out/predict/scenes/panoptic"
echo "== done: $out/overlay.png (PyTorch, official-format weights), $out/predict/*/overlay/ (ONNX Runtime)"
