"""`comp tune`: the share of a trial's time spent outside training (goal <= 5%).

Builds a workspace of small PNGs, then runs comp.tune.tune_experiment in this process with the
defaults a user gets (default search space, median pruner, num_workers auto) for --trials trials.
Inside each trial (Objective.__call__, everything Optuna calls per trial: sampling, the trial
config, building loaders and the model, each fold's fit, checkpoints, clean-up) the time spent in
fit_fold's epoch loop on training and validation (train_one_epoch + validate) is "training";
the rest is outside training. Figure of merit: 1 - training / trial time, summed over the trials
(goal <= 5%). Study start-up, the table check and the final report are outside trials and are
printed separately.

    .venv/bin/python benchmarks/bench_tune.py [--n 600] [--size 32] [--model resnet18] [--epochs 2]
        [--trials 3] [--batch 32]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def timed_into(box: dict, key: str, fn):  # noqa: ANN001, ANN201 - a wrapper adding its wall time to box[key]
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            box[key] = box.get(key, 0.0) + time.perf_counter() - start
            box[key + " cpu"] = box.get(key + " cpu", 0.0) + time.thread_time() - cpu  # this thread's CPU only

    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()

    from _workspace import write_images

    import comp.train.engine as engine
    import comp.tune.objective as objective
    from comp.core.config import load_config
    from comp.tune import tune_experiment
    from comp.core.layout import Layout

    box: dict[str, float] = {}
    engine.train_one_epoch = timed_into(box, "train", engine.train_one_epoch)
    engine.validate = timed_into(box, "validate", engine.validate)
    objective.Objective.__call__ = timed_into(box, "trial", objective.Objective.__call__)

    exp = {"model": {"name": args.model, "pretrained": False}, "image": {"size": args.size},
           "train": {"epochs": args.epochs, "batch_size": args.batch, "lr": 1e-3, "early_stopping": None}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root, n=args.n, size=64, experiment=exp)
        cfg = load_config(root, "baseline")
        start = time.perf_counter()
        result = tune_experiment(Layout(root), cfg, exp="baseline", trials=args.trials)
        total = time.perf_counter() - start
    inside = box.get("train", 0.0) + box.get("validate", 0.0)
    trial = box.get("trial", 0.0)
    print(f"tune: {args.trials} trials ({result.counts}), fold 0 of k=5, {args.n} images, {args.model} {args.size}px, "
          f"{args.epochs} epochs, batch {args.batch}")
    print(f"  trials {trial:.2f} s: train {box.get('train', 0.0):.2f} s + validate {box.get('validate', 0.0):.2f} s "
          f"= {inside:.2f} s training, {trial - inside:.2f} s outside")
    print(f"  tune_experiment {total:.2f} s in all ({total - trial:.2f} s outside trials: study, table check, cache, "
          "tuned YAML, report)")
    print(f"  share of trial time outside training: {100 * (1 - inside / trial):.1f}% (goal <= 5%)")
    # the part outside training is serial Python in the trial's thread: its CPU time is what it takes on an idle
    # machine, whatever the load while measuring (the wall-clock share above moves with the load)
    outside_cpu = box.get("trial cpu", 0.0) - box.get("train cpu", 0.0) - box.get("validate cpu", 0.0)
    print(f"  outside training, the trial thread's CPU time: {outside_cpu:.2f} s ({outside_cpu / max(args.trials, 1):.2f} s "
          "per trial; load-independent)")


if __name__ == "__main__":
    main()
