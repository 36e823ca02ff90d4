"""Whole-process `comp fold-train` (start-up, folds, image check + cache, training, validation, checkpoints,
report) vs a hand-written in-memory timm loop on the same workspace, model, batch and epochs.

The hand-written loop (this file run with --hand) imports torch and timm, decodes every image into
one uint8 tensor, and per fold trains with batch-level augmentation (one random resized crop per
batch, per-sample flips), validates every epoch and saves the best weights: what a competitor
writes by hand. comp runs with the defaults a user gets (train.num_workers auto, augment.preset
auto, train.checkpoint_seconds 60, a cold cache: each round
starts from a workspace without .cache/, folds/ or outputs). Rounds alternate; the best of
--rounds is kept for each. Figure of merit: comp / hand (goal <= 1.05).

    .venv/bin/python benchmarks/bench_fold_train.py [--folds 1,5] [--n 600] [--size 32]
        [--model resnet18] [--epochs 2] [--batch 32] [--rounds 2]
    .venv/bin/python benchmarks/bench_fold_train.py --n 2000 --size 48 --epochs 3 --folds 1   # a longer fold
    .venv/bin/python benchmarks/bench_fold_train.py --realistic [--timm-train /path/to/timm/train.py]

--realistic is the whole-run size (issue 27): 5 folds x 10 epochs on 5,000 images, test_resnet at 32 px, one
round. --timm-train also times timm's own train.py (not shipped in the timm wheel: give a checkout's file) on
comp's fold 0 (an ImageFolder of links to the same images; same model, size, epochs, batch, lr, no workers, CPU)
against comp's mean time per fold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMP = [sys.executable, "-m", "comp"]


def hand_loop(ws: Path, *, k: int, folds: int, model_name: str, size: int, epochs: int, batch: int, lr: float) -> None:
    """The baseline: decode all images into memory, then per fold a plain timm loop with batch-level augmentation."""
    import numpy as np
    import timm
    import torch
    import torch.nn.functional as F
    from PIL import Image

    rows = [ln.split(",") for ln in (ws / "data" / "train.csv").read_text().splitlines()[1:]]
    classes = sorted({r[2] for r in rows})
    y = torch.tensor([classes.index(r[2]) for r in rows])
    big = round(size * 1.14)
    pixels = np.stack([np.asarray(Image.open(ws / "data" / "images" / r[1]).convert("RGB").resize((big, big), Image.BILINEAR))
                       for r in rows])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    fold_of = torch.arange(len(rows)) % k
    g = torch.Generator().manual_seed(0)
    for fold in range(folds):
        tr, va = torch.nonzero(fold_of != fold).squeeze(1), torch.nonzero(fold_of == fold).squeeze(1)
        torch.manual_seed(fold)
        model = timm.create_model(model_name, pretrained=False, num_classes=len(classes))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        best = -1.0
        for _ in range(epochs):
            model.train()
            order = tr[torch.randperm(len(tr), generator=g)]
            for s in range(0, len(order) - batch + 1, batch):
                idx = order[s : s + batch]
                c = int(torch.randint(int(big * 0.7), big + 1, (1,), generator=g))
                y0, x0 = (int(v) for v in torch.randint(0, big - c + 1, (2,), generator=g))
                x = images[idx, :, y0 : y0 + c, x0 : x0 + c].float()
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
                flip = torch.rand(len(idx), generator=g) < 0.5
                x[flip] = x[flip].flip(-1)
                loss = F.cross_entropy(model((x - mean) / std), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            off = (big - size) // 2
            with torch.no_grad():
                preds = torch.cat([model((images[va[s : s + 2 * batch], :, off : off + size, off : off + size].float() - mean) / std)
                                   .argmax(1) for s in range(0, len(va), 2 * batch)])
            acc = float((preds == y[va]).float().mean())
            if acc > best:
                best = acc
                torch.save(model.state_dict(), ws / f"hand_fold{fold}.pt")
        print(f"hand fold {fold}: best accuracy {best:.3f}")


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


def timm_fold(ws: Path, train_py: Path, *, model: str, size: int, epochs: int, batch: int, lr: float) -> float:
    """Seconds of timm's train.py on comp's fold 0 of k=5 (train/ and validation/ ImageFolders of links)."""
    import csv

    data = ws / "timm_data"
    shutil.rmtree(data, ignore_errors=True)
    folds = {r["id"]: r["fold"] for r in csv.DictReader(open(next((ws / "folds").glob("k5-*.csv"))))}
    for r in csv.DictReader(open(ws / "data" / "train.csv")):
        split = "validation" if folds[r["id"]] == "0" else "train"
        (data / split / r["label"]).mkdir(parents=True, exist_ok=True)
        (data / split / r["label"] / r["path"]).symlink_to(ws / "data" / "images" / r["path"])
    cmd = [sys.executable, str(train_py), "--data-dir", str(data), "--model", model, "--img-size", str(size),
           "--epochs", str(epochs), "-b", str(batch), "--lr", str(lr), "--opt", "adamw", "--weight-decay", "0.01",
           "--warmup-epochs", "1", "--device", "cpu", "-j", "0", "--no-prefetcher", "--output", str(ws / "timm_out"),
           "--num-classes", str(len({p.name for p in (data / "train").iterdir()})), "--checkpoint-hist", "1",
           "--log-interval", "1000"]
    return timed(cmd, ws)


def reset(ws: Path) -> None:
    """A first run: no cache, no folds, no outputs."""
    for name in (".cache", "folds", "experiments/baseline"):
        shutil.rmtree(ws / name, ignore_errors=True)
    for pt in ws.glob("hand_fold*.pt"):
        pt.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", default="1,5", help="fold counts to time: 1 (one fold of k=5) and/or 5 (all folds)")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hand", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--hand-folds", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--realistic", action="store_true", help="5 folds x 10 epochs, 5,000 images, test_resnet 32 px, 1 round")
    ap.add_argument("--timm-train", type=Path, default=None, help="timm's train.py, also timed on fold 0")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for comp's run, e.g. augment.backend=albumentations")
    args = ap.parse_args()
    if args.realistic:
        args.folds, args.n, args.size, args.model, args.epochs, args.batch, args.rounds = "5", 5000, 32, "test_resnet", 10, 64, 1
    lr = 1e-3
    if args.hand:
        hand_loop(args.hand, k=5, folds=args.hand_folds, model_name=args.model, size=args.size, epochs=args.epochs,
                  batch=args.batch, lr=lr)
        return
    sys.path.insert(0, str(HERE))
    from _workspace import write_images

    exp = {"model": {"name": args.model, "pretrained": False}, "image": {"size": args.size},
           "train": {"epochs": args.epochs, "batch_size": args.batch, "lr": lr, "early_stopping": None}}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        write_images(ws, n=args.n, size=64, experiment=exp)
        for n_folds in (int(f) for f in args.folds.split(",")):
            comp_cmd = COMP + ["fold-train", "--k", "5"] + (["--folds", "0"] if n_folds == 1 else [])
            for item in args.overrides:
                comp_cmd += ["--set", item]
            hand_cmd = [sys.executable, __file__, "--hand", str(ws), "--hand-folds", str(n_folds), "--model", args.model,
                        "--size", str(args.size), "--epochs", str(args.epochs), "--batch", str(args.batch)]
            t_comp, t_hand = [], []
            for _ in range(args.rounds):
                reset(ws)
                t_hand.append(timed(hand_cmd, ws))
                reset(ws)
                t_comp.append(timed(comp_cmd, ws))
                trained = json.loads((ws / "experiments" / "baseline" / "scores.json").read_text())["folds"]
                if len(trained) != n_folds:
                    raise SystemExit(f"comp fold-train trained folds {sorted(trained)}, expected {n_folds}")
            print(f"{n_folds} fold(s) of k=5, {args.n} images, {args.model} {args.size}px, {args.epochs} epochs, "
                  f"batch {args.batch}, best of {args.rounds}")
            print(f"  hand-written loop: {min(t_hand):.1f} s  (all: {', '.join(f'{t:.1f}' for t in t_hand)})")
            print(f"  comp fold-train{' ' + ' '.join(args.overrides) if args.overrides else ''}: {min(t_comp):.1f} s  (all: {', '.join(f'{t:.1f}' for t in t_comp)})")
            print(f"  ratio comp / hand ({n_folds} fold(s)): {min(t_comp) / min(t_hand):.3f} (goal <= 1.05)")
            if args.timm_train and n_folds == 5:
                t_timm = timm_fold(ws, args.timm_train, model=args.model, size=args.size, epochs=args.epochs,
                                   batch=args.batch, lr=lr)
                print(f"  timm train.py, fold 0 alone: {t_timm:.1f} s; comp per fold (5-fold run / 5): "
                      f"{min(t_comp) / 5:.1f} s; ratio comp / timm: {min(t_comp) / 5 / t_timm:.3f} (goal <= 1)")


if __name__ == "__main__":
    main()
