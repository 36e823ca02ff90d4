"""Matplotlib figures of the EDA report; each function returns a Figure (the caller saves it)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from comp.data.cache import BBOX, crop_box, fraction_boxes, frame_boxes  # noqa: E402
from comp.data.images import read_rgb  # noqa: E402

MAX_GRID_CLASSES = 40  # sample grids show at most this many classes (rows)
CELL = 1.3  # inches per sample image
SETS = (("train", "tab:blue"), ("test", "tab:orange"))


def plot_classes(counts: dict[str, int]) -> plt.Figure:
    """Horizontal bars: images per class, largest share annotated."""
    names, values = list(counts), np.array(list(counts.values()))
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.28 * len(names) + 1)))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    total = max(int(values.sum()), 1)
    for k, v in enumerate(values):
        ax.text(v, k, f" {v} ({v / total:.1%})", va="center", fontsize=7)
    ax.set_xlabel("training images")
    ax.set_title("class distribution")
    return fig


def plot_groups(train: pd.DataFrame) -> plt.Figure:
    """Histograms of images per group and distinct labels per group."""
    per_group = train.groupby("group")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for ax, values, what in ((axes[0], per_group.size(), "images per group"),
                             (axes[1], per_group["label"].nunique(), "labels per group")):
        bins = np.arange(values.min() - 0.5, values.max() + 1.5) if values.max() - values.min() < 50 else 30
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_xlabel(what)
        ax.set_ylabel("groups")
    return fig


def _sets(train: pd.DataFrame, test: pd.DataFrame | None) -> list[tuple[str, str, pd.DataFrame]]:
    frames = {"train": train, "test": test}
    return [(name, colour, frames[name][frames[name]["ok"]]) for name, colour in SETS if frames[name] is not None]


def plot_images(train: pd.DataFrame, test: pd.DataFrame | None) -> plt.Figure:
    """Train vs test: width x height, aspect ratio, file size."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for name, colour, ok in _sets(train, test):
        axes[0].scatter(ok["width"], ok["height"], s=8, alpha=0.4, color=colour, label=name)
        axes[1].hist(ok["aspect"].dropna(), bins=30, alpha=0.5, color=colour, label=name, density=True)
        axes[2].hist(ok["bytes"] / 1024, bins=30, alpha=0.5, color=colour, label=name, density=True)
    for ax, xlabel in zip(axes, ("width (px)", "aspect ratio (w/h)", "file size (KiB)")):
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("height (px)")
    return fig


def plot_colour(train: pd.DataFrame, test: pd.DataFrame | None, *, classes: tuple[Any, ...]) -> plt.Figure:
    """Brightness per class (box plot), mean colour per class (swatches), brightness train vs test."""
    ok = train[train["ok"]]
    fig, axes = plt.subplots(1, 3, figsize=(14, max(3.2, 0.25 * len(classes) + 1)),
                             gridspec_kw={"width_ratios": [3, 1, 2]})
    data = [ok.loc[ok["label"] == c, "brightness"].dropna().to_numpy() for c in classes]
    axes[0].boxplot(data, orientation="horizontal", tick_labels=[str(c) for c in classes])
    axes[0].invert_yaxis()
    axes[0].set_xlabel("brightness (0-255, thumbnail luma)")
    means = np.array([[ok.loc[ok["label"] == c, k].mean() for k in "rgb"] for c in classes])  # (C, 3)
    axes[1].imshow(np.nan_to_num(means)[:, None, :] / 255.0, aspect="auto")
    axes[1].set_yticks(range(len(classes)), [str(c) for c in classes], fontsize=7)
    axes[1].set_xticks([])
    axes[1].set_title("mean colour")
    for name, colour, frame in _sets(train, test):
        axes[2].hist(frame["brightness"].dropna(), bins=30, alpha=0.5, color=colour, label=name, density=True)
    axes[2].set_xlabel("brightness")
    axes[2].legend(fontsize=8)
    return fig


def pick_samples(train: pd.DataFrame, classes: tuple[Any, ...], *, n: int, seed: int = 0) -> dict[Any, pd.DataFrame]:
    """Up to n readable rows per class (at most MAX_GRID_CLASSES classes), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    ok = train[train["ok"]]
    out = {}
    for c in classes[:MAX_GRID_CLASSES]:
        rows = ok[ok["label"] == c]
        take = np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False)) if len(rows) else []
        out[c] = rows.iloc[take]
    return out


def _cell(row: pd.Series, crop: float | None, side: int, *, fractional: bool) -> Image.Image:
    """One grid cell: the image (box drawn) or its bbox crop as the cache makes it, fitted into side x side."""
    box = row[list(BBOX)].to_numpy(dtype=np.float64) if BBOX[0] in row else None
    box = box if box is not None and np.all(np.isfinite(box)) else None
    rgb = read_rgb(row["path"])
    if crop is not None and box is not None:
        return ImageOps.contain(Image.fromarray(crop_box(rgb, box, crop, fractional=fractional)), (side, side))
    img = Image.fromarray(rgb)
    fitted = ImageOps.contain(img, (side, side))
    if box is not None:
        scale = fitted.width / img.width
        units = (img.width, img.height) * 2 if fractional else (1, 1, 1, 1)
        x0, y0, x1, y1 = (v * u * scale for v, u in zip(box, units))
        draw = ImageDraw.Draw(fitted)
        draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=4)  # dark rim: visible on any background
        draw.rectangle((x0, y0, x1, y1), outline=(255, 230, 0), width=2)
    return fitted


def sample_mosaic(samples: dict[Any, pd.DataFrame], n: int, *, crop: float | None = None, side: int = 96) -> np.ndarray:
    """(rows * (side + pad), n * (side + pad), 3) uint8: one row of n cells per class on white."""
    pad = 4
    fractional = fraction_boxes(frame_boxes(pd.concat(list(samples.values())))) if samples else False
    mosaic = np.full((len(samples) * (side + pad), n * (side + pad), 3), 255, dtype=np.uint8)
    for r, rows in enumerate(samples.values()):
        for c in range(min(n, len(rows))):
            cell = np.asarray(_cell(rows.iloc[c], crop, side, fractional=fractional).convert("RGB"))
            y, x = r * (side + pad), c * (side + pad)
            mosaic[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return mosaic


def plot_samples(samples: dict[Any, pd.DataFrame], n: int, *, crop: float | None = None) -> plt.Figure:
    """One row per class: sample images with their bbox drawn (crop=None) or the bbox crops (crop=margin)."""
    side = 96
    mosaic = sample_mosaic(samples, n, crop=crop, side=side)
    height, width = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(width / 100 + 1.0, max(1.0, height / 100)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([(r + 0.5) * (side + 4) for r in range(len(samples))], [str(c) for c in samples], fontsize=8)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def plot_folds(counts: pd.DataFrame) -> plt.Figure:
    """Heat map: fold x class image counts."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * counts.shape[1] + 2), max(2.0, 0.4 * counts.shape[0] + 1)))
    im = ax.imshow(counts.to_numpy(), cmap="Blues", aspect="auto")
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in counts.columns], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(counts.shape[0]), [f"fold {int(f)}" for f in counts.index], fontsize=8)
    if counts.size <= 400:
        peak = max(int(counts.to_numpy().max()), 1)
        for (i, j), v in np.ndenumerate(counts.to_numpy()):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > peak / 2 else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title("images per fold and class")
    return fig


def plot_pairs(pairs: pd.DataFrame, n: int = 8) -> plt.Figure:
    """The first n near-duplicate pairs side by side, captioned with kind, ids, distance, correlation and confidence."""
    shown = pairs.head(n)
    fig, axes = plt.subplots(len(shown), 2, figsize=(2 * CELL * 1.4, CELL * 1.4 * len(shown)), squeeze=False)
    for r, row in enumerate(shown.itertuples(index=False)):
        for c, (pid, path, label) in enumerate(((row.id_a, row.path_a, row.label_a), (row.id_b, row.path_b, row.label_b))):
            ax = axes[r, c]
            ax.imshow(ImageOps.contain(Image.fromarray(read_rgb(path)), (160, 160)))
            ax.axis("off")
            ax.set_title(f"{pid}" + (f" [{label}]" if label is not None and label == label else ""), fontsize=7)
        corr = getattr(row, "correlation", float("nan"))
        shown_corr = f"\nr={corr:.3f}" if corr == corr else ""  # NaN: not compared
        axes[r, 0].text(-0.05, 0.5, f"{row.kind}\nd={row.distance}{shown_corr}\n{getattr(row, 'confidence', '')}",
                        transform=axes[r, 0].transAxes,
                        ha="right", va="center", fontsize=7)
    return fig


def plot_cooccurrence(cooccurrence: dict[str, dict[str, int]]) -> plt.Figure:
    """Heat map: images holding both tags (the diagonal: images holding the tag)."""
    tags = list(cooccurrence)
    values = np.array([[cooccurrence[a][b] for b in tags] for a in tags])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(tags) + 2), max(3.0, 0.45 * len(tags) + 1)))
    im = ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(tags)), tags, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(tags)), tags, fontsize=7)
    if values.size <= 400:
        peak = max(int(values.max()), 1)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > peak / 2 else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title("tag co-occurrence (images holding both)")
    return fig


def plot_target(histogram: dict[str, list], name: str) -> plt.Figure:
    """Histogram of the regression target."""
    edges, counts = np.asarray(histogram["edges"]), np.asarray(histogram["counts"])
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white")
    ax.set_xlabel(name)
    ax.set_ylabel("training images")
    ax.set_title("target distribution")
    return fig


def plot_heads(heads: dict[str, dict]) -> plt.Figure:
    """One bar chart per multitask head: images per class of the head."""
    fig, axes = plt.subplots(1, len(heads), figsize=(3.2 * len(heads), 2.8), squeeze=False)
    for ax, (name, head) in zip(axes[0], heads.items()):
        counts = head["counts"]
        ax.bar(range(len(counts)), list(counts.values()), color="tab:blue")
        ax.set_xticks(range(len(counts)), list(counts), fontsize=7)
        ax.set_title(f"{name} ({head['column']})", fontsize=9)
    axes[0][0].set_ylabel("training images")
    return fig


def task_figures(task: dict[str, Any]) -> dict[str, Any]:
    """{figure key: a function drawing it} for the numbers particular to the task kind (stats.task_stats)."""
    kind = task["kind"]
    if kind == "multilabel" and task["cooccurrence"]:
        return {"cooccurrence": lambda: plot_cooccurrence(task["cooccurrence"])}
    if kind == "regression":
        return {"target": lambda: plot_target(task["histogram"], task["target"])}
    if kind == "multitask":
        return {"heads": lambda: plot_heads(task["heads"])}
    return {}
