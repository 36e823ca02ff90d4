"""The EDA report's HTML body: one section per question, each a table and/or a PNG beside the page."""

from __future__ import annotations

import html
import os
from typing import Any

import pandas as pd

from comp.report.page import img_html, table_html
from comp.core.layout import Layout

MAX_SHOWN = 60  # rows of a long list shown in the page (the CSVs beside it hold all)


def _section(key: str, title: str, body: str) -> str:
    return f"<section id='{html.escape(key)}'><h2>{html.escape(title)}</h2>\n{body}\n</section>\n"


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _flags(flags: list[str]) -> str:
    if not flags:
        return ""
    items = "".join(f"<li>{html.escape(f)}</li>" for f in flags)
    return f"<ul style='color:#a40'>{items}</ul>"


def _img(figures: dict[str, str], key: str) -> str:
    return img_html(figures[key], alt=key) if key in figures else ""


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _relative(path: Any, ws: Layout) -> Any:
    try:
        return os.path.relpath(path, ws.root) if isinstance(path, str) else path
    except ValueError:  # another drive on Windows
        return path


def overview(s: dict) -> str:
    dup, problems = s["duplicates"], s["problems"]["counts"]
    flags = list(s["images"]["flags"])
    if dup["n_train_test"]:
        flags.append(f"{dup['n_train_test']} train/test near-duplicate pairs (leak into the leaderboard)")
    if dup["n_label_conflicts"]:
        flags.append(f"{dup['n_label_conflicts']} near-duplicate pairs with different labels (label noise)")
    if dup["n_cross_group"]:
        flags.append(f"{dup['n_cross_group']} near-duplicate pairs across groups (leak between folds)")
    if dup["n_train_same_label"]:
        flags.append(f"{dup['n_train_same_label']} near-duplicate training pairs with no group column "
                     "(they may land in different folds; consider data.group_col)")
    for kind in ("missing", "corrupt", "unusual"):
        if problems.get(kind):
            flags.append(f"{problems[kind]} {kind} file findings (see below)")
    kind = (s.get("task") or {}).get("kind", "multiclass")
    what = {"multilabel": "tags", "regression": "target bins", "multitask": "combined labels"}.get(kind, "classes")
    text = (f"{s['n_train']} training images, {s['n_test']} test images, task {kind}, "
            f"{len(s['classes']['counts'])} {what}, imbalance ratio {s['classes']['imbalance_ratio']:.3g}")
    return _section("overview", "Overview", f"<p>{html.escape(text)}</p>" + _flags(flags))


def classes_section(s: dict, figures: dict[str, str]) -> str:
    c = s["classes"]
    frame = pd.DataFrame({"class": list(c["counts"]), "images": list(c["counts"].values()),
                          "share": list(c["shares"].values())})
    text = f"largest {c['largest']}, smallest {c['smallest']}, imbalance ratio {c['imbalance_ratio']:.3g}"
    body = _note(text) + _img(figures, "classes") + table_html(frame)
    g = s["groups"]
    if g is not None:
        rows = [("groups", g["n_groups"]), ("images per group", _fmt(g["images_per_group"])),
                ("labels per group", _fmt(g["labels_per_group"])),
                ("groups with several labels", g["n_groups_multi_label"]),
                ("largest groups", _fmt(g["largest_groups"]))]
        body += "<h3>Groups</h3>" + table_html(pd.DataFrame(rows, columns=["", "value"])) + _img(figures, "groups")
    return _section("classes", "Classes and groups", body)


def task_section(s: dict, figures: dict[str, str]) -> str:
    """The numbers particular to the task kind: tags and their co-occurrence, the target, the heads, the positive rate."""
    from comp.eda.stats import task_lines

    task = s.get("task") or {"kind": "multiclass"}
    lines = task_lines(task)
    if not lines:
        return ""
    body = "".join(_note(line) for line in lines)
    for key in ("cooccurrence", "target", "heads"):
        body += _img(figures, key)
    if task["kind"] == "multitask" and task.get("combined"):
        body += "<h3>Combined labels</h3>" + table_html(pd.DataFrame({"label": list(task["combined"]),
                                                                        "images": list(task["combined"].values())}))
    titles = {"multilabel": "Tags", "regression": "Target", "multitask": "Heads", "binary": "Positive rate"}
    return _section("task", titles.get(task["kind"], "Task"), body)


def images_section(s: dict, figures: dict[str, str]) -> str:
    sets = {k: v for k, v in (("train", s["images"]["train"]), ("test", s["images"]["test"])) if v}
    keys = [("images", "n"), ("readable", "n_ok"), ("missing", "n_missing"), ("corrupt", "n_corrupt"),
            ("dominant size", "dominant_size"), ("dominant size share", "dominant_size_share"),
            ("distinct sizes", "n_distinct_sizes"), ("sizes", "sizes"), ("width", "width"), ("height", "height"),
            ("aspect ratio", "aspect"), ("modes", "modes"), ("formats", "formats"), ("file bytes", "bytes")]
    frame = pd.DataFrame({"": [k for k, _ in keys], **{name: [_fmt(st[key]) for _, key in keys]
                                                          for name, st in sets.items()}})
    body = _flags(s["images"]["flags"]) + table_html(frame) + _img(figures, "images")
    return _section("images", "Image sizes, modes, formats (train vs test)", body)


def colour_section(s: dict, figures: dict[str, str]) -> str:
    c = s["colour"]
    rows = {**{f"class {k}": v for k, v in c["per_class"].items()}, "train": c["train"]}
    if c["test"]:
        rows["test"] = c["test"]
    frame = pd.DataFrame([{"": k, **v} for k, v in rows.items()])
    body = _note("computed on thumbnails (longest side 64 px); brightness = mean luma 0-255") + \
        _img(figures, "colour") + table_html(frame, float_format="{:.1f}")
    return _section("colour", "Brightness and colour", body)


def samples_section(figures: dict[str, str]) -> str:
    body = _img(figures, "samples")
    if "crops" in figures:
        body += "<h3>Bounding-box crops (with margin)</h3>" + _img(figures, "crops")
    return _section("samples", "Samples per class", body or _note("no readable training image"))


def duplicates_section(s: dict, figures: dict[str, str], *, pairs: pd.DataFrame, ws: Layout) -> str:
    d = s["duplicates"]
    counts = {k: v for k, v in d.items() if k.startswith("n_")}
    text = (f"candidates: 64-bit dHash, Hamming distance <= {d['threshold']}; each confirmed by the pixel correlation "
            "of the pair's grayscale thumbnails (compared at half the smaller side, 8-32 px; 0.95 asked at 32 px, "
            f"more at smaller sizes): {d.get('n_unconfirmed', 0)} of {d.get('n_candidates', len(pairs))} candidates "
            "rejected as look-alikes; confidence: exact = same pixels, high / likely = correlation well above / "
            "just above the bar (see duplicates.csv). Kinds: label = different labels, group = same "
            "label in different groups, test = train/test pair, train = same label (no groups)")
    lead = [f"{d.get('n_label_conflicts', 0)} pairs with conflicting labels (fix or drop one image)",
            f"{d.get('n_cross_group', 0)} pairs across groups (they leak between folds: merge the groups)",
            f"{d.get('n_train_test', 0)} train/test pairs (the leaderboard sees these)"]
    body = "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in lead) + "</ul>" + (
        _img(figures, "duplicates") + _note(f"the first pairs above, actionable kinds first; all {len(pairs)} "
                                            "pairs are listed in duplicates.csv")
        if len(pairs) else "<p>no near-duplicate pairs found</p>") + _note(text) + table_html(pd.DataFrame([counts]))
    return _section("duplicates", "Duplicates and near-duplicates", body)


def problems_section(s: dict, problems: pd.DataFrame, *, ws: Layout) -> str:
    if not len(problems):
        return _section("problems", "Missing, corrupt or unusual files", "<p>none found</p>")
    shown = problems.head(MAX_SHOWN).assign(path=lambda f: [_relative(p, ws) for p in f["path"]])
    body = table_html(pd.DataFrame([s["problems"]["counts"]])) + table_html(shown) + \
        _note(f"{len(problems)} rows in problems.csv")
    return _section("problems", "Missing, corrupt or unusual files", body)


def folds_section(s: dict, figures: dict[str, str]) -> str:
    f = s["folds"]
    if f is None:
        return _section("folds", "Folds", _note("no folds/*.csv yet (run `comp folds`)"))
    if "error" in f:
        return _section("folds", "Folds", _note(f"{f['file']}: {f['error']}"))
    per_fold = pd.DataFrame({"fold": list(f["rows_per_fold"]), "images": list(f["rows_per_fold"].values())})
    if "groups_per_fold" in f:
        per_fold["groups"] = [f["groups_per_fold"].get(k, 0) for k in f["rows_per_fold"]]
    notes = [f"file {f['file']}"] + [f"{k.removeprefix('n_').replace('_', ' ')}: {v}" for k, v in f.items()
                                      if k.startswith("n_") and v]
    body = "".join(_note(n) for n in notes) + _img(figures, "folds") + table_html(per_fold)
    return _section("folds", "Folds", body)


def render_body(s: dict, figures: dict[str, str], *, pairs: pd.DataFrame, problems: pd.DataFrame, ws: Layout) -> str:
    """All sections of eda/report.html, in reading order."""
    return "\n".join([
        overview(s), task_section(s, figures), classes_section(s, figures), images_section(s, figures),
        colour_section(s, figures),
        samples_section(figures), duplicates_section(s, figures, pairs=pairs, ws=ws), problems_section(s, problems, ws=ws),
        folds_section(s, figures),
    ])
