"""GPU training speed: comp's training step (AMP + channels_last) vs plain loops, resnet50 at 224.

Needs a CUDA GPU. Three loops over the same preloaded GPU batches:
  plain fp32      model NCHW, full precision (what a first script does)
  plain amp+cl    a hand-written loop with autocast (bf16 where supported) and channels_last
  comp            comp.train.engine.train_one_epoch with the parts comp builds (amp=auto, channels_last)
Prints images/s of each, the speed-up of comp over plain fp32, and comp's overhead against the
hand-written AMP loop (goal <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
import torch.nn.functional as F

from comp.core.config import build_config
from comp.train.engine import FitState, train_one_epoch
from comp.train.parts import build_parts
from comp.core.progress import SILENT


def batches(n: int, batch_size: int, size: int, n_classes: int, device: torch.device) -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch_size, 3, size, size, generator=g).to(device),
             torch.randint(0, n_classes, (batch_size,), generator=g).to(device)) for _ in range(n)]


def timed(fn, data: list, warmup: list) -> float:
    fn(warmup)
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn(data)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def plain_loop(model, optimizer, amp_dtype, channels_last):
    def run(data):
        model.train()
        for images, target in data:
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark needs one")
        return 0
    torch.backends.cudnn.benchmark = True
    device, n_classes = torch.device("cuda"), 18
    cfg = build_config({"model": {"name": args.model, "pretrained": False},
                        "train": {"batch_size": args.batch_size, "amp": "auto", "channels_last": True,
                                  "device": "cuda", "warmup_epochs": 0, "epochs": 1}})
    data = batches(args.steps, args.batch_size, args.size, n_classes, device)
    warm = data[:5]
    n_images = args.steps * args.batch_size
    results = {}
    counts = np.full(n_classes, 10)
    for name, amp, cl in (("plain fp32", None, False), ("plain amp+cl", "auto", True)):
        torch.manual_seed(0)
        parts = build_parts(cfg.model, cfg.train, cfg.augment, counts, args.steps, seed=0)
        model = parts.model if cl else parts.model.to(memory_format=torch.contiguous_format)
        dtype = parts.amp_dtype if amp else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        results[name] = n_images / timed(plain_loop(model, optimizer, dtype, cl), data, warm)
        del parts, model, optimizer
        torch.cuda.empty_cache()
    torch.manual_seed(0)
    parts = build_parts(cfg.model, cfg.train, cfg.augment, counts, args.steps + 5, seed=0)
    state = FitState()
    step = lambda d: train_one_epoch(parts, d, state, grad_accum=cfg.train.grad_accum, clip_grad=cfg.train.clip_grad,
                                     epoch=0, progress=SILENT, label="bench")
    results["comp"] = n_images / timed(step, data, warm)
    print(f"{torch.cuda.get_device_name()}  {args.model} @ {args.size}px, batch {args.batch_size}, "
          f"amp dtype {parts.amp_dtype}")
    for name, ips in results.items():
        print(f"  {name:<14} {ips:8.0f} img/s")
    print(f"speed-up of comp (amp+channels_last) over plain fp32: {results['comp'] / results['plain fp32']:.2f}x")
    overhead = results["plain amp+cl"] / results["comp"]
    print(f"comp time / hand-written amp+cl loop time: {overhead:.3f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
