"""The learning-rate finder against a small lr grid: finder suggestion / best grid lr (goal: within a factor of 3).

On the demo digits (comp.init.demo, 32 px), for each model trained from scratch: train fold 0 for
--epochs epochs at each lr of the grid (the demo experiment's optimizer, schedule, augmentation and
loader), take the lr with the best validation metric (ties: lower validation loss), run the range
test (comp.train.lrfind) on the same fold, and print suggestion / best for every rule. A ratio in
[1/3, 3] meets the goal.

    .venv/bin/python benchmarks/bench_lr_find.py [--models test_resnet,resnet10t] [--grid 1e-4,3e-4,1e-3,3e-3,1e-2]
        [--epochs 6] [--photos 2] [--steps 200] [--batch 16] [--augment none] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="test_resnet,resnet10t")
    ap.add_argument("--grid", default="1e-4,3e-4,1e-3,3e-3,1e-2,3e-2")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--photos", type=int, default=2, help="photos per demo subject (2: ~500 training images)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--augment", default="none", help="augment.preset of the grid and the finder alike")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    import numpy as np

    from comp.core.config import load_config
    from comp.data.checked import load_checked_tables
    from comp.init.demo import build_demo
    from comp.train.engine import FoldJob, fit_fold
    from comp.data.folds import ensure_folds
    from comp.train.lrfind import RULES, lr_range_test
    from comp.core.layout import Layout

    grid = [float(v) for v in args.grid.split(",")]
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = build_demo(Path(tmp) / "demo", photos=args.photos)
        ws = Layout.at(data.root)
        print(f"demo digits: {data.n_train} training images, 32 px, fold 0 of 5; grid {grid}, {args.epochs} epochs")
        worst = 1.0
        for name in args.models.split(","):
            base = [f"model.name={name}", f"train.epochs={args.epochs}", f"train.batch_size={args.batch}",
                    "train.num_workers=0", f"augment.preset={args.augment}"]
            cfg = load_config(ws.root, "baseline", base)
            tables = load_checked_tables(cfg, ws)
            fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
            rows = []
            start = time.perf_counter()
            for lr in grid:
                run = load_config(ws.root, "baseline", [*base, f"train.lr={lr}"])
                res = fit_fold(FoldJob(run, tables, fold_of, 0, Path(tmp) / f"{name}-{lr}", ws=ws, resumable=False))
                rows.append((lr, res.score, res.val_loss))
                print(f"  {name} lr {lr:.0e}: {cfg.metric} {res.score:.4f}, val loss {res.val_loss:.4f}")
            grid_s = time.perf_counter() - start
            best = max(rows, key=lambda r: (r[1], -r[2]))[0]
            start = time.perf_counter()
            found = lr_range_test(cfg, tables, fold_of, 0, ws=ws, steps=args.steps)
            find_s = time.perf_counter() - start
            print(f"{name}: best grid lr {best:.0e} (grid {grid_s:.0f} s); finder {found.steps} steps "
                  f"({found.stopped}, {find_s:.0f} s)")
            for rule in RULES:
                ratio = found.suggestions[rule] / best
                if rule == found.rule:
                    worst = max(worst, ratio, 1 / ratio)
                met = "met" if 1 / 3 <= ratio <= 3 else "missed"
                print(f"  rule {rule:9s}: suggestion {found.suggestions[rule]:.2e}, finder/best = {ratio:.2f} "
                      f"(goal within a factor of 3: {met}){'  <- default rule' if rule == found.rule else ''}")
        print(f"worst factor of the default rule: {worst:.2f} (goal <= 3: {'met' if worst <= 3 else 'missed'}); "
              f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
