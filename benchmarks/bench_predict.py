"""`comp predict` with k fold models and V TTA views, whole process, vs a plain script doing k x V forwards.

Trains k tiny folds first (not timed), then alternates: (a) `comp predict --tta NAME` in a fresh
process; (b) a plain script in a fresh process: import torch and timm, load the k state dicts,
decode the test images into one tensor, and run k x V plain forwards (views = flips of the batch).
Best of --rounds each. Figure of merit: comp / plain (goal <= 1.10). Before issue 16, predict read
and augmented the test images once per fold model; now once per batch for all of them.

    .venv/bin/python benchmarks/bench_predict.py [--n-test 2000] [--model resnet18] [--size 64] [--tta hflip]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VIEWS = {"none": 1, "hflip": 2, "flip": 4}


def plain(ws: Path, *, model_name: str, size: int, views: int, batch: int) -> None:
    """The baseline: k models, test images decoded once into memory, k x V forwards in batches."""
    import numpy as np
    import timm
    import torch
    from PIL import Image

    rows = [ln.split(",") for ln in (ws / "data" / "test.csv").read_text().splitlines()[1:]]
    x = np.stack([np.asarray(Image.open(ws / "data" / "images" / r[1]).convert("RGB").resize((size, size))) for r in rows])
    images = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.45) / 0.225
    probs = []
    for ckpt in sorted((ws / "experiments" / "baseline").glob("fold*/best.pt")):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
        model = timm.create_model(model_name, pretrained=False, num_classes=4)
        model.load_state_dict(state)
        model.eval()
        with torch.inference_mode():
            out = []
            for s in range(0, len(images), batch):
                b = images[s : s + batch]
                views_of = [b, b.flip(-1), b.flip(-2), b.flip(-1).flip(-2)][:views]
                out.append(sum(torch.softmax(model(v), 1) for v in views_of) / views)
            probs.append(torch.cat(out))
    print(f"plain: {len(probs)} models, {len(images)} images, mean prob {float(torch.stack(probs).mean()):.3f}")


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--tta", default="hflip", choices=sorted(VIEWS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--plain", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    batch = 64  # comp's eval batch: 2 x train.batch_size
    if args.plain:
        plain(args.plain, model_name=args.model, size=args.size, views=VIEWS[args.tta], batch=batch)
        return
    sys.path.insert(0, str(HERE))
    from _workspace import write_images

    exp = {"model": {"name": args.model, "pretrained": False}, "image": {"size": args.size},
           "augment": {"preset": "none"}, "train": {"epochs": 1, "batch_size": batch // 2, "early_stopping": None}}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        write_images(ws, n=args.n_train, n_test=args.n_test, size=args.size, experiment=exp)
        timed([sys.executable, "-m", "comp", "fold-train", "--k", str(args.k)], ws)
        comp_cmd = [sys.executable, "-m", "comp", "predict", "--tta", args.tta]
        plain_cmd = [sys.executable, __file__, "--plain", str(ws), "--model", args.model, "--size", str(args.size),
                     "--tta", args.tta]
        t_comp, t_plain = [], []
        for _ in range(args.rounds):
            t_plain.append(timed(plain_cmd, ws))
            t_comp.append(timed(comp_cmd, ws))
    print(f"{args.k} folds x {VIEWS[args.tta]} views ({args.tta}), {args.n_test} test images, {args.model} "
          f"{args.size}px, best of {args.rounds}")
    print(f"  plain k x V forwards (whole process): {min(t_plain):.1f} s  (all: {', '.join(f'{t:.1f}' for t in t_plain)})")
    print(f"  comp predict (whole process):         {min(t_comp):.1f} s  (all: {', '.join(f'{t:.1f}' for t in t_comp)})")
    print(f"  ratio comp / plain: {min(t_comp) / min(t_plain):.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
