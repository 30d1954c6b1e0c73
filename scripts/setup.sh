#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv, PyTorch (the CPU build where no NVIDIA GPU is
# present, so that no multi-GB CUDA build is downloaded), then cdtsde with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        .venv/bin/python -m pip install -q torch
    else
        # On this project's machines torch==2.13.0 resolves to a local CPU wheel. Elsewhere, a CPU-only
        # machine should point TORCH_INDEX_URL at PyTorch's CPU wheel index.
        .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
    fi
fi
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch, cdtsde; print('cdtsde', cdtsde.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
