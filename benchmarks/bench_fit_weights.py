"""Weight fitting for 10 members x 100,000 rows x 18 classes (goal: < 5 s on this CPU).

Prints the seconds of fit_weights (hill climbing on macro-F1, mean blend), of SLSQP on log loss,
and of the full fit_blend with its nested estimate (k+1 fits), plus which member won.
Usage: .venv/bin/python benchmarks/bench_fit_weights.py [--rows 100000] [--members 10] [--classes 18]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from comp.blend.ensemble import fit_blend, fit_weights
from comp.core.metrics import get_metric


def synthetic(rows: int, members: int, classes: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    probs = []
    for m in range(members):
        z = rng.normal(0, 1, (rows, classes)).astype(np.float64)
        z[np.arange(rows), y] += 0.5 + 0.15 * m  # member m is a little better than m-1
        e = np.exp(z - z.max(1, keepdims=True))
        probs.append(e / e.sum(1, keepdims=True))
    return probs, y


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--classes", type=int, default=18)
    args = ap.parse_args()
    probs, y = synthetic(args.rows, args.members, args.classes)
    f1, ll = get_metric("macro_f1"), get_metric("log_loss")
    w, t_hill = timed(lambda: fit_weights(probs, y, f1, method="mean", search="hill", seed=0))
    print(f"hill climbing (macro_f1, mean): {t_hill:.2f} s  (goal < 5 s)  best member {int(np.argmax(w))}, weights {np.round(w, 3).tolist()}")
    w, t_slsqp = timed(lambda: fit_weights(probs, y, ll, method="mean", search="slsqp"))
    print(f"SLSQP (log_loss, mean):         {t_slsqp:.2f} s  best member {int(np.argmax(w))}")
    folds = np.arange(args.rows) % 5
    fit, t_nested = timed(lambda: fit_blend(probs, y, folds, f1, method="mean", seed=0))
    print(f"fit_blend + nested (k=5, 6 fits): {t_nested:.2f} s  oof {fit.oof:.4f}  nested {fit.nested:.4f}")


if __name__ == "__main__":
    main()
