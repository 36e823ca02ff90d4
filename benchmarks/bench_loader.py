"""Loader throughput: naive PIL + torchvision decoding every epoch vs comp's warm memory-mapped cache.

Writes N photo-like 384x512 (w x h) JPEGs to a temporary folder and measures training images/s
of one worker (default --workers 0: loading in the main process, so the number is per worker)
at a 224 px input:
  (a) naive: PIL open + RGB convert + torchvision Resize(224) + flip + ToTensor + Normalize, every epoch;
  (b) comp: prepare_images (built once, timed separately) + comp.train.loaders.train_loader, light preset.
Both are measured in the same run, alternating, best of --rounds each; the ratio (b)/(a) is the
figure of merit (goal >= 8x).

It also prints comp's images/s per worker and the DataLoader workers a GPU needs to be fed at
--target images/s (default 4200: resnet50 224 px AMP on an H200, measured by bench_gpu_amp.py):
ceil(target / per-worker rate). On a CPU-only box that is an estimate from the CPU's per-worker
rate; the GPU figure itself is measured only with --device cuda on a GPU machine. comp's loaders
pin memory when train.device is a GPU and the engine copies batches with non_blocking=True.

    .venv/bin/python benchmarks/bench_loader.py [--n 300] [--epochs 1] [--batch 32] [--workers 0] [--device cpu]
        [--target 4200]

--workers N gives both loaders N worker processes; --device cuda also copies each batch to the GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from comp.core.config import Config  # noqa: E402
from comp.data.cache import prepare_images  # noqa: E402
from comp.data.batch_augment import RawImages  # noqa: E402
from comp.data.dataset import set_epoch  # noqa: E402
from comp.train.loaders import train_loader  # noqa: E402
from comp.core.layout import Layout  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_jpegs(folder: Path, n: int, *, width: int = 384, height: int = 512, seed: int = 0) -> list[str]:
    """Photo-like JPEGs: smooth colour gradients, a few blobs, mild noise (not pure noise, which JPEG hates)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        base = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * (xx[..., None] / width) \
            + rng.uniform(-60, 60, 3) * (yy[..., None] / height)
        cy, cx, r = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width, rng.uniform(40, 120)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
        img = np.where(blob, rng.uniform(0, 255, 3), base) + rng.normal(0, 6, (height, width, 3))
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


class NaiveDataset(Dataset):
    """The common baseline: decode and resize every image every epoch."""

    def __init__(self, paths: list[str], labels: np.ndarray) -> None:
        self.paths, self.labels = paths, labels
        self.transform = T.Compose([T.Resize((224, 224)), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), int(self.labels[i])


def images_per_second(loader: DataLoader, epochs: int, device: str = "cpu", min_seconds: float = 0.0) -> float:
    """Whole epochs (at least `epochs`, more until `min_seconds` have passed), images per second."""
    n, epoch, start = 0, 0, time.perf_counter()
    while epoch < epochs or time.perf_counter() - start < min_seconds:
        set_epoch(loader, epoch)
        for x, _ in loader:
            # augment.backend torch: uint8 images travel and their geometry is rendered on the device
            x = x.render(device) if isinstance(x, RawImages) else x.to(device, non_blocking=True)
            n += len(x)
        epoch += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def best_of(rounds: int, loaders: dict[str, DataLoader], epochs: int, device: str) -> dict[str, float]:
    """Alternate the loaders `rounds` times and keep each one's best rate (a shared machine only ever slows one down)."""
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(rounds):
        for name, loader in loaders.items():
            best[name] = max(best[name], images_per_second(loader, epochs, device, min_seconds=2.0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="auto", choices=("auto", "torch", "albumentations"),
                    help="comp's augment.backend (auto: torch for the light preset)")
    ap.add_argument("--target", type=float, default=4200.0, help="images/s a GPU consumes (default: resnet50 224 px "
                    "AMP on an H200)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one worker's worth of CPU for both sides
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "img").mkdir()
        paths = write_jpegs(root / "img", args.n)
        labels = np.arange(args.n) % 4
        pin = args.device.startswith("cuda")
        workers = {"num_workers": args.workers, "persistent_workers": args.workers > 0}
        naive = DataLoader(NaiveDataset(paths, labels), batch_size=args.batch, shuffle=True, drop_last=True,
                           generator=torch.Generator().manual_seed(0), pin_memory=pin, **workers)
        if args.workers:
            images_per_second(naive, 1, args.device)  # worker start-up is not decoding

        cfg = Config.model_validate({"model": {"name": "resnet18", "pretrained": False}, "image": {"size": 224},
                                     "augment": {"preset": "light", "backend": args.backend},
                                     "train": {"batch_size": args.batch, "num_workers": args.workers,
                                               "device": args.device}})
        ws = Layout.at(root / "ws")
        start = time.perf_counter()
        store = prepare_images(pd.DataFrame({"path": paths}), cfg.image, cfg.augment, ws)
        build_s = time.perf_counter() - start
        loader = train_loader(cfg, store, np.arange(args.n), labels, seed=0)
        images_per_second(loader, 1, args.device)  # warm-up: page cache, lazy imports, worker start-up
        rates = best_of(args.rounds, {"naive": naive, "comp": loader}, args.epochs, args.device)
        naive_ips, comp_ips = rates["naive"], rates["comp"]
    who = f"{args.workers} workers" if args.workers else "1 worker (main process)"
    print(f"images: {args.n} JPEG 384x512 -> 224x224, batch {args.batch}, {who}, to {args.device}; "
          f"best of {args.rounds} alternating rounds of >= {args.epochs} epochs and >= 2 s each")
    print(f"(a) naive PIL + torchvision, decode every epoch : {naive_ips:8.1f} images/s")
    print(f"(b) comp cache (warm) + light preset ({args.backend:>5})    : {comp_ips:8.1f} images/s")
    print(f"    one-off cache build ({store.hw[0]}x{store.hw[1]})            : {build_s:8.2f} s "
          f"({args.n / build_s:.0f} images/s, threads)")
    print(f"ratio (b)/(a): {comp_ips / naive_ips:.1f}x  (goal >= 8x)")
    per_worker = comp_ips / max(args.workers, 1)
    measured = "measured" if args.device.startswith("cuda") else "estimated from this CPU; the GPU figure is not measured"
    print(f"comp images/s per worker: {per_worker:.1f}; workers needed for {args.target:.0f} images/s: "
          f"{math.ceil(args.target / per_worker)} ({measured}; assumes workers scale linearly, one core each)")


if __name__ == "__main__":
    main()
