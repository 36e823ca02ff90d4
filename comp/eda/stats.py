"""The numbers of the EDA report: classes, groups, image facts, train vs test, colour, problems, folds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from comp.core.config import Config
from comp.data.tables import BBOX
from comp.core.layout import Layout

USUAL_MODES = ("RGB", "L")
EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
              ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
KS_FLAG = 0.25  # a KS statistic above this (and significant) flags two distributions as far apart
KS_P = 0.01


def describe(values: pd.Series | np.ndarray) -> dict[str, float] | None:
    """min, median, mean, max of the finite values (None when there are none)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    if not len(v):
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()), "max": float(v.max())}


def class_stats(train: pd.DataFrame, classes: tuple[Any, ...]) -> dict:
    """Counts and shares per class (in class order) and the imbalance ratio largest / smallest."""
    counts = train["label"].value_counts().reindex(list(classes), fill_value=0)
    n = int(counts.sum())
    largest, smallest = counts.idxmax(), counts.idxmin()
    return {
        "counts": {str(c): int(v) for c, v in counts.items()},
        "shares": {str(c): float(v / n) if n else 0.0 for c, v in counts.items()},
        "largest": str(largest), "smallest": str(smallest),
        "imbalance_ratio": float(counts.max() / counts.min()) if counts.min() > 0 else float("inf"),
    }


def group_stats(train: pd.DataFrame) -> dict | None:
    """Images per group and labels per group (None without a group column)."""
    if "group" not in train:
        return None
    per_group = train.groupby("group", sort=True)
    sizes, n_labels = per_group.size(), per_group["label"].nunique()
    return {
        "n_groups": int(len(sizes)),
        "images_per_group": describe(sizes),
        "labels_per_group": describe(n_labels),
        "n_groups_multi_label": int((n_labels > 1).sum()),
        "largest_groups": {str(g): int(v) for g, v in sizes.sort_values(ascending=False, kind="stable").head(5).items()},
    }


def _top(values: pd.Series, n: int = 10) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts().head(n).items()}


def image_stats(facts: pd.DataFrame) -> dict:
    """Sizes, aspect ratios, modes, formats and file sizes of the readable files of one set."""
    ok = facts[facts["ok"]]
    sizes = ok["width"].astype(int).astype(str) + "x" + ok["height"].astype(int).astype(str)
    top_size = sizes.value_counts()
    return {
        "n": int(len(facts)), "n_ok": int(len(ok)),
        "n_missing": int((~facts["exists"]).sum()), "n_corrupt": int((facts["exists"] & ~facts["ok"]).sum()),
        "sizes": _top(sizes), "n_distinct_sizes": int(sizes.nunique()),
        "dominant_size": str(top_size.index[0]) if len(top_size) else None,
        "dominant_size_share": float(top_size.iloc[0] / len(ok)) if len(ok) else 0.0,
        "width": describe(ok["width"]), "height": describe(ok["height"]), "aspect": describe(ok["aspect"]),
        "modes": _top(ok["mode"]), "formats": _top(ok["format"]), "bytes": describe(ok["bytes"]),
        "brightness": describe(ok["brightness"]),
    }


def _dominant(stats: dict, key: str) -> str | None:
    values = stats[key]
    return next(iter(values)) if values else None


def _far_apart(a: pd.Series, b: pd.Series) -> float | None:
    """The KS statistic when two samples clearly differ, else None."""
    a, b = a.dropna().to_numpy(dtype=float), b.dropna().to_numpy(dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    res = ks_2samp(a, b)
    return float(res.statistic) if res.statistic > KS_FLAG and res.pvalue < KS_P else None


def compare_sets(train: pd.DataFrame, test: pd.DataFrame, *, s_train: dict, s_test: dict) -> list[str]:
    """Human-readable flags where the test images differ from the training images."""
    flags = []
    for key, what in (("sizes", "size"), ("formats", "format"), ("modes", "mode")):
        a, b = _dominant(s_train, key), _dominant(s_test, key)
        if a and b and a != b:
            flags.append(f"dominant {what} differs: train {a}, test {b}")
    tr, te = train[train["ok"]], test[test["ok"]]
    checks = {
        "image area": (np.log(tr["width"] * tr["height"]), np.log(te["width"] * te["height"])),
        "aspect ratio": (tr["aspect"], te["aspect"]),
        "file size": (np.log1p(tr["bytes"]), np.log1p(te["bytes"])),
        "brightness": (tr["brightness"], te["brightness"]),
    }
    for what, (a, b) in checks.items():
        stat = _far_apart(pd.Series(a), pd.Series(b))
        if stat is not None:
            flags.append(f"{what} distributions differ between train and test (KS statistic {stat:.2f})")
    return flags


def colour_stats(train: pd.DataFrame, test: pd.DataFrame | None, *, classes: tuple[Any, ...]) -> dict:
    """Mean colour and brightness per class and per set (from thumbnails)."""
    cols = ["r", "g", "b", "brightness", "contrast"]

    def summarise(frame: pd.DataFrame) -> dict:
        ok = frame[frame["ok"]]
        out = {c: float(ok[c].mean()) if len(ok) else None for c in cols}
        out["brightness_std"] = float(ok["brightness"].std(ddof=0)) if len(ok) else None
        return out

    per_class = {str(c): summarise(train[train["label"] == c]) for c in classes}
    return {"per_class": per_class, "train": summarise(train),
            "test": summarise(test) if test is not None else None}


def _unusual(row: Any, median_w: float, median_h: float) -> list[str]:
    reasons = []
    if row.mode not in USUAL_MODES:
        reasons.append(f"mode {row.mode}")
    expected = EXTENSIONS.get(Path(row.path).suffix.lower())
    if expected and row.format and row.format != expected:
        reasons.append(f"{row.format} data in a {Path(row.path).suffix} file")
    if row.aspect > 4 or row.aspect < 0.25:
        reasons.append(f"aspect ratio {row.aspect:.2f}")
    if row.width < median_w / 4 or row.height < median_h / 4 or row.width > median_w * 4 or row.height > median_h * 4:
        reasons.append(f"size {int(row.width)}x{int(row.height)} far from the median {median_w:.0f}x{median_h:.0f}")
    if pd.notna(row.contrast) and row.contrast < 1.0:
        reasons.append("blank (uniform) image")
    box = tuple(getattr(row, k, np.nan) for k in BBOX)
    if hasattr(row, "bx0") and not _box_inside(box, row.width, row.height):
        reasons.append(f"bounding box ({', '.join(f'{v:g}' for v in box)}) empty, missing or outside the {int(row.width)}x{int(row.height)} image")
    return reasons


def _box_inside(box: tuple, width: float, height: float) -> bool:
    x0, y0, x1, y1 = box
    if not all(np.isfinite(box)):
        return False
    return 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def problem_files(facts: pd.DataFrame, name: str) -> pd.DataFrame:
    """Missing, corrupt and unusual files of one set: set, id, path, problem, detail."""
    rows = []
    ok = facts[facts["ok"]]
    median_w, median_h = (float(ok["width"].median()), float(ok["height"].median())) if len(ok) else (0.0, 0.0)
    for row in facts.itertuples(index=False):
        if not row.exists:
            rows.append((name, row.id, row.path, "missing", "file does not exist"))
        elif not row.ok:
            rows.append((name, row.id, row.path, "corrupt", row.error))
        else:
            for reason in _unusual(row, median_w, median_h):
                rows.append((name, row.id, row.path, "unusual", reason))
    return pd.DataFrame(rows, columns=["set", "id", "path", "problem", "detail"])


def read_folds_table(path: Path) -> pd.DataFrame:
    """A folds file with id, label and group read exactly as written."""
    return pd.read_csv(path, dtype={"id": str, "label": str, "group": str}, keep_default_na=False, na_values=[""])


def fold_stats(path: Path, train: pd.DataFrame, *, classes: tuple[Any, ...]) -> tuple[dict, pd.DataFrame]:
    """Per-fold class counts (fold x class frame) and groups per fold, from a folds file."""
    folds = read_folds_table(path)
    if not {"id", "fold"} <= set(folds.columns):
        return {"file": str(path), "error": "a folds file needs columns id and fold"}, pd.DataFrame()
    merged = train.merge(folds[["id", "fold"]], on="id", how="left")
    counts = pd.crosstab(merged["fold"], merged["label"]).reindex(columns=list(classes), fill_value=0)
    images = merged.drop_duplicates("id")  # a multilabel view has a row per (image, tag)
    summary = {
        "file": str(path), "k": int(folds["fold"].nunique()),
        "n_train_without_fold": int(images["fold"].isna().sum()),
        "n_fold_ids_not_in_train": int((~folds["id"].isin(train["id"])).sum()),
        "rows_per_fold": {str(int(f)): int(v) for f, v in images.groupby("fold").size().items()},
        "class_counts": {str(int(f)): {str(c): int(v) for c, v in row.items()} for f, row in counts.iterrows()},
    }
    if "group" in merged:
        per_fold = merged.dropna(subset=["fold"]).groupby("fold")["group"].nunique()
        summary["groups_per_fold"] = {str(int(f)): int(v) for f, v in per_fold.items()}
        spread = merged.dropna(subset=["fold"]).groupby("group")["fold"].nunique()
        summary["n_groups_in_several_folds"] = int((spread > 1).sum())
    return summary, counts


# ---------------------------------------------------------------- task kinds

NO_TAG = "(no tag)"


def display_view(task: Any, train: pd.DataFrame, targets: np.ndarray) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Rows and the groups the class-based numbers (counts, colour, samples, folds) are shown by, per task kind.

    multiclass and binary: the label; multitask: the combined label (or the head values); regression: equal-count
    bins of the target (named by their ranges); multilabel: one row per (image, tag) with the tag as its label
    (NO_TAG for an image without tags), so an image counts under each of its tags.
    """
    kind = getattr(task, "kind", "multiclass")
    if kind == "multiclass":
        return train, tuple(task.outputs)
    if kind == "binary":
        return train, tuple(task.labels)
    if kind == "multitask":
        from comp.data.tables import class_order

        names = tuple(task.labels) if task.combine is not None else tuple(class_order(train["label"].astype(str)))
        return train, names
    if kind == "regression":
        from comp.core.tasks import quantile_bins

        values = np.asarray(targets, dtype=np.float64).reshape(-1)
        codes = quantile_bins(values, min(5, max(1, len(values) // 10)))
        names = []
        for c in range(int(codes.max()) + 1):
            inside = values[codes == c]
            names.append(f"{inside.min():.4g} to {inside.max():.4g}" if len(inside) else f"bin {c}")
        return train.assign(label=[names[c] for c in codes]), tuple(names)
    matrix = np.asarray(targets) > 0.5
    tags = tuple(str(t) for t in task.outputs)
    rows, labels = [], []
    for i, row in enumerate(matrix):
        on = [tags[j] for j in np.flatnonzero(row)] or [NO_TAG]
        rows += [i] * len(on)
        labels += on
    shown = train.iloc[rows].reset_index(drop=True).assign(label=labels)
    return shown, tags + ((NO_TAG,) if (~matrix.any(axis=1)).any() else ())


def task_stats(task: Any, targets: np.ndarray, train: pd.DataFrame) -> dict:
    """The numbers particular to the task kind (summary.json's "task")."""
    kind = getattr(task, "kind", "multiclass")
    out: dict[str, Any] = {"kind": kind}
    if kind == "multilabel":
        matrix = (np.asarray(targets) > 0.5).astype(np.int64)
        tags = [str(t) for t in task.outputs]
        per_image = matrix.sum(axis=1)
        co = matrix.T @ matrix
        out.update({
            "tags": {t: int(v) for t, v in zip(tags, matrix.sum(axis=0))},
            "shares": {t: float(v) for t, v in zip(tags, matrix.mean(axis=0))},
            "tags_per_image": describe(per_image), "n_untagged": int((per_image == 0).sum()),
            "tag_sets": {str(k): int(v) for k, v in pd.Series(per_image).value_counts().sort_index().items()},
            "cooccurrence": {a: {b: int(co[i, j]) for j, b in enumerate(tags)} for i, a in enumerate(tags)},
        })
    elif kind == "regression":
        values = np.asarray(targets, dtype=np.float64).reshape(-1)
        counts, edges = np.histogram(values, bins=min(30, max(5, len(values) // 5)))
        out.update({"target": task.target_name, **(describe(values) or {}), "std": float(values.std()),
                    "n_distinct": int(len(np.unique(values))),
                    "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}})
    elif kind == "multitask":
        codes = np.asarray(targets).reshape(len(targets), -1)
        out["heads"] = {h.name: {"column": h.column, "counts": {str(c): int((codes[:, i] == j).sum())
                                                                 for j, c in enumerate(h.classes)}}
                        for i, h in enumerate(task.heads)}
        for head in out["heads"].values():
            counts = list(head["counts"].values())
            head["imbalance_ratio"] = float(max(counts) / min(counts)) if min(counts) > 0 else float("inf")
        out["combine"] = task.combine.expression if task.combine is not None and task.combine.expression else None
        out["combined"] = {str(k): int(v) for k, v in train["label"].astype(str).value_counts().items()}
        if task.combine is not None:
            out["combined"] = {str(c): out["combined"].get(str(c), 0) for c in task.labels}
            out["n_combined_absent"] = int(sum(v == 0 for v in out["combined"].values()))
    elif kind == "binary":
        y = np.asarray(targets, dtype=np.float64).reshape(-1) > 0.5
        out.update({"negative": str(task.labels[0]), "positive": str(task.labels[1]),
                    "n_positive": int(y.sum()), "n_negative": int((~y).sum()), "positive_rate": float(y.mean())})
    return out


def task_lines(task: dict) -> list[str]:
    """A few sentences on the numbers particular to the task kind (the report's and the console's)."""
    kind = task["kind"]
    if kind == "multilabel":
        top = sorted(task["tags"].items(), key=lambda kv: -kv[1])
        per = task["tags_per_image"] or {}
        return [f"multilabel: {len(top)} tags; tags per image mean {per.get('mean', 0):.3g} (max {per.get('max', 0):.0f}); "
                f"{task['n_untagged']} images without a tag",
                "tag counts: " + ", ".join(f"{t} {v} ({task['shares'][t]:.1%})" for t, v in top[:12])
                + (" ..." if len(top) > 12 else "")]
    if kind == "regression":
        return [f"regression on {task['target']}: min {task['min']:.4g}, median {task['median']:.4g}, mean "
                f"{task['mean']:.4g}, max {task['max']:.4g}, std {task['std']:.4g}; {task['n_distinct']} distinct values"]
    if kind == "multitask":
        lines = [f"multitask: {len(task['heads'])} heads"
                 + (f", combined by {task['combine']}" if task.get("combine") else "")]
        for name, head in task["heads"].items():
            lines.append(f"head {name} ({head['column']}): " + ", ".join(f"{c} {v}" for c, v in head["counts"].items())
                         + f"; imbalance ratio {head['imbalance_ratio']:.3g}")
        if task.get("n_combined_absent"):
            lines.append(f"{task['n_combined_absent']} combined labels have no training image")
        return lines
    if kind == "binary":
        return [f"binary: positive {task['positive']!r} on {task['n_positive']} images ({task['positive_rate']:.1%}), "
                f"negative {task['negative']!r} on {task['n_negative']}"]
    return []
