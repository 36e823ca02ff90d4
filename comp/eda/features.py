"""Per-file facts for EDA: existence, header facts (cached by check_images), thumbnail colour and hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from comp.data.images import cached_map, check_images, read_rgb
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout

FEATURE_CACHE_VERSION = 2  # 2: keyed on paths relative to the workspace (comp.data.images.cached_map)
THUMB = 64  # longest side of the thumbnail that colour statistics are computed on
FEATURES = ("r", "g", "b", "brightness", "contrast", "dhash", "sha")


def dhash(gray: Image.Image) -> int:
    """64-bit difference hash: is each pixel of a 9x8 grayscale thumbnail brighter than its right neighbour."""
    small = np.asarray(gray.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)  # (8, 9)
    bits = (small[:, 1:] > small[:, :-1]).ravel()  # (64,)
    return int(np.packbits(bits).view(">u8")[0])


def thumb_features(path: str) -> dict:
    """Mean colour, brightness and contrast of a thumbnail, the dHash and an exact pixel hash of one file."""
    rgb = read_rgb(path)  # (H, W, 3) uint8
    sha = hashlib.blake2b(rgb.tobytes() + str(rgb.shape).encode(), digest_size=12).hexdigest()
    img = Image.fromarray(rgb)
    thumb = img.copy()
    thumb.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    px = np.asarray(thumb, dtype=np.float64).reshape(-1, 3)  # (h*w, 3)
    luma = px @ np.array([0.299, 0.587, 0.114])
    r, g, b = px.mean(axis=0)
    return {"r": float(r), "g": float(g), "b": float(b), "brightness": float(luma.mean()),
            "contrast": float(luma.std()), "dhash": f"{dhash(img):016x}", "sha": sha}


def _safe_features(path: str) -> dict:
    try:
        return thumb_features(path)
    except Exception:  # check_images already records the decoder error; here the row stays empty
        return {}


def compute_features(
    paths: list[str],
    cache_file: Path | None = None,
    *,
    n_workers: int | None = None,
    progress: Progress = SILENT,
) -> pd.DataFrame:
    """Thumbnail features of readable files, decoded in threads and cached by path, size and mtime.

    Returns one row per path (path + FEATURES); files that cannot be decoded have NaN / "" features.
    """
    cache = cached_map(paths, _safe_features, cache_file, version=FEATURE_CACHE_VERSION, description="thumbnails",
                       n_workers=n_workers, progress=progress)
    rows = [{"path": p, **{k: cache[p].get(k) for k in FEATURES}} for p in paths]
    frame = pd.DataFrame(rows, columns=["path", *FEATURES])
    frame["dhash"] = frame["dhash"].fillna("")
    frame["sha"] = frame["sha"].fillna("")
    return frame


def file_facts(frame: pd.DataFrame, ws: Layout, *, progress: Progress = SILENT) -> pd.DataFrame:
    """Rows of `frame` (id, path, ...) joined with exists, check_images facts and thumbnail features."""
    paths = frame["path"].tolist()
    exists = np.array([Path(p).is_file() for p in paths], dtype=bool)
    present = [p for p, e in zip(paths, exists) if e]
    info = check_images(present, ws.image_check_json, progress=progress)
    readable = info.loc[info["ok"].astype(bool), "path"].tolist()
    feats = compute_features(readable, ws.eda_features_json, progress=progress)
    out = frame.reset_index(drop=True).copy()
    out["exists"] = exists
    info = info.drop_duplicates("path").set_index("path")
    feats = feats.drop_duplicates("path").set_index("path")
    for col in ("ok", "error", "width", "height", "mode", "format", "bytes"):
        out[col] = out["path"].map(info[col]) if len(info) else np.nan
    out["ok"] = out["ok"].fillna(False).astype(bool)
    out["error"] = np.where(out["exists"], out["error"].fillna(""), "file does not exist")
    for col in FEATURES:
        out[col] = out["path"].map(feats[col]) if len(feats) else np.nan
    out["dhash"] = out["dhash"].fillna("")
    out["sha"] = out["sha"].fillna("")
    out["aspect"] = out["width"] / out["height"].where(out["height"] > 0)
    return out
