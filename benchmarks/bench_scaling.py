"""Growth with the data: `comp init`, `comp eda`, `comp folds`, the first cache build and one epoch at several sizes.

For each size N (--sizes, default 2000,10000) it writes N small PNGs, then times each stage as a
fresh process (start-up included) and prints seconds and microseconds per image. Figure of merit
per stage: (time per image at the largest N) / (time per image at the smallest N); linear growth
is <= ~1 (fixed start-up costs make it fall below 1), quadratic growth would be ~N_max/N_min.
Also times the near-duplicate search (multi-index hashing) on --hashes random 64-bit hashes
against the dense search on a 20k sample, extrapolated quadratically.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 2000,10000] [--hashes 200000]
    .venv/bin/python benchmarks/bench_scaling.py --sizes 2000,10000,50000     # the 50k point (~10 min)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = ("from comp.config import load_config; from comp.workspace import Workspace; "
         "from comp.data.checked import load_checked_tables; "
         "load_checked_tables(load_config('.'), Workspace.at('.'))")
STAGES = {
    "init": ["init", "--from", "csv", "--train", "data/train.csv", "--label-col", "label", "--force"],
    "eda": ["eda"],
    "folds": ["folds", "--k", "5"],
    "cache": None,  # check + first cache build of train and test (what the first fold-train does first)
    "epoch": ["fold-train", "--folds", "0", "--set", "train.epochs=1", "--set", "model.name=test_resnet",
              "--set", "model.pretrained=false", "--set", "image.size=32", "--set", "train.batch_size=64"],
}


def run(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def time_stages(n: int) -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    from _workspace import write_images

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        write_images(ws, n=n, size=32)
        (ws / "comp.yaml").unlink()
        out = {}
        for stage, argv in STAGES.items():
            cmd = [sys.executable, "-c", CACHE] if argv is None else [sys.executable, "-m", "comp", *argv]
            out[stage] = run(cmd, ws)
        return out


def time_hashes(n: int) -> tuple[float, float]:
    """(MIH seconds on n hashes, dense seconds on 20k hashes scaled by (n / 20k)^2)."""
    import numpy as np

    from comp.eda.duplicates import dense_hamming_pairs, mih_hamming_pairs

    h = np.random.default_rng(0).integers(0, 2**63, size=n, dtype=np.uint64)
    start = time.perf_counter()
    mih_hamming_pairs(h, threshold=6)
    mih = time.perf_counter() - start
    start = time.perf_counter()
    dense_hamming_pairs(h[:20_000], threshold=6)
    return mih, (time.perf_counter() - start) * (n / 20_000) ** 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,10000")
    ap.add_argument("--hashes", type=int, default=200_000)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {n: time_stages(n) for n in sizes}
    print("stage     " + "".join(f"{n:>10d} imgs     " for n in sizes) + "growth per image (goal <= ~1: linear)")
    for stage in STAGES:
        cells = "".join(f"{results[n][stage]:8.1f} s {1e6 * results[n][stage] / n:6.0f}us" for n in sizes)
        lo, hi = sizes[0], sizes[-1]
        growth = (results[hi][stage] / hi) / (results[lo][stage] / lo)
        print(f"{stage:<9} {cells}   {growth:.2f}")
    mih, dense = time_hashes(args.hashes)
    print(f"near-duplicate search, {args.hashes} hashes, threshold 6: multi-index hashing {mih:.1f} s; "
          f"dense search ~{dense:.0f} s (20k measured, scaled by N^2); ratio {mih / dense:.3f}")


if __name__ == "__main__":
    main()
