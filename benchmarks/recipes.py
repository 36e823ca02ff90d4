"""More from the same data: each recipe alone and all of them together, on the demo workspace, in one run.

Rows (every one trained on the same folds, from the same baseline settings: test_resnet, 32 px):

  plain      k-fold + TTA (hflip) + `comp ensemble` (the reference)
  seeds      train.seeds (--seeds N): each fold N times, probabilities averaged
  swa        train.swa {start: 0.5}: SWA as a best.pt candidate
  pseudo     `comp pseudo --from plain --threshold T` (hard labels), then fold-train
  distill    train.distill {teacher: plain, alpha: 0.5, temperature: 2} (self-distillation)
  lr-find    train.lr: auto                       (when comp/train/lrfind.py exists)
  tta-auto   plain predicted with --tta auto       (when comp/infer/tta_auto.py exists)
  stack      plain through --method stack          (when comp/blend/stack.py exists)
  full       seeds + swa + pseudo + distill (+ lr auto), TTA hflip, blended with plain (stack when available)
  auto       `comp ensemble --method auto` over the single-recipe experiments (never below their plain mean)

For each: OOF (the submission's blend on OOF made as its test predictions), nested (blend weights or
stacker fitted without the scored fold) and hidden (the submission against the demo's hidden solution).

    .venv/bin/python benchmarks/recipes.py                  # the default, ~15 min on 2 busy cores
    .venv/bin/python benchmarks/recipes.py --epochs 6 --k 5 --per-class 60 --keep /tmp/recipes
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="small batches: more steps for the same images")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=30, help="demo subjects per class (most frequent class)")
    parser.add_argument("--photos", type=int, default=3, help="demo photos per subject")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.8, help="pseudo-label threshold")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--keep", type=Path, default=None, help="build the workspace here and keep it")
    parser.add_argument("--only", default=None, help="rows to run, e.g. pseudo,full (plain is trained when missing)")
    parser.add_argument("--reuse", action="store_true", help="keep --keep's workspace and its trained experiments")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from comp.core.config import load_config
    from comp.data.tables import load_tables
    from comp.init.demo import build_demo
    from comp.core.errors import CompError
    from comp.core.metrics import get_metric
    from comp.api.workflows import ensemble, predict
    from comp.recipes.pseudo import make_pseudo
    from comp.blend.submission import score_submission
    from comp.recipes.inputs import experiment_recipes
    from comp.train.fold_train import fold_train
    from comp.core.layout import Layout

    root = args.keep or Path(tempfile.mkdtemp(prefix="comp-recipes-"))
    reuse = args.reuse and (root / "comp.yaml").is_file()
    if root.exists() and not reuse:
        shutil.rmtree(root)
    start = time.perf_counter()
    if reuse:  # the workspace as a previous run left it (same folds, trained experiments kept)
        import pandas as pd

        from comp.init.demo import DemoData

        demo = DemoData(root=root, n_train=len(pd.read_csv(root / "data" / "train.csv")),
                        n_test=len(pd.read_csv(root / "data" / "test.csv")), n_subjects=0,
                        solution=root / "hidden" / "solution.csv")
    else:
        demo = build_demo(root, photos=args.photos, max_per_class=args.per_class)
    ws = Layout.at(root)
    base = yaml.safe_load((root / "experiments" / "baseline.yaml").read_text())
    base["train"]["epochs"] = args.epochs
    base["train"]["batch_size"] = args.batch_size
    base["folds"] = {"k": args.k}
    seeds = [42 + i for i in range(args.seeds)]
    print(f"demo: {demo.n_train} train / {demo.n_test} test images, k={args.k}, {args.epochs} epochs of batch "
          f"{args.batch_size}, "
          f"seeds {seeds}, torch threads {args.threads}", flush=True)

    def experiment(name: str, **sections) -> None:
        doc = yaml.safe_load(yaml.safe_dump(base))
        for section, values in sections.items():
            doc[section] = {**doc.get(section, {}), **values} if isinstance(values, dict) else values
        (root / "experiments" / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def train(name: str) -> None:
        cfg = load_config(root, name)
        fold_train(cfg, ws, name, recipes=experiment_recipes(cfg, ws, name))

    cfg = load_config(root)
    classes = load_tables(cfg, ws, check_images=False).classes
    metric = get_metric(cfg.metric)
    rows = []

    def row(what: str, members: list[str], t0: float, *, method: str = "mean", note: str = "") -> None:
        _, result = ensemble(ws, members, name=what, method=method)
        hidden = score_submission(Path(result["csv"]), demo.solution, cfg.submission, classes=classes, metric=metric)
        rows.append({"recipe": what, "oof": result.get("oof"), "nested": result.get("nested"), "hidden": hidden,
                     "minutes": (time.perf_counter() - t0) / 60, "note": note})
        print(f"{what:9s} OOF {result.get('oof'):.4f}  nested {result.get('nested'):.4f}  hidden {hidden:.4f}  "
              f"({rows[-1]['minutes']:.1f} min) {note}", flush=True)

    only = None if args.only is None else set(args.only.split(","))

    def attempt(what: str, fn) -> None:
        if only is not None and what not in only and not (what == "plain" and not ws.submission_json("plain").is_file()):
            return
        t0 = time.perf_counter()
        try:
            fn(t0)
        except CompError as exc:
            rows.append({"recipe": what, "oof": None, "nested": None, "hidden": None,
                         "minutes": (time.perf_counter() - t0) / 60, "note": f"failed: {exc}"})
            print(f"{what:9s} failed: {exc}", flush=True)

    experiment("plain")
    attempt("plain", lambda t0: (train("plain"), row("plain", ["plain"], t0)))
    experiment("seeds", train={"seeds": seeds})
    attempt("seeds", lambda t0: (train("seeds"), row("seeds", ["seeds"], t0, note=f"{len(seeds)} seeds")))
    experiment("swa", train={"swa": {"start": 0.5}})
    attempt("swa", lambda t0: (train("swa"), row("swa", ["swa"], t0)))

    def pseudo(t0: float) -> None:
        ensemble(ws, ["plain"], name="plain", tta="hflip")  # current (a no-op unless --tta auto re-predicted plain)
        made = make_pseudo(ws, "plain", "pseudo", threshold=args.threshold, soft=False, base="plain", force=True)
        train("pseudo")
        row("pseudo", ["pseudo"], t0, note=f"rows kept per fold {made['rows_per_fold']} of {made['test_rows']}")

    attempt("pseudo", pseudo)
    experiment("distill", train={"distill": {"teacher": "plain", "alpha": 0.5, "temperature": 2.0}})
    attempt("distill", lambda t0: (train("distill"), row("distill", ["distill"], t0, note="teacher: plain")))
    lr_auto = available("comp.train.lrfind")
    if lr_auto:
        experiment("lrfind", train={"lr": "auto"})
        attempt("lr-find", lambda t0: (train("lrfind"), row("lr-find", ["lrfind"], t0)))
    stack = available("comp.blend.stack")
    if stack:
        attempt("stack", lambda t0: row("stack", ["plain"], t0, method="stack", note="stacker on plain's OOF"))

    def full(t0: float) -> None:
        ensemble(ws, ["plain"], name="plain", tta="hflip")
        made = make_pseudo(ws, "plain", "full", threshold=args.threshold, soft=False, base="plain", force=True)
        doc = yaml.safe_load((root / "experiments" / "full.yaml").read_text())
        doc["train"].update({"seeds": seeds, "swa": {"start": 0.5},
                             "distill": {"teacher": "plain", "alpha": 0.5, "temperature": 2.0},
                             **({"lr": "auto"} if lr_auto else {})})
        (root / "experiments" / "full.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        train("full")  # TTA hflip: --tta auto reads one checkpoint per fold, not train.seeds' fold{i}/seed{s}/
        row("full", ["plain", "full"], t0, method="stack" if stack else "mean",
            note=f"pseudo rows per fold {made['rows_per_fold']}" + (", stack" if stack else ""))

    attempt("full", full)
    trained = [m for m in ("plain", "seeds", "swa", "pseudo", "distill") if ws.scores_json(m).is_file()]
    attempt("auto", lambda t0: row("auto", trained, t0, method="auto",
                                   note=f"--method auto over {', '.join(trained)}"))
    if available("comp.infer.tta_auto"):  # last: it re-predicts plain, the pseudo and distill source
        def tta_auto(t0: float) -> None:
            chosen = predict(ws, "plain", load_config(root, "plain"), tta="auto", oof=True)
            row("tta-auto", ["plain"], t0, note=f"chose {chosen.get('tta')}")

        attempt("tta-auto", tta_auto)

    total = (time.perf_counter() - start) / 60
    print(f"\n| recipe | OOF {cfg.metric} | nested | nested gain over plain | hidden test | minutes | note |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    plain = next((r["nested"] for r in rows if r["recipe"] == "plain"), None)
    for r in rows:
        gain = None if plain is None or r["nested"] is None else r["nested"] - plain
        print(f"| {r['recipe']} | {fmt(r['oof'])} | {fmt(r['nested'])} | {'-' if gain is None else f'{gain:+.4f}'} | "
              f"{fmt(r['hidden'])} | {r['minutes']:.1f} | {r['note']} |")
    print(f"\ntotal {total:.1f} min; workspace {root}" + ("" if args.keep else " (deleted)"))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
