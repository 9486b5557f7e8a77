#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its training and development extras.
# torch is pinned here, not in pyproject.toml: GPU machines may carry another torch (>= 2.11).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -e ".[train,export,video,dev]"
# pem-serve's server: nvidia-pytriton pins numpy<2, so it gets its own venv (.venv-serve; about 30 s from the
# mirror). Where its wheel does not install, the serve tests skip with one line naming .venv-serve.
python3 -m venv .venv-serve
.venv-serve/bin/python -m pip install --quiet -e ".[serve]" onnxruntime pillow opencv-python-headless \
    || echo "setup.sh: .venv-serve not built (nvidia-pytriton not installable here): tests/serve skip"
