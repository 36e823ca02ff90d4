"""Training-loop overhead: comp's epoch (loader, AMP/EMA plumbing, progress, NaN checks) vs a plain loop.

Both loops train the same architecture on the same batches. The plain loop gets them as
tensors already in memory (forward, cross-entropy, backward, AdamW step: nothing else); comp's
loop is `comp.train.engine.train_one_epoch` fed by comp's loader over a warm decoded-image cache with
augment.preset=none (resize + normalise only). Epochs alternate between the two loops and the
best of --reps is kept for each, in the same run. Figure of merit: comp / plain (goal <= 1.10).

    .venv/bin/python benchmarks/bench_train_loop.py [--model test_resnet] [--size 64] [--n 512]
        [--batch 32] [--reps 3] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from comp.core.config import load_config  # noqa: E402
from comp.data.tables import load_tables  # noqa: E402
from comp.train.engine import FitState, build_loaders, train_one_epoch  # noqa: E402
from comp.model.factory import build_model  # noqa: E402
from comp.train.parts import build_parts  # noqa: E402
from comp.core.progress import SILENT  # noqa: E402
from comp.core.layout import Layout  # noqa: E402


def write_workspace(root: Path, *, n: int, size: int, n_classes: int = 4, seed: int = 0) -> None:
    """n PNGs (size x size, learnable colour classes), train.csv and comp.yaml."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        label = i % n_classes
        img = np.full((size, size, 3), 60 * label + 20, np.float64) + rng.normal(0, 25, (size, size, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"id": f"i{i}", "path": f"{i}.png", "label": f"c{label}"})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    comp = {"data": {"train_csv": "train.csv", "test_csv": None, "image_root": "images"}, "metric": "accuracy"}
    (root / "comp.yaml").write_text(yaml.safe_dump(comp))


def plain_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list, device: torch.device) -> float:
    """The baseline: preloaded tensors, forward, cross-entropy, backward, step."""
    model.train()
    start = time.perf_counter()
    for images, target in batches:
        loss = F.cross_entropy(model(images), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def comp_epoch(parts, loader, cfg, state: FitState, epoch: int) -> float:
    from comp.data.dataset import set_epoch

    start = time.perf_counter()
    set_epoch(loader, epoch)
    train_one_epoch(parts, loader, state, grad_accum=cfg.train.grad_accum, clip_grad=cfg.train.clip_grad,
                    epoch=epoch, progress=SILENT, label="bench")
    if parts.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="test_resnet")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_workspace(root, n=args.n, size=args.size)
        overrides = [f"model.name={args.model}", "model.pretrained=false", f"image.size={args.size}",
                     "augment.preset=none", f"train.batch_size={args.batch}", "train.num_workers=0",
                     f"train.device={args.device}", f"train.amp='{args.amp}'", "train.scheduler=none",
                     "train.warmup_epochs=0", "train.weight_decay=0", "train.epochs=100"]
        cfg = load_config(root, "baseline", overrides)
        ws = Layout.at(root)
        tables = load_tables(cfg, ws)
        idx = np.arange(len(tables.train))
        loader, _ = build_loaders(cfg, tables, idx, idx[:8], ws=ws, seed=0, progress=SILENT)  # warms the cache
        counts = np.bincount(tables.train["y"], minlength=tables.n_classes)
        torch.manual_seed(0)
        parts = build_parts(cfg.model, cfg.train, cfg.augment, counts, len(loader), seed=0)
        state = FitState()
        device = parts.device
        batches = [(x.to(device), y.to(device)) for x, y in loader]  # the same batches, preloaded
        torch.manual_seed(0)
        plain = build_model(cfg.model, tables.n_classes).to(device)
        opt = torch.optim.AdamW(plain.parameters(), lr=cfg.train.lr, weight_decay=0.0)
        plain_epoch(plain, opt, batches, device)  # warm-up of both loops
        comp_epoch(parts, loader, cfg, state, 0)
        t_plain, t_comp = [], []
        for rep in range(args.reps):
            t_plain.append(plain_epoch(plain, opt, batches, device))
            t_comp.append(comp_epoch(parts, loader, cfg, state, rep + 1))
    n_img = len(batches) * args.batch
    best_plain, best_comp = min(t_plain), min(t_comp)
    print(f"model {args.model} at {args.size}px, {len(batches)} batches of {args.batch}, device {device}, "
          f"torch threads {torch.get_num_threads()}, best of {args.reps}")
    print(f"plain loop on preloaded tensors: {best_plain:.3f} s/epoch ({n_img / best_plain:.0f} img/s)  all: "
          + ", ".join(f"{t:.3f}" for t in t_plain))
    print(f"comp train_one_epoch + loader:   {best_comp:.3f} s/epoch ({n_img / best_comp:.0f} img/s)  all: "
          + ", ".join(f"{t:.3f}" for t in t_comp))
    print(f"ratio comp / plain: {best_comp / best_plain:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
