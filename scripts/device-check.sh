#!/usr/bin/env bash
# The checks that need a GPU, as one short run for a lent device machine (about 15 minutes in all):
# the roofline with every speed lever (issue 17), the CUDA tests, and one GPU-scale suite cell (issue 16:
# 256 px, bf16, the paper's UNet, scored on the GPU). Prepare on the CPU machine first (only the repository
# travels; the data and the nibabel wheel go in an ignored folder named in `carry`):
#   mkdir -p .device-data/sar-optical/wheels
#   cp -r ../shared/data/sar-optical/volkov-s1s2 .device-data/sar-optical/
#   .venv/bin/pip download nibabel --no-deps -d .device-data/wheels
# then run `bash scripts/device-check.sh` there with carry [".device-data"]; results land under $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
python -m pip install -q --no-deps .device-data/wheels/nibabel-*.whl
export PYTHONPATH="$PWD/src:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python -m benchmarks.roofline --repeats 5 --levers --output "$OUT/roofline-gpu.json"
python -m pytest -q tests/test_cuda.py tests/test_mutual_information.py -k "cuda" 2>&1 | tail -15 | tee "$OUT/cuda-tests.txt" || echo "some CUDA tests failed (above)"
python -m benchmarks.suite --scale gpu --tasks sar-optical --methods cdtsde-linear identity --max-steps 400 \
    --data-root .device-data --output "$OUT/suite-gpu"
