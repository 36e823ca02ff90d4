#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine from the repo root: wheels for packages its image
# lacks travel in .whl/ (see benchmarks/README.md). Prints doctor, the AMP + channels_last
# training-speed benchmark, and one CUDA fold of the demo through the CLI.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
python3 -m comp doctor 2>&1 | tee "$out/doctor.txt"
python3 benchmarks/bench_gpu_amp.py --model resnet50 --size 224 --batch-size 128 --steps 30 2>&1 | tee "$out/gpu_amp.txt"
python3 -m comp demo /tmp/demo --only-data > /dev/null 2>&1 || echo "demo data failed"
time python3 -m comp fold-train -w /tmp/demo --fold 0 --set train.epochs=3 --set train.num_workers=4 2>&1 | tail -15 | tee "$out/fold_train_cuda.txt"
