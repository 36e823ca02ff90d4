"""Start-up: `comp --help` and every verb's `--help`, each a fresh process, against a bare `python -c pass`.

Best of --reps per command. Goal: each < 0.5 s (the ratio printed is the command / bare Python start).
The test suite checks separately (tests/test_startup.py) that help and comp folds / leaderboard /
evaluate never import torch.

    .venv/bin/python benchmarks/bench_startup.py [--reps 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

VERBS = ("init", "doctor", "eda", "folds", "fold-train", "tune", "predict", "ensemble", "leaderboard", "evaluate",
         "export", "submit", "demo")


def best(cmd: list[str], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    bare = best([sys.executable, "-c", "pass"], args.reps)
    print(f"bare python start: {bare:.3f} s (best of {args.reps})")
    worst = 0.0
    for verb in ("", *VERBS):
        cmd = [sys.executable, "-m", "comp", *([verb] if verb else []), "--help"]
        t = best(cmd, args.reps)
        worst = max(worst, t)
        print(f"  comp {verb + ' ' if verb else ''}--help: {t:.3f} s  ({t / bare:.1f}x bare python)")
    print(f"slowest help: {worst:.3f} s (goal < 0.5 s): {'ok' if worst < 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
