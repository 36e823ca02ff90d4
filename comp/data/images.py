"""Decode any image a competition ships into RGB uint8, and check many images in parallel (cached)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from comp.core.progress import SILENT, Progress
from comp.core.layout import write_json

CHECK_CACHE_VERSION = 2  # 2: keyed on paths relative to the workspace (1: absolute paths)


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from grayscale, RGBA, palette, 16-bit or EXIF-rotated files."""
    with Image.open(path) as img:
        return to_rgb(img)


def to_rgb(img: Image.Image) -> np.ndarray:
    """An opened image as (H, W, 3) uint8 RGB (what read_rgb returns)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((arr / peak * 255.0).round().clip(0, 255).astype(np.uint8))
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def key_path(path: str, root: Path | None) -> str:
    """`path` relative to `root` when it lies under it (as posix text), else as given."""
    if root is None:
        return path
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        return path


def key_root(cache_file: Path | None) -> Path | None:
    """The workspace of a cache file (<workspace>/.cache/<name>.json): its keys are paths relative to it, so a copied
    workspace (its files' times kept) finds its entries."""
    return None if cache_file is None else Path(os.path.abspath(cache_file)).parent.parent


def _read_cache(cache_file: Path | None, version: int) -> dict[str, dict]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        doc = json.loads(cache_file.read_text())
    except ValueError:
        return {}
    return doc.get("files", {}) if isinstance(doc, dict) and doc.get("version") == version else {}


def cached_map(
    paths: list[str],
    fn: Callable[[str], dict],
    cache_file: Path | None,
    *,
    version: int,
    description: str,
    n_workers: int | None = None,
    progress: Progress = SILENT,
) -> dict[str, dict]:
    """fn(path) for every path, in threads, cached in `cache_file` by path (relative to the workspace holding the
    cache file, `key_root`), size and mtime.

    Returns path -> fn's dict + "stamp" for `paths`; a rerun only calls fn on new or changed files.
    """
    cache = _read_cache(cache_file, version)
    root = key_root(cache_file)
    keys = {p: key_path(p, root) for p in paths}
    stamps = {p: _stamp(p) for p in paths}
    todo = sorted({p for p in paths if cache.get(keys[p], {}).get("stamp") != stamps[p]})
    if todo:
        workers = n_workers or min(8, (os.cpu_count() or 2) * 2)
        with ThreadPoolExecutor(workers) as pool:
            results = pool.map(fn, todo, chunksize=16)
            for path, out in zip(todo, progress.track(results, total=len(todo), description=description)):
                cache[keys[path]] = {**out, "stamp": stamps[path]}
        if cache_file is not None:
            write_json(cache_file, {"version": version, "files": cache})
    return {p: cache[keys[p]] for p in paths}


def _inspect(path: str) -> dict:
    """One file's facts: readable?, size, mode, format, bytes."""
    info = {"path": path, "ok": False, "error": "", "width": 0, "height": 0, "mode": "", "format": "", "bytes": 0}
    try:
        info["bytes"] = os.path.getsize(path)
        with Image.open(path) as img:
            info.update(width=img.width, height=img.height, mode=img.mode, format=img.format or "")
            img.load()  # a full decode: truncated files fail here, not in epoch 3
        info["ok"] = True
    except Exception as exc:  # any decoder error means "corrupt" to the user
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def inspect_rgb(path: str) -> tuple[dict, np.ndarray]:
    """_inspect's facts and the RGB pixels from one decode; a file that does not decode raises after noting why."""
    info = {"path": path, "ok": False, "error": "", "width": 0, "height": 0, "mode": "", "format": "",
            "bytes": os.path.getsize(path)}
    with Image.open(path) as img:
        info.update(width=img.width, height=img.height, mode=img.mode, format=img.format or "")
        img.load()
        rgb = to_rgb(img)
    info["ok"] = True
    return info, rgb


def record_checks(cache_file: Path, infos: dict[str, dict]) -> None:
    """Add check_images results found elsewhere (a cache build decoding each file) to its cache file."""
    if not infos:
        return
    cache = _read_cache(cache_file, CHECK_CACHE_VERSION)
    root = key_root(cache_file)
    for path, info in infos.items():
        cache[key_path(path, root)] = {**info, "stamp": _stamp(path)}
    write_json(cache_file, {"version": CHECK_CACHE_VERSION, "files": cache})


def check_images(
    paths: list[str],
    cache_file: Path | None = None,
    *,
    n_workers: int | None = None,
    progress: Progress = SILENT,
) -> pd.DataFrame:
    """Decode every file once (in threads) and return path, ok, error, width, height, mode, format, bytes.

    Results are cached in `cache_file` keyed by path, size and mtime, so a rerun only opens
    new or changed files.
    """
    cache = cached_map(paths, _inspect, cache_file, version=CHECK_CACHE_VERSION, description="checking images",
                       n_workers=n_workers, progress=progress)
    rows = [{**{k: v for k, v in cache[p].items() if k != "stamp"}, "path": p} for p in paths]  # this copy's path
    return pd.DataFrame(rows, columns=["path", "ok", "error", "width", "height", "mode", "format", "bytes"])
