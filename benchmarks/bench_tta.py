"""TTA cost: predict_tta time / (views x plain forward time) (goal <= 1.10).

The baseline is the plainest possible inference loop (forward + softmax per batch) measured in the
same run; each TTA is timed on the same batches. Best of --repeats runs each, so that a machine
shared with others disturbs the ratio less.
Usage: .venv/bin/python benchmarks/bench_tta.py [--model resnet18] [--size 64] [--n 256] [--batch 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from comp.infer.predict import build_tta, predict_tta


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def plain(model: torch.nn.Module, loader: list, device: torch.device, amp: str) -> None:
    for images, _ in loader:
        images = images.to(device)
        if device.type == "cuda" and amp != "off":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(images)
        else:
            logits = model(images)
        torch.softmax(logits.float(), 1).cpu()


def check_amp(model: torch.nn.Module, size: int) -> None:
    """AMP on the GPU must give the fp32 CPU probabilities (to bf16 precision), rows summing to 1."""
    g = torch.Generator().manual_seed(1)
    loader = [(torch.randn(16, 3, size, size, generator=g), None)]
    for merge in ("mean", "gmean"):
        gpu = predict_tta(model, loader, tta="d4", merge=merge, device="cuda", amp="auto")
        ref = predict_tta(model.float().cpu(), loader, tta="d4", merge=merge, device="cpu", amp="off")
        model.cuda()
        diff = abs(gpu - ref).max()
        print(f"check d4/{merge}: max |AMP cuda - fp32 cpu| = {diff:.2e}, row sums in [{gpu.sum(1).min():.6f}, {gpu.sum(1).max():.6f}]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--tta", default="hflip,flip,d4")
    ap.add_argument("--check", action="store_true", help="On CUDA: compare AMP probabilities with fp32 CPU ones first.")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = timm.create_model(args.model, pretrained=False, num_classes=18).eval().to(device)
    if args.check and device.type == "cuda":
        check_amp(model, args.size)
    images = torch.randn(args.n, 3, args.size, args.size)
    loader = [(images[i : i + args.batch], None) for i in range(0, args.n, args.batch)]
    plain(model, loader[:1], device, args.amp)  # warm-up (cuDNN autotune, allocator)
    t_plain = best_of(lambda: plain(model, loader, device, args.amp), args.repeats)
    print(f"{args.model} {args.size}px, {args.n} images, batch {args.batch}, {device}: plain {t_plain * 1000:.1f} ms")
    for name in args.tta.split(","):
        views = len(build_tta(name, size=(args.size, args.size)))
        predict_tta(model, loader[:1], tta=name, device=device, amp=args.amp)  # warm-up for new shapes
        t = best_of(lambda: predict_tta(model, loader, tta=name, device=device, amp=args.amp), args.repeats)
        print(f"  {name:10s} {views} views: {t * 1000:8.1f} ms   ratio {t / (views * t_plain):.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
