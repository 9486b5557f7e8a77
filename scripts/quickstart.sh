#!/usr/bin/env bash
# Main job on a fresh machine (CPU, ONNX Runtime): set up the environment, make synthetic data, train
# synthetic_panoptic_tiny for a fixed 340 steps, export it to ONNX (FP32, and INT8 with a fixed calibration recipe),
# run pem-predict on held-out scenes, real photographs and a generated video, evaluate, benchmark FP32 against
# INT8 (speed and PQ), convert an official-format checkpoint, and print where every artifact is.
#
# Knobs (environment): PEM_QUICKSTART_OUT (outputs/quickstart), PEM_QUICKSTART_STEPS (340 training steps; no
# wall-time bound, so a busy machine takes longer but trains the same model), PEM_QUICKSTART_TRAIN_IMAGES (400),
# PEM_SKIP_SETUP=1 (use the current environment instead of running scripts/setup.sh; the test of this script does).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step_name="set-up"
trap 'echo "quickstart FAILED at step: $step_name (see the error above)" >&2' ERR

step() {
  step_name="$1"
  printf '\n== [%4ds] %s\n' "$((SECONDS - started))" "$1"
}

if [[ "${PEM_SKIP_SETUP:-0}" != "1" ]]; then
  step "set up the environment (scripts/setup.sh)"
  bash scripts/setup.sh
  source .venv/bin/activate
  echo "set-up took $((SECONDS - started)) s"
fi
install_done=$SECONDS

out="${PEM_QUICKSTART_OUT:-outputs/quickstart}"
steps="${PEM_QUICKSTART_STEPS:-340}"
train_images="${PEM_QUICKSTART_TRAIN_IMAGES:-400}"
rm -rf "$out"
mkdir -p "$out"

step "synthetic datasets: train, validation, calibration and held-out test scenes (pem-data)"
pem-data synthetic --out "$out/data/train" --n "$train_images" --size 256x256 --seed 11
pem-data synthetic --out "$out/data/val" --n 8 --size 256x256 --seed 12
pem-data synthetic --out "$out/calibration" --n 32 --size 256x256 --seed 21
pem-data synthetic --out "$out/test" --n 24 --size 256x256 --seed 13

step "train synthetic_panoptic_tiny for $steps steps at batch 8 on the CPU (pem-train)"
echo "expected: about $(( (steps * 7 + 9) / 10 )) s on 2 idle CPU cores (0.7 s a step); longer on a busy machine"
pem-train --config synthetic_panoptic_tiny --data "$out/data" --out "$out/train" \
  --max-steps "$steps" --batch-size 8 --num-points 4096 --log-every 20 --checkpoint-every 100
checkpoint="$out/train/model_final.pth"
pem-info --config synthetic_panoptic_tiny --imgsz 256x256

step "export to ONNX: FP32 (parity-checked against PyTorch), then INT8 (min-max, 32 calibration images)"
pem-export --config synthetic_panoptic_tiny --weights "$checkpoint" --head panoptic --imgsz 256x256 \
  --output "$out/models/tiny_fp32.onnx" --check-image "$out/test/images/000001.jpg"
pem-export --onnx "$out/models/tiny_fp32.onnx" --precision int8 --calib-data "$out/calibration" \
  --calib-method minmax --calib-images 32 --output "$out/models/tiny_int8.onnx" \
  --report "$out/models/tiny_int8_report.json" --check-image "$out/test/images/000001.jpg"

step "pem-predict (ONNX Runtime, no torch): held-out scenes, photographs, a generated video"
mkdir -p "$out/photos"
python -c "import shutil, skimage.data as d, pathlib; [shutil.copy(pathlib.Path(d.data_dir) / n, '$out/photos') for n in ('astronaut.png', 'coffee.png', 'motorcycle_left.png')]"
pem-data video --out "$out/video/clip.mp4" --frames 40 --size 256x320 --seed 5
pem-predict "$out/models/tiny_fp32.onnx" "$out/test/images" --out "$out/predict/test" --save panoptic,overlay --quiet
pem-predict "$out/models/tiny_fp32.onnx" "$out/photos" --out "$out/predict/photos" --save panoptic,overlay --quiet
pem-predict "$out/models/tiny_int8.onnx" "$out/video/clip.mp4" --out "$out/predict/video" --save none \
  --video-out "$out/predict/video/overlay.mp4" --quiet

step "evaluate the held-out predictions (pem-eval-panoptic)"
pem-eval-panoptic --gt-json "$out/test/panoptic.json" --gt-folder "$out/test/panoptic" \
  --pred-json "$out/predict/test/panoptic.json" --pred-folder "$out/predict/test/panoptic" \
  --json "$out/predict/test/pq.json"

step "benchmark FP32 against INT8 in one run: latency and PQ on the held-out scenes (pem-bench)"
pem-bench "$out/models/tiny_fp32.onnx" --imgsz 256x256 --threads 2 --duration 10 \
  --compare onnxruntime:int8 --calib-data "$out/calibration" --accuracy "$out/test" --cache "$out/bench_cache" \
  --json "$out/bench/bench.json" --csv "$out/bench/bench.csv" --plot "$out/bench/bench.png"

step "official-format checkpoint -> pem-convert -> PyTorch forward + fusion on a photograph (pem-demo)"
python scripts/make_official_like_checkpoint.py --keys cityscapes_semantic_stdc2 --seed 7 \
  --out "$out/official/official_stdc2.pth"
pem-convert --config cityscapes_panoptic_stdc2 "$out/official/official_stdc2.pth" "$out/official/pem_stdc2.pth"
pem-demo --config cityscapes_panoptic_stdc2 --weights "$out/official/pem_stdc2.pth" --image skimage:astronaut.png \
  --out "$out/official"

step "check the outputs"
python scripts/check_quickstart.py "$out"

trap - ERR
cat <<EOF

== done in $((SECONDS - install_done)) s after set-up. Artifacts:
  trained checkpoint      $checkpoint  (log: $out/train/log.jsonl)
  ONNX models             $out/models/tiny_fp32.onnx, $out/models/tiny_int8.onnx (+ tiny_int8_report.json)
  held-out predictions    $out/predict/test/panoptic.json + panoptic/*.png (COCO panoptic), overlay/*.jpg
  PQ of those             $out/predict/test/pq.json
  photographs             $out/predict/photos/overlay/
  video overlay (INT8)    $out/predict/video/overlay.mp4  (input: $out/video/clip.mp4)
  benchmark               $out/bench/bench.json, bench.csv, bench.png
  official-format demo    $out/official/overlay.png
EOF
