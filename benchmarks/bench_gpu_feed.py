"""Is the GPU fed at its limit? resnet50 at 224 px, AMP, channels_last: the card alone vs whole comp runs on JPEGs.

Needs a CUDA GPU (run by benchmarks/gpu_check.sh on a lent machine). Prints images/s of:
  (a) the card's limit: a hand-written AMP + channels_last training loop over synthetic batches already on the GPU
  (b) whole `comp fold-train --folds 0` on generated 384x512 JPEGs through comp's decoded cache (steady epochs:
      the first, with cuDNN's autotuning, is left out; an epoch's seconds include validating its fold)
  (c) `comp predict --tta hflip` of the test JPEGs with the fold's model: views x images / second
and the ratio (b) / (a) (goal >= 0.95). Where the ratio falls short, the loader's own rate (comp's loader, no
model, the same workers) says whether decode/augmentation on the CPU is the limit.

    python3 benchmarks/bench_gpu_feed.py [--n 40000] [--epochs 3] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def card_limit(model: str, size: int, batch: int, steps: int = 40) -> float:
    """(a): images/s of the plain AMP + channels_last loop on batches already on the GPU (bench_gpu_amp's loop)."""
    import numpy as np
    import torch
    from bench_gpu_amp import batches, plain_loop, timed

    from comp.core.config import build_config
    from comp.train.parts import build_parts

    torch.backends.cudnn.benchmark = True
    cfg = build_config({"model": {"name": model, "pretrained": False},
                        "train": {"batch_size": batch, "amp": "auto", "channels_last": True, "device": "cuda",
                                  "warmup_epochs": 0, "epochs": 1}})
    data = batches(steps, batch, size, 18, torch.device("cuda"))
    parts = build_parts(cfg.model, cfg.train, cfg.augment, np.full(18, 10), steps, seed=0)
    optimizer = torch.optim.AdamW(parts.model.parameters(), lr=1e-4)
    ips = steps * batch / timed(plain_loop(parts.model, optimizer, parts.amp_dtype, True), data, data[:5])
    del parts, optimizer, data
    torch.cuda.empty_cache()
    return ips


def comp_cli(args: list[str], ws: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "comp", *args], cwd=ws, capture_output=True, text=True)
    print(done.stdout[-1500:], done.stderr[-1500:] if done.returncode else "", sep="")
    if done.returncode:
        raise SystemExit(f"comp {' '.join(args)} failed")
    return time.perf_counter() - start


def loader_rate(ws: Path, backend: str, seconds: float = 20.0) -> float:
    """comp's training loader alone (cache, augmentation, the workers fold-train picks): images/s, no model. With
    augment.backend torch the loader only gathers uint8 images and draws each sample's matrix (the pixels move on
    the GPU, which this leaves out); with albumentations it augments every image on the CPU."""
    import numpy as np

    from comp.core.config import load_config
    from comp.data.cache import prepare_images
    from comp.data.tables import load_tables
    from comp.train.loaders import train_loader
    from comp.core.layout import Layout

    wsp = Layout.at(ws)
    cfg = load_config(ws, "gpu", (f"augment.backend={backend}",))
    tables = load_tables(cfg, wsp, check_images=False)
    store = prepare_images(tables.train, cfg.image, cfg.augment, wsp)
    loader = train_loader(cfg, store, np.arange(len(store)), np.zeros(len(store), dtype=int), seed=0)
    n, start = 0, None
    for k, (x, _) in enumerate(loader):
        if k == 3:
            start, n = time.perf_counter(), 0
        n += len(x)
        if start and time.perf_counter() - start > seconds:
            break
    return n / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40_000, help="training JPEGs (plus n/10 test)")
    ap.add_argument("--hw", default="384x512")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--root", default="/tmp/comp-gpu-feed")
    ap.add_argument("--augment", default="light", help="augment.preset of the fold-train run")
    ap.add_argument("--backend", default="auto", choices=("auto", "torch", "albumentations"),
                    help="augment.backend: torch renders each batch's geometry on the GPU from uint8 images; "
                         "albumentations augments every image on the CPU workers")
    ap.add_argument("--smoke", action="store_true", help="CPU check of the script's own steps: no (a), train.device cpu")
    args = ap.parse_args()
    import torch
    import yaml

    if not torch.cuda.is_available() and not args.smoke:
        print("no CUDA GPU: this benchmark needs one")
        return 0
    a = float("nan") if args.smoke else card_limit(args.model, args.size, args.batch_size)
    name = "cpu (smoke)" if args.smoke else torch.cuda.get_device_name()
    print(f"(a) card limit, {name} {args.model} {args.size}px batch {args.batch_size} "
          f"AMP + channels_last, synthetic batches on the GPU: {a:.0f} img/s", flush=True)
    from bench_scaling import drop_corrupt, write_dataset

    ws = Path(args.root)
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    start = time.perf_counter()
    planted = write_dataset(ws, args.n, tuple(int(v) for v in args.hw.split("x")), workers=os.cpu_count() or 2)
    print(f"wrote {args.n} + {planted['n_test']} JPEGs in {time.perf_counter() - start:.0f} s", flush=True)
    comp_cli(["init", "--from", "csv", "--train", "data/train.csv", "--test", "data/test.csv", "--label-col", "label",
              "--group-col", "person", "--force"], ws)
    drop_corrupt(ws, planted["corrupt"])
    (ws / "experiments" / "gpu.yaml").write_text(yaml.safe_dump({
        "model": {"name": args.model, "pretrained": False}, "image": {"size": args.size},
        "augment": {"preset": args.augment, "backend": args.backend},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "amp": "auto", "channels_last": True,
                  "device": "cpu" if args.smoke else "cuda", "early_stopping": args.epochs + 1}}))
    comp_cli(["folds", "--k", "5"], ws)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from comp.core.config import load_config; from comp.core.layout import Layout; "
                    "from comp.data.checked import load_checked_tables; "
                    "load_checked_tables(load_config('.', 'gpu'), Layout.at('.'))"], cwd=ws, check=True)
    cache_s = time.perf_counter() - start
    print(f"decoded cache of train + test built in {cache_s:.0f} s", flush=True)
    wall = comp_cli(["fold-train", "-e", "gpu", "--folds", "0"], ws)
    import pandas as pd

    history = pd.read_csv(ws / "experiments" / "gpu" / "fold0" / "history.csv")
    folds = pd.read_csv(next((ws / "folds").glob("k5-*.csv")))
    n_train = int((folds["fold"] != 0).sum())
    steady = history["seconds"].iloc[1:] if len(history) > 1 else history["seconds"]
    b = n_train / float(steady.mean())
    print(f"(b) comp fold-train on JPEGs via the cache (augment.backend {args.backend}): {b:.0f} img/s per steady epoch ({n_train} training images, "
          f"epochs {', '.join(f'{s:.1f}' for s in history['seconds'])} s, validation included); whole process "
          f"{wall:.0f} s = {n_train * args.epochs / wall:.0f} img/s of training", flush=True)
    print(f"(b)/(a) = {b / a:.3f} (goal >= 0.95)", flush=True)
    views = 2
    wall_c = comp_cli(["predict", "-e", "gpu", "--tta", "hflip"], ws)
    n_test = planted["n_test"] - len([c for c in planted["corrupt"] if c.startswith("t")])
    print(f"(c) comp predict --tta hflip: {n_test} test images x {views} views in {wall_c:.1f} s "
          f"(whole process) = {n_test * views / wall_c:.0f} view-img/s", flush=True)
    if not b / a >= 0.95:  # also in a smoke run (a is NaN): the loader's path is exercised
        for backend in ("torch", "albumentations"):
            print(f"comp's training loader alone (no model), augment.backend {backend}: "
                  f"{loader_rate(ws, backend):.0f} img/s", flush=True)
    shutil.rmtree(ws, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
