#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine from the repo root (goal: under 8 minutes on one GPU). Wheels for
# packages its image lacks travel in .whl/ (see benchmarks/README.md). Prints, each step under its own limit so
# one stuck step cannot eat the others' time:
#   doctor; bench_gpu_amp (comp's step vs plain loops); bench_gpu_feed: (a) the card's train img/s on synthetic
#   tensors already on the GPU, (b) whole `comp fold-train` img/s on real JPEGs from the decoded cache,
#   (b)/(a) (goal >= 0.95), (c) `comp predict --tta hflip` img/s. Everything it prints is also under $OUT.
set -uo pipefail
started=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)" \
    | tee -a "$out/gpu.txt"
timeout 60 python3 -m comp doctor 2>&1 | tee "$out/doctor.txt"
timeout 90 python3 benchmarks/bench_gpu_amp.py --model resnet50 --size 224 --batch-size 128 --steps 30 2>&1 \
    | tee "$out/gpu_amp.txt"
# 40k training JPEGs of 384x512 (+4k test), 3 epochs of resnet50 at 224 px: ~32k images per epoch, several
# seconds per epoch at the card's ~4,000 img/s, so the steady epochs are long enough to time.
timeout 330 python3 benchmarks/bench_gpu_feed.py --n 40000 --epochs 3 --batch-size 128 2>&1 | tee "$out/gpu_feed.txt"
echo "gpu_check: $(( $(date +%s) - started )) s (goal < 480 s)" | tee -a "$out/gpu_feed.txt"
