"""Out-of-the-box quality: comp with its defaults vs a plain hand-written timm loop, on real labelled images.

Each case is a comp workspace built from data already on this machine (nothing is downloaded here),
with a held-out test split whose solution only this script reads:

  digits   scikit-learn's digits photographed per subject (comp.demo_data), grouped by subject, macro-F1
  fashion  Fashion-MNIST (Debian package dataset-fashion-mnist), subsampled, stratified, accuracy
  icons    freedesktop icon themes (Tango, GNOME, MATE, nuoveXT2, Oxygen from their Debian packages):
           the icon's context (actions, apps, devices, mimetypes, places, status) from its 32 px colour
           image, grouped by icon name (one name drawn by several themes is one group), macro-F1

For each case, in one run and on the same folds (comp's folds/k3-s42.csv: 3 folds keep the suite short):
  comp     comp.Workspace: folds, fold_train, predict with the experiment's defaults; only model,
           image.size, train.epochs, train.lr and train.batch_size are set (plus --set for experiments)
  hand     in-memory uint8 tensors, per-sample flip + small affine (rotate/scale/shift) on the batch,
           AdamW + OneCycle, the last epoch's weights, soft voting over the fold models
and prints CV (mean fold score), hidden (score of the fold-mean test prediction), seconds, and the ratios
comp / hand. A case whose data is missing prints the command that installs it and is skipped.

    .venv/bin/python benchmarks/quality.py                 # every case (~25 min on 2 cores)
    .venv/bin/python benchmarks/quality.py --quick         # one tiny case (~1-2 min): the CI smoke
    .venv/bin/python benchmarks/quality.py --cases icons --systems comp --set augment.preset=none
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import pandas as pd
import yaml
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
ICON_ROOT = Path("/usr/share/icons")
ICON_THEMES = {"Tango": "32x32", "gnome": "32x32", "mate": "32x32", "nuoveXT2": "32x32", "oxygen": "base/32x32"}
ICON_PACKAGES = "tango-icon-theme gnome-icon-theme mate-icon-theme lxde-icon-theme oxygen-icon-theme"
ICON_CONTEXTS = ("actions", "apps", "devices", "mimetypes", "places", "status")
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


@dataclass
class Case:
    name: str
    model: str
    size: int
    epochs: int
    lr: float
    batch: int
    build: object  # (root, quick) -> None; raises Missing when the data is not on this machine
    k: int = 3
    train_folds: int | None = None  # the first N folds only (None: all k)


@dataclass
class Result:
    cv: float
    hidden: float
    seconds: float
    notes: dict = field(default_factory=dict)


class Missing(Exception):
    """A case's data is not installed (the message is the command that installs it)."""


# ---------------------------------------------------------------- workspaces


def write_workspace(root: Path, train: pd.DataFrame, test: pd.DataFrame, *, metric: str, group_col: str | None) -> None:
    """data/{train,test,sample_submission}.csv, hidden/solution.csv and comp.yaml (images already in data/images)."""
    (root / "hidden").mkdir(parents=True, exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    cols = ["id", "path", "label"] + ([group_col] if group_col else [])
    train[cols].to_csv(root / "data" / "train.csv", index=False)
    test = test.sample(frac=1.0, random_state=0).reset_index(drop=True)
    test[["id", "path"]].to_csv(root / "data" / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "label": test["label"]}).to_csv(root / "hidden" / "solution.csv", index=False)
    pd.DataFrame({"id": test["id"], "label": test["label"].iloc[0]}).to_csv(root / "data" / "sample_submission.csv",
                                                                           index=False)
    data = {"train_csv": "data/train.csv", "test_csv": "data/test.csv", "image_root": "data/images", "id_col": "id",
            "image_col": "path", "label_col": "label", "group_col": group_col}
    comp_yaml = {"data": data, "metric": metric, "folds": {"k": 5, "seed": 42},
                 "submission": {"id_col": "id", "target_col": "label", "kind": "label",
                                "sample_csv": "data/sample_submission.csv"}}
    (root / "comp.yaml").write_text(yaml.safe_dump(comp_yaml, sort_keys=False))


def build_digits(root: Path, quick: bool) -> None:
    """comp's demo workspace (digits photographed per subject); its solution becomes hidden/solution.csv."""
    from comp.demo_data import build_demo

    demo = build_demo(root, force=True, photos=2 if quick else 3, max_per_class=20 if quick else 60)
    solution = pd.read_csv(demo.solution, dtype=str).rename(columns={"ImageID": "id", "ans": "label"})
    solution.to_csv(root / "hidden" / "solution.csv", index=False)
    for extra in ("effnet.yaml",):
        (root / "experiments" / extra).unlink(missing_ok=True)


def read_idx(path: Path) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def build_fashion(root: Path, quick: bool) -> None:
    """A stratified subsample of Fashion-MNIST's train set (train) and of its test set (hidden test)."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        raise Missing("apt-get install -y dataset-fashion-mnist")
    rng = np.random.default_rng(0)
    (root / "data" / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for split, n_per_class in (("train", 20 if quick else 80), ("t10k", 10 if quick else 40)):
        x = read_idx(FASHION_DIR / f"{split}-images-idx3-ubyte.gz")
        y = read_idx(FASHION_DIR / f"{split}-labels-idx1-ubyte.gz")
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), n_per_class, replace=False) for c in range(10)]))
        rows = []
        for i in keep:
            rel = f"{split}_{i:05d}.png"
            Image.fromarray(x[i]).save(root / "data" / "images" / rel)
            rows.append({"id": f"{split}_{i:05d}", "path": rel, "label": FASHION_CLASSES[y[i]]})
        frames.append(pd.DataFrame(rows))
    write_workspace(root, frames[0], frames[1], metric="accuracy", group_col=None)


def icon_rows() -> pd.DataFrame:
    """One row per distinct icon file: theme, context, name (the group), file."""
    rows, seen = [], set()
    for theme, sub in ICON_THEMES.items():
        for context in ICON_CONTEXTS:
            folder = ICON_ROOT / theme / sub / context
            if not folder.is_dir():
                continue
            for png in sorted(folder.glob("*.png")):
                real = png.resolve()
                if real in seen or not real.is_file():
                    continue
                seen.add(real)
                rows.append({"theme": theme, "context": context, "name": png.stem, "file": str(real)})
    return pd.DataFrame(rows)


def build_icons(root: Path, quick: bool) -> None:
    """Icons by context, grouped by icon name; at most N per context; 20% of the names held out as the test."""
    missing = [t for t, sub in ICON_THEMES.items() if not (ICON_ROOT / t / sub).is_dir()]
    if missing:
        raise Missing(f"apt-get install -y --no-install-recommends {ICON_PACKAGES}  (missing themes: {', '.join(missing)})")
    rows = icon_rows()
    rng = np.random.default_rng(0)
    cap = 40 if quick else 170
    names = rows["name"].unique()
    test_names = set(rng.choice(names, int(0.2 * len(names)), replace=False))
    kept = []
    for _, part in rows.groupby("context"):
        part = part.sample(frac=1.0, random_state=0)
        is_test = part["name"].isin(test_names)
        kept.append(part[~is_test].head(cap))
        kept.append(part[is_test].head(max(4, cap // 4)))
    rows = pd.concat(kept).reset_index(drop=True)
    (root / "data" / "images").mkdir(parents=True, exist_ok=True)
    out = []
    for i, r in rows.iterrows():
        img = Image.open(r["file"]).convert("RGBA")
        rgb = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
        rel = f"{r['theme']}_{r['context']}_{i:05d}.png"
        rgb.resize((32, 32), Image.LANCZOS).save(root / "data" / "images" / rel)
        out.append({"id": f"icon{i:05d}", "path": rel, "label": r["context"], "name": r["name"],
                    "test": r["name"] in test_names})
    frame = pd.DataFrame(out)
    write_workspace(root, frame[~frame["test"]], frame[frame["test"]], metric="macro_f1", group_col="name")


CASES = {
    "digits": Case("digits", "test_resnet", 32, 12, 3e-3, 64, build_digits),
    "fashion": Case("fashion", "test_resnet", 32, 10, 3e-3, 64, build_fashion),
    "icons": Case("icons", "test_resnet", 32, 10, 3e-3, 64, build_icons),
}
QUICK = Case("digits", "test_resnet", 32, 4, 3e-3, 32, build_digits)


# ---------------------------------------------------------------- the two systems


def hidden_score(root: Path, ids: list[str], probs: np.ndarray, classes: list[str], metric: str) -> float:
    from comp.metrics import get_metric

    solution = pd.read_csv(root / "hidden" / "solution.csv", dtype=str).set_index("id")["label"]
    y = np.array([classes.index(v) for v in solution.loc[ids]])
    return get_metric(metric)(y, probs)


def run_comp(root: Path, case: Case, extra: list[str]) -> Result:
    """comp with its defaults: only model, image size, epochs, lr and batch set (and `extra` overrides)."""
    import comp

    exp = {"model": {"name": case.model, "pretrained": False}, "image": {"size": case.size},
           "train": {"epochs": case.epochs, "lr": case.lr, "batch_size": case.batch}}
    (root / "experiments" / "baseline.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    extra = [f"folds.k={case.k}", *extra]
    start = time.perf_counter()
    ws = comp.Workspace(root, progress=False)
    ws.folds(k=case.k)
    folds = None if case.train_folds is None else ",".join(str(f) for f in range(case.train_folds))
    scores = ws.fold_train("baseline", overrides=extra, force=True, folds=folds)
    test = ws.predict("baseline", overrides=extra)
    seconds = time.perf_counter() - start
    cfg = ws.config("baseline", extra)
    columns = [c for c in test.columns if c != "id"]  # p_<class>, in comp's class order
    classes = [c[2:] if c.startswith("p_") else c for c in columns]
    hidden = hidden_score(root, test["id"].astype(str).tolist(), test[columns].to_numpy(), classes, cfg.metric)
    plain = ws.predict("baseline", tta="none", overrides=extra)  # the same models without test-time augmentation
    notes = {"tta": cfg.tta.transforms,
             "hidden_without_tta": round(hidden_score(root, plain["id"].astype(str).tolist(), plain[columns].to_numpy(),
                                                      classes, cfg.metric), 4),
             "cv_last_epoch": round(last_epoch_cv(root), 4),
             "best_epochs": scores["best_epoch"].tolist(), "augment": augment_note(root)}
    return Result(float(scores.attrs["mean"]), hidden, seconds, notes)


def last_epoch_cv(root: Path) -> float:
    """The mean fold score of the last epoch (history.csv), beside CV of the kept (best-epoch) checkpoints."""
    rows = [pd.read_csv(h).iloc[-1]["metric"] for h in sorted((root / "experiments" / "baseline").glob("fold*/history.csv"))]
    return float(np.mean(rows)) if rows else math.nan


def augment_note(root: Path) -> str:
    """The `augment auto` decisions the folds logged (fold{i}/train.log), when the preset is auto."""
    lines = []
    for log in sorted((root / "experiments" / "baseline").glob("fold*/train.log")):
        found = [ln.split("augment auto: ", 1)[1].strip() for ln in log.read_text().splitlines() if "augment auto: " in ln]
        lines += found[-1:]
    return "; ".join(sorted(set(lines)))


def random_affine(n: int, g: "object") -> "object":
    """(n, 2, 3) affine matrices: rotate +-10 degrees, scale 0.9-1.1, shift +-6% (torch's normalised coordinates)."""
    import torch

    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.12
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def run_hand(root: Path, case: Case) -> Result:
    """A plain timm loop: in-memory tensors, flip + small affine on the batch, AdamW + OneCycle, last epoch, soft vote."""
    import timm
    import torch
    import torch.nn.functional as F

    from comp.metrics import get_metric

    start = time.perf_counter()
    cfg = yaml.safe_load((root / "comp.yaml").read_text())
    metric = get_metric(cfg["metric"])
    train = pd.read_csv(root / "data" / "train.csv", dtype=str)
    test = pd.read_csv(root / "data" / "test.csv", dtype=str)
    folds = pd.read_csv(root / "folds" / f"k{case.k}-s42.csv", dtype=str).set_index("id").loc[train["id"], "fold"]
    fold_of = torch.tensor(folds.astype(int).to_numpy())
    labels = sorted(train["label"].unique(), key=lambda v: (float(v), v) if v.replace(".", "", 1).isdigit() else (math.inf, v))
    y = torch.tensor([labels.index(v) for v in train["label"]])

    def load(paths: pd.Series) -> torch.Tensor:
        arr = np.stack([np.asarray(Image.open(root / "data" / "images" / p).convert("RGB")
                                   .resize((case.size, case.size), Image.BILINEAR)) for p in paths])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    images, test_images = load(train["path"]), load(test["path"])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255

    def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([model((x[s: s + 256].float() - mean) / std).softmax(1) for s in range(0, len(x), 256)])

    g = torch.Generator().manual_seed(0)
    scores, test_probs = [], torch.zeros(len(test), len(labels))
    n_folds = case.train_folds or case.k
    for fold in range(n_folds):
        tr, va = torch.nonzero(fold_of != fold).squeeze(1), torch.nonzero(fold_of == fold).squeeze(1)
        torch.manual_seed(fold)
        model = timm.create_model(case.model, pretrained=False, num_classes=len(labels))
        opt = torch.optim.AdamW(model.parameters(), lr=case.lr, weight_decay=0.01)
        steps = len(tr) // case.batch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=case.lr, total_steps=case.epochs * steps)
        for _ in range(case.epochs):
            model.train()
            order = tr[torch.randperm(len(tr), generator=g)]
            for s in range(steps):
                idx = order[s * case.batch: (s + 1) * case.batch]
                x = (images[idx].float() - mean) / std
                flip = torch.rand(len(idx), generator=g) < 0.5
                x[flip] = x[flip].flip(-1)
                grid = F.affine_grid(random_affine(len(idx), g), list(x.shape), align_corners=False)
                x = F.grid_sample(x, grid, align_corners=False)
                loss = F.cross_entropy(model(x), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        probs = predict(model, images[va])
        scores.append(metric(y[va].numpy(), probs.numpy()))
        test_probs += predict(model, test_images) / n_folds
    seconds = time.perf_counter() - start
    hidden = hidden_score(root, test["id"].tolist(), test_probs.numpy(), labels, cfg["metric"])
    return Result(float(np.mean(scores)), hidden, seconds)


# ---------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one tiny case (digits, test_resnet, 3 epochs): the CI smoke")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--systems", default="comp,hand", help="comp,hand (default both)")
    ap.add_argument("--epochs", type=int, help="train.epochs for every case (default: each case's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a comp override for experiments (comp only; repeatable)")
    ap.add_argument("--folds", type=int, help="train only the first N of the k folds (quick experiments; CV and "
                    "hidden then come from those folds)")
    ap.add_argument("--keep", type=Path, help="build the workspaces under this folder and keep them")
    args = ap.parse_args(argv)
    cases = [QUICK] if args.quick else []
    if not args.quick:
        unknown = [c for c in args.cases.split(",") if c not in CASES]
        if unknown:
            ap.error(f"unknown case {unknown[0]!r}; known: {', '.join(CASES)}")
        cases = [CASES[c] for c in args.cases.split(",")]
    if args.epochs:
        cases = [Case(**{**c.__dict__, "epochs": args.epochs}) for c in cases]
    if args.folds:
        cases = [Case(**{**c.__dict__, "train_folds": args.folds}) for c in cases]
    systems = args.systems.split(",")
    import torch

    print(f"torch threads {torch.get_num_threads()}; comp overrides: {args.overrides or 'none'}", flush=True)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for case in cases:
            root = base / case.name
            shutil.rmtree(root, ignore_errors=True)
            try:
                case.build(root, args.quick)
            except Missing as exc:
                print(f"{case.name}: skipped, its data is not installed; install it with: {exc}", flush=True)
                continue
            n_train = sum(1 for _ in open(root / "data" / "train.csv")) - 1
            n_test = sum(1 for _ in open(root / "data" / "test.csv")) - 1
            print(f"== {case.name}: {n_train} train / {n_test} test images, {case.model} {case.size}px, "
                  f"{case.epochs} epochs, lr {case.lr:g}, batch {case.batch}, {case.k} folds", flush=True)
            results: dict[str, Result] = {}
            if "comp" in systems or "hand" in systems:  # the hand loop trains on comp's folds
                import comp

                comp.Workspace(root, progress=False).folds(k=case.k)
            for system in systems:
                result = run_comp(root, case, args.overrides) if system == "comp" else run_hand(root, case)
                results[system] = result
                extra = "".join(f"  {k} {v}" for k, v in result.notes.items() if v not in (None, "", []))
                print(f"  {system:5s} CV {result.cv:.4f}  hidden {result.hidden:.4f}  {result.seconds:7.1f} s{extra}",
                      flush=True)
                table.append((case.name, system, result))
            if "comp" in results and "hand" in results:
                c, h = results["comp"], results["hand"]
                print(f"  comp / hand: hidden {c.hidden / max(h.hidden, 1e-9):.3f}  CV {c.cv / max(h.cv, 1e-9):.3f}  "
                      f"seconds {c.seconds / h.seconds:.3f} (goals: hidden >= 1, CV <= hidden + 0.01, seconds <= 1.10)",
                      flush=True)
    print("\n| case | system | CV | hidden | seconds |\n|---|---|---|---|---|")
    for name, system, r in table:
        print(f"| {name} | {system} | {r.cv:.4f} | {r.hidden:.4f} | {r.seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
