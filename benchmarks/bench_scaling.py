"""Growth with the data at competition size: every stage on generated 384x512 JPEGs, seconds and peak memory.

For each size N (--sizes) it writes N JPEGs of --hw (default 384x512; varied scenes, 18 classes, 7 images
per group, a few near-duplicates planted across groups and into the test set, a few corrupt files) plus
N/10 test JPEGs, then times each stage as a fresh process (start-up included):

    init      comp init --from csv (train + test, group column)
    eda       comp eda (the planted duplicates and corrupt files must be found: checked)
    folds     comp folds --k 5 (after dropping the corrupt rows, as a competitor would after the EDA)
    cache     the image check + first decoded-cache build of train and test at --px (what fold-train does first)
    epoch     comp fold-train --folds 0, one epoch of test_resnet at --px (from scratch)
    predict   comp predict --tta none, then --tta hflip

Per stage: seconds, peak RSS of the stage's process tree (sampled every 0.2 s from /proc; "anon" is the
private memory, without file pages the memory-mapped cache shares with the page cache), and for the cache
its size on disk against the bound N x (px x image.cache_scale)^2 x 3 bytes. The table gives, for each
size, the ratio of its time to the previous size's over the ratio of the sizes ("x linear"; goal <= 1.2).
Each size can be its own invocation: --results FILE keeps every size measured so far and prints them all.

    .venv/bin/python benchmarks/bench_scaling.py --sizes 1000,2000             # the make bench point (~2 min)
    .venv/bin/python benchmarks/bench_scaling.py --sizes 20000 --results /tmp/scaling.json
    .venv/bin/python benchmarks/bench_scaling.py --sizes 50000 --results /tmp/scaling.json
    .venv/bin/python benchmarks/bench_scaling.py --sizes 100000 --results /tmp/scaling.json   # ~3 GB of JPEGs
    .venv/bin/python benchmarks/bench_scaling.py --sizes 0 --hashes 1000000    # the duplicate search alone

--hashes N also times the near-duplicate search (multi-index hashing) on N random 64-bit hashes with
planted near pairs, and checks that it finds exactly what the dense search finds on the first 20k.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

N_CLASSES, PER_GROUP = 18, 7
PLANTED_GROUP, PLANTED_TEST, CORRUPT_TRAIN, CORRUPT_TEST = 8, 8, 5, 2


# ---------------------------------------------------------------- data

def scene(seed: int, label: int, hw: tuple[int, int]) -> "object":
    """One varied 'photo': a smooth random background, a class-coloured ellipse and bars, some texture."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = hw
    field = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    hue = np.array([(label * 53) % 256, (label * 97) % 256, (label * 151) % 256])
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    rx, ry = rng.uniform(0.1, 0.25) * w, rng.uniform(0.1, 0.25) * h
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(v) for v in hue))
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        draw.rectangle([x0, y0, x0 + rng.uniform(5, w / 4), y0 + rng.uniform(5, h / 4)],
                       fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(h // 8, w // 8, 1), dtype=np.int16).repeat(
        8, 0).repeat(8, 1)  # blocky texture: JPEG-friendly, still varied
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _write_one(job: tuple[str, int, int, tuple[int, int]]) -> None:
    path, seed, label, hw = job
    scene(seed, label, hw).save(path, quality=85)


def write_dataset(ws: Path, n: int, hw: tuple[int, int], *, workers: int = 2) -> dict:
    """n train + n // 10 test JPEGs, data/train.csv and data/test.csv; returns what was planted."""
    images = ws / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    n_test = max(20, n // 10)
    labels = [(i // PER_GROUP) % N_CLASSES for i in range(n)]
    jobs = [(str(images / f"i{i:06d}.jpg"), i, labels[i], hw) for i in range(n)]
    jobs += [(str(images / f"t{i:06d}.jpg"), 10_000_000 + i, i % N_CLASSES, hw) for i in range(n_test)]
    with Pool(workers) as pool:
        pool.map(_write_one, jobs, chunksize=64)
    rng = np.random.default_rng(1)
    picks = rng.choice(n - PER_GROUP, PLANTED_GROUP + PLANTED_TEST, replace=False)
    planted = {"group": [], "test": []}
    from PIL import Image

    for k, src in enumerate(picks):  # re-encoded, slightly brightened copies of a train image
        img = Image.open(images / f"i{src:06d}.jpg").convert("RGB")
        img = Image.fromarray((np.asarray(img, dtype=np.int16) + 8).clip(0, 255).astype(np.uint8))
        if k < PLANTED_GROUP:  # over another group's image of the same label: a cross-group leak
            dst = int(src) + PER_GROUP * N_CLASSES
            dst = dst if dst < n else int(src) - PER_GROUP * N_CLASSES
            img.save(images / f"i{dst:06d}.jpg", quality=75)
            planted["group"].append([f"i{src:06d}", f"i{dst:06d}"])
        else:
            t = k - PLANTED_GROUP
            img.save(images / f"t{t:06d}.jpg", quality=75)
            planted["test"].append([f"i{src:06d}", f"t{t:06d}"])
    used = [int(name[1:]) for pair in planted["group"] + planted["test"] for name in pair if name[0] == "i"]
    free = np.setdiff1d(np.arange(n), used)  # the corrupt files spoil no planted copy
    corrupt = [f"i{i:06d}" for i in rng.choice(free, CORRUPT_TRAIN, replace=False)] + [
        f"t{i:06d}" for i in range(n_test - CORRUPT_TEST, n_test)]
    for name in corrupt:
        path = images / f"{name}.jpg"
        path.write_bytes(path.read_bytes()[:300])  # truncated: the header reads, the pixels do not
    planted["corrupt"] = corrupt
    rows = ["id,path,label,person"] + [f"i{i:06d},i{i:06d}.jpg,c{labels[i]:02d},p{i // PER_GROUP:06d}" for i in range(n)]
    (ws / "data" / "train.csv").write_text("\n".join(rows) + "\n")
    (ws / "data" / "test.csv").write_text("\n".join(["id,path"] + [f"t{i:06d},t{i:06d}.jpg" for i in range(n_test)]) + "\n")
    return {**planted, "n_test": n_test}


def drop_corrupt(ws: Path, corrupt: list[str]) -> None:
    """What a competitor does after `comp eda` lists the corrupt files: drop their rows (from the tables comp.yaml names)."""
    import pandas as pd
    import yaml

    data = yaml.safe_load((ws / "comp.yaml").read_text())["data"]
    for key in ("train_csv", "test_csv"):
        path = ws / data[key]
        frame = pd.read_csv(path, dtype=str)
        frame[~frame[data.get("id_col") or "id"].isin(corrupt)].to_csv(path, index=False)


# ---------------------------------------------------------------- measuring

def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def _rss(pids: list[int]) -> tuple[int, int]:
    """(VmRSS, RssAnon) in bytes summed over pids."""
    total = anon = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                elif line.startswith("RssAnon:"):
                    anon += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total, anon


def run(args: list[str], cwd: Path) -> dict:
    """Run one stage; its seconds and the peak RSS (total and anonymous) of its process tree."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            total, anon = _rss(_tree(proc.pid))
            peak[0], peak[1] = max(peak[0], total), max(peak[1], anon)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{output[-4000:]}")
    return {"s": seconds, "rss": peak[0], "anon": peak[1]}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def stages() -> dict[str, list[str]]:
    comp = [sys.executable, "-m", "comp"]
    cache = ("from comp.core.config import load_config; from comp.core.layout import Layout; "
             "from comp.data.checked import load_checked_tables; "
             "load_checked_tables(load_config('.', 'scale'), Layout.at('.'))")
    return {
        "init": comp + ["init", "--from", "csv", "--train", "data/train.csv", "--test", "data/test.csv",
                        "--label-col", "label", "--group-col", "person", "--force"],
        "eda": comp + ["eda"],
        "folds": comp + ["folds", "--k", "5"],
        "cache": [sys.executable, "-c", cache],
        "epoch": comp + ["fold-train", "-e", "scale", "--folds", "0"],
        "predict": comp + ["predict", "-e", "scale", "--tta", "none"],
        "predict_tta": comp + ["predict", "-e", "scale", "--tta", "hflip"],
    }


def measure(n: int, hw: tuple[int, int], *, px: int, batch: int, root: Path, keep: bool) -> dict:
    """Every stage at size n: seconds and peak RSS; cache bytes; what eda found of the planted files."""
    import yaml

    ws = root / f"scale-{n}"
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    try:
        start = time.perf_counter()
        planted = write_dataset(ws, n, hw)
        out: dict = {"n": n, "n_test": planted["n_test"], "hw": list(hw), "px": px, "generate_s": time.perf_counter() - start,
                     "jpeg_bytes": du(ws / "data" / "images"), "stages": {}}
        for stage, argv in stages().items():
            if stage == "folds":
                drop_corrupt(ws, planted["corrupt"])
                (ws / "experiments" / "scale.yaml").write_text(yaml.safe_dump({
                    "model": {"name": "test_resnet", "pretrained": False}, "image": {"size": px},
                    "train": {"epochs": 1, "batch_size": batch}}))
            out["stages"][stage] = run(argv, ws)
            if stage == "eda":
                out["eda_found"] = eda_found(ws, planted)
        out["cache_bytes"] = du(ws / ".cache" / "images")
        from comp.core.config import load_config
        from comp.data.cache import cache_hw

        scale_cfg = load_config(ws, "scale")
        h, w = cache_hw(scale_cfg.image, scale_cfg.augment)
        out["cache_bound_bytes"] = (n - CORRUPT_TRAIN + planted["n_test"] - CORRUPT_TEST) * h * w * 3
        out["cache_hw"] = [h, w]
        return out
    finally:
        if not keep:
            shutil.rmtree(ws, ignore_errors=True)


def eda_found(ws: Path, planted: dict) -> dict:
    """How many of the planted cross-group and train/test copies and corrupt files `comp eda` reported."""
    import pandas as pd

    pairs = pd.read_csv(ws / "eda" / "duplicates.csv", dtype=str)
    found = set(zip(pairs["id_a"], pairs["id_b"])) | set(zip(pairs["id_b"], pairs["id_a"]))
    problems = pd.read_csv(ws / "eda" / "problems.csv", dtype=str)
    corrupt = set(problems.loc[problems["problem"] == "corrupt", "id"])
    return {"group": sum(tuple(p) in found for p in planted["group"]), "test": sum(tuple(p) in found for p in planted["test"]),
            "corrupt": len(corrupt & set(planted["corrupt"])), "pairs": len(pairs),
            "planted": [len(planted["group"]), len(planted["test"]), len(planted["corrupt"])]}


# ---------------------------------------------------------------- hashes

def time_hashes(n: int) -> dict:
    """Multi-index hashing on n random hashes (with planted near pairs) and the dense search on the first 20k."""
    from comp.eda.duplicates import dense_hamming_pairs, mih_hamming_pairs

    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, size=n, dtype=np.uint64) ^ (rng.integers(0, 2, size=n, dtype=np.uint64) << np.uint64(63))
    src, dst = rng.choice(n, 2 * (n // 1000), replace=False).reshape(2, -1)
    flips = np.array([sum(1 << int(b) for b in rng.choice(64, int(rng.integers(0, 7)), replace=False)) for _ in src],
                     dtype=np.uint64)
    h[dst] = h[src] ^ flips  # one pair within 6 bits per 1000 hashes
    src, dst = rng.choice(min(n, 20_000), 40, replace=False).reshape(2, -1)
    h[dst] = h[src] ^ flips[: len(src)]  # and 20 within the first 20k, where the dense search checks the pairs
    start = time.perf_counter()
    i, _, _ = mih_hamming_pairs(h, threshold=6)
    mih = time.perf_counter() - start
    sub = h[:20_000]
    start = time.perf_counter()
    dense = dense_hamming_pairs(sub, threshold=6)
    dense_s = time.perf_counter() - start
    indexed = mih_hamming_pairs(sub, threshold=6)
    same = all(np.array_equal(a, b) for a, b in zip(dense, indexed))
    return {"n": n, "mih_s": mih, "pairs": int(len(i)), "dense_20k_s": dense_s,
            "dense_scaled_s": dense_s * (n / 20_000) ** 2, "same_as_dense_20k": bool(same), "pairs_20k": int(len(dense[0]))}


# ---------------------------------------------------------------- table

def print_table(results: list[dict]) -> None:
    results = sorted(results, key=lambda r: r["n"])
    print(f"{'stage':<12}" + "".join(f"{r['n']:>8d} imgs: s / x linear / RSS (anon) MiB " for r in results))
    for stage in results[0]["stages"]:
        cells = []
        for k, r in enumerate(results):
            st = r["stages"][stage]
            ratio = ""
            if k:
                prev = results[k - 1]
                ratio = f"{(st['s'] / prev['stages'][stage]['s']) / (r['n'] / prev['n']):.2f}"
            cells.append(f"{st['s']:9.1f} {ratio:>6} {st['rss'] / 2**20:7.0f} ({st['anon'] / 2**20:5.0f})          ")
        print(f"{stage:<12}" + "".join(cells))
    for r in results:
        f = r.get("eda_found", {})
        print(f"{r['n']} train + {r['n_test']} test JPEGs {r['hw'][0]}x{r['hw'][1]} ({r['jpeg_bytes'] / 2**30:.2f} GiB, "
              f"written in {r['generate_s']:.0f} s); cache {r['cache_hw'][0]}x{r['cache_hw'][1]}: "
              f"{r['cache_bytes'] / 2**20:.0f} MiB on disk (bound N x H' x W' x 3 = {r['cache_bound_bytes'] / 2**20:.0f} MiB); "
              f"eda found {f.get('group')}/{f['planted'][0]} cross-group and {f.get('test')}/{f['planted'][1]} train/test "
              f"copies, {f.get('corrupt')}/{f['planted'][2]} corrupt files, {f.get('pairs')} pairs in all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000", help="training images per size, comma-separated (0: none)")
    ap.add_argument("--hw", default="384x512", help="image height x width")
    ap.add_argument("--px", type=int, default=64, help="image.size the cache and the epoch use")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--root", default="/tmp/comp-bench-scaling", help="where the workspaces are written (deleted after)")
    ap.add_argument("--results", default=None, help="JSON file that keeps every size measured (one size per invocation)")
    ap.add_argument("--keep", action="store_true", help="keep the generated workspaces")
    ap.add_argument("--hashes", type=int, default=0, help="also time the duplicate search on this many hashes")
    args = ap.parse_args()
    hw = tuple(int(v) for v in args.hw.split("x"))
    sizes = [int(s) for s in args.sizes.split(",") if int(s) > 0]
    results = json.loads(Path(args.results).read_text()) if args.results and Path(args.results).is_file() else []
    for n in sizes:
        r = measure(n, hw, px=args.px, batch=args.batch, root=Path(args.root), keep=args.keep)
        results = [old for old in results if old["n"] != n] + [r]
        if args.results:
            Path(args.results).write_text(json.dumps(results, indent=1))
    if results:
        print_table(results)
    if args.hashes:
        t = time_hashes(args.hashes)
        print(f"near-duplicate search, {t['n']:,} hashes, threshold 6: multi-index hashing {t['mih_s']:.1f} s "
              f"({t['pairs']} pairs); dense search on 20k {t['dense_20k_s']:.2f} s (~{t['dense_scaled_s']:.0f} s at "
              f"{t['n']:,} by N^2); same pairs as the dense search on 20k: {t['same_as_dense_20k']} ({t['pairs_20k']} pairs)")


if __name__ == "__main__":
    main()
