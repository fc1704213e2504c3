#!/usr/bin/env bash
# The GPU rows of the speed issue, as one short run for a lent GPU machine (device tool):
#   ResNet-56 on 50,000 CIFAR-shaped images: engine per --precision (with and without --compile)
#   against the plain eager loop, and the precision table. Output: $OUT/gpu_bench.md (or stdout).
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
export PYTHONUNBUFFERED=1
python3 bench/bench_surface.py --sections engine,precision 2>&1 | tee "${OUT:-/tmp}/gpu_bench.md"
