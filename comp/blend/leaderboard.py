"""Experiments and submissions side by side: CV, folds, blend scores, recorded leaderboard scores.

Never imports torch. Reads experiments/<exp>/{config.yaml,scores.json,fold*/best.pt} and
submissions/*.json; writes leaderboard.json (workspace root) and a CV-vs-LB plot into the reports
of the experiments a recorded submission blends.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from comp.core.errors import CompError, did_you_mean
from comp.report.page import add_section, img_html, report_image, save_figure, table_html
from comp.report.card import honest_figures
from comp.core.layout import Layout, read_json, write_json

log = logging.getLogger("comp.blend.leaderboard")

# honest: the honest CV estimate (scores.json's `honest`, else the CV mean); best_on_fold: the optimistic figure of
# each fold's best epoch on its own rows, only where it differs from honest; partial: folds missing
EXPERIMENT_COLUMNS = ["experiment", "model", "image", "epochs", "folds", "partial", "cv_mean", "cv_std", "honest",
                      "best_on_fold", "cv_minus_honest", "oof", "minutes"]
# oof: the blend's in-sample OOF score; nested: weights fitted without the scored fold (the honest one)
SUBMISSION_COLUMNS = ["submission", "members", "weights", "method", "members_cv", "oof", "nested", "oof_minus_nested",
                      "lb", "lb_minus_nested", "time"]


def _read(path: Path, reader: Any) -> Any:
    """A JSON/YAML artifact, or None (logged) when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return reader(path)
    except (ValueError, yaml.YAMLError, CompError) as exc:
        log.warning("could not read %s (%s); skipping it", path, exc)
        return None


def experiment_rows(ws: Layout) -> pd.DataFrame:
    """One row per trained experiment (has config.yaml): model, image size, epochs, folds done, CV."""
    from comp.core.config import read_yaml

    rows = []
    for cfg_path in sorted(ws.experiments_dir.glob("*/config.yaml")):
        exp = cfg_path.parent.name
        cfg = _read(cfg_path, read_yaml) or {}  # comp's one YAML reader (size and alias limits)
        scores = _read(ws.scores_json(exp), read_json) or {}
        k = (cfg.get("folds") or {}).get("k", "?")
        done = len({str(key).split("-seed")[0] for key in ws.model_checkpoints(exp)})  # folds with a model (any seed)
        scored = len(scores.get("folds") or {})
        figures = honest_figures(scores)
        rows.append({
            "experiment": exp,
            "model": (cfg.get("model") or {}).get("name", "?"),
            "image": str((cfg.get("image") or {}).get("size", "?")),
            "epochs": (cfg.get("train") or {}).get("epochs", "?"),
            "folds": f"{done}/{k}",
            "partial": scores.get("complete") is False or (isinstance(k, int) and max(done, scored) < k),
            "cv_mean": _num(scores.get("mean")),
            "cv_std": _num(scores.get("std")),
            "honest": _num(figures["honest"]),
            "best_on_fold": _num(figures["best_on_fold"]),
            "cv_minus_honest": _num(scores.get("mean")) - _num(figures["honest"]),
            "oof": _num(scores.get("oof")),
            "minutes": _total(scores.get("minutes")),
        })
    return pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _total(value: Any) -> float:
    """Minutes as one number, or per fold ({fold: minutes}) summed."""
    return float(sum(_num(v) for v in value.values())) if isinstance(value, dict) else _num(value)


def read_leaderboard(ws: Layout) -> dict[str, dict[str, Any]]:
    return _read(ws.leaderboard_json, read_json) or {}


def submission_rows(ws: Layout) -> pd.DataFrame:
    """One row per submission manifest: members, blend method, OOF and nested scores, recorded LB."""
    lb = read_leaderboard(ws)
    rows = []
    for path in sorted(ws.submissions_dir.glob("*.json")):
        doc = _read(path, read_json)
        if not isinstance(doc, dict) or "members" not in doc:
            continue
        name, members = path.stem, list(doc.get("members", []))
        weights = doc.get("weights") or []
        nested, score = _num(doc.get("nested")), _num((lb.get(name) or {}).get("lb"))
        rows.append({
            "submission": name,
            "members": ",".join(members),
            "weights": ",".join(f"{float(w):.3f}" for w in weights) if len(weights) == len(members) else "-",
            "method": _method(doc),
            "members_cv": ",".join(_fmt(_member_cv(ws, m)) for m in members),
            "oof": _num(doc.get("oof")),
            "nested": nested,
            "oof_minus_nested": _num(doc.get("oof")) - nested,
            "lb": score,
            "lb_minus_nested": score - nested,
            "time": doc.get("time", ""),
        })
    return pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)


def _member_cv(ws: Layout, exp: str) -> float:
    """A member's honest CV estimate (its CV mean in older scores.json), NaN when it has none."""
    return _num(honest_figures(_read(ws.scores_json(exp), read_json) or {})["honest"])


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"


def _method(doc: dict) -> str:
    """A blend's method, or stack/<stacker> for a stacked submission (its oof/nested fields are a blend's)."""
    method = str(doc.get("method", "?"))
    return f"stack/{doc.get('stacker', '?')}" if method == "stack" else method


def record_lb(ws: Layout, name: str, lb: float) -> dict[str, dict[str, Any]]:
    """Store a public-leaderboard score for submissions/<name>.csv in the workspace's leaderboard.json."""
    if not math.isfinite(lb):
        raise CompError(f"--lb must be a finite number, got {lb}")
    return record_entry(ws, name, lb=float(lb), recorded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def record_entry(ws: Layout, name: str, **fields: Any) -> dict[str, dict[str, Any]]:
    """Merge `fields` into submission `name`'s entry of leaderboard.json (by `--record` or `comp submit`)."""
    if not ws.submission_json(name).is_file():
        known = sorted(p.stem for p in ws.submissions_dir.glob("*.json"))
        raise CompError(f"no submission {name!r} (no {ws.submission_json(name)}){did_you_mean(name, known)}; "
                        f"known submissions: {', '.join(known) or 'none'}")
    board = read_leaderboard(ws)
    board[name] = {**board.get(name, {}), **fields}
    write_json(ws.leaderboard_json, board)
    return board


def report_cv_vs_lb(ws: Layout) -> list[Path]:
    """Add a 'CV vs LB' section to the report of every experiment in a submission with a recorded LB."""
    subs = submission_rows(ws)
    recorded = subs[subs["lb"].notna()]
    if recorded.empty:
        return []
    exps = sorted({m for members in recorded["members"] for m in members.split(",") if m})
    written = []
    for exp in exps:
        if not ws.exp_dir(exp).is_dir():
            continue
        path, src = report_image(ws, exp, "cv_vs_lb.png")
        save_figure(_plot(recorded), path)
        mine = recorded[recorded["members"].str.split(",").apply(lambda ms: exp in ms)]
        body = (img_html(src, "CV vs leaderboard") + table_html(display_frame(recorded.drop(columns=["time"])))
                + f"<p class='note'>{html.escape(exp)} is a member of {len(mine)} of these submissions. "
                "Points near the diagonal: CV tracks the leaderboard.</p>")
        written.append(add_section(ws, exp, "cv-vs-lb", "CV vs leaderboard", body, order=90))
    return written


def _plot(recorded: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(recorded["oof"], recorded["lb"], label="blend OOF (in-sample)", marker="o")
    if recorded["nested"].notna().any():
        ax.scatter(recorded["nested"], recorded["lb"], label="nested estimate", marker="x")
    for row in recorded.itertuples():
        ax.annotate(row.submission, (row.oof, row.lb), fontsize=7, xytext=(3, 3), textcoords="offset points")
    values = pd.concat([recorded["oof"], recorded["nested"], recorded["lb"]]).dropna()
    lo, hi = float(values.min()), float(values.max())
    pad = max(1e-3, 0.05 * (hi - lo))
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("CV score")
    ax.set_ylabel("leaderboard score")
    ax.legend(fontsize=8)
    return fig


def leaderboard_json_text(ws: Layout) -> str:
    """Both tables as JSON (for `comp leaderboard --json`)."""
    clean = lambda f: f.astype(object).where(f.notna(), None).to_dict(orient="records")  # NaN is not JSON
    doc = {"experiments": clean(experiment_rows(ws)), "submissions": clean(submission_rows(ws))}
    return json.dumps(doc, indent=2, default=str)


SORT_KEYS = ("cv", "oof", "lb", "name")
SORT_COLUMNS = {"experiments": {"cv": "honest", "oof": "oof", "lb": "honest", "name": "experiment"},
                "submissions": {"cv": "nested", "oof": "oof", "lb": "lb", "name": "submission"}}


def sort_rows(frame: pd.DataFrame, table: str, by: str = "cv", *, greater_is_better: bool = True) -> pd.DataFrame:
    """Rows of the experiments or submissions table, best score first (names A-Z); missing scores last."""
    if by not in SORT_KEYS:
        raise CompError(f"--sort must be one of {', '.join(SORT_KEYS)}, got {by!r}")
    column = SORT_COLUMNS[table][by]
    if column not in frame.columns and column == "honest":  # a table made before the honest column existed
        column = "cv_mean"
    ascending = by == "name" or not greater_is_better
    return frame.sort_values(column, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


SHOWN_NAMES = {"oof_minus_nested": "oof-nested", "lb_minus_nested": "lb-nested", "cv_minus_honest": "cv-honest",
               "members_cv": "members' CV (honest)", "best_on_fold": "best on fold"}


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Scores to 4 decimals, gaps signed, minutes as m:ss, '-' for a missing value; folds marked partial."""
    from comp.core.output import clock

    out = frame.astype(object)
    for col in frame.columns:
        if col == "minutes":
            out[col] = [clock(v * 60) if v == v else "-" for v in frame[col]]
        elif "_minus_" in col:
            out[col] = ["-" if v != v else f"{v:+.4f}" for v in frame[col]]
        elif frame[col].dtype.kind == "f":
            out[col] = ["-" if v != v else f"{v:.4f}" for v in frame[col]]
    if "partial" in frame.columns:
        out["folds"] = [f"{f} partial" if p else f for f, p in zip(frame["folds"], frame["partial"])]
        out = out.drop(columns=["partial"])
    return out.rename(columns=SHOWN_NAMES)


def direction_text(greater_is_better: bool) -> str:
    return "higher is better" if greater_is_better else "lower is better"


def submissions_page(ws: Layout, *, metric: str, greater_is_better: bool) -> Path:
    """submissions/index.html: every submission (members, weights, CV, nested, LB, gaps) and a plot of CV vs LB,
    one self-contained file (the plot embedded), best nested estimate first."""
    from comp.report.page import figure_uri, page

    subs = sort_rows(submission_rows(ws), "submissions", "cv", greater_is_better=greater_is_better)
    parts = [f"<p>{html.escape(metric)}, {direction_text(greater_is_better)}. oof: the blend's OOF score with weights "
             "fitted on the same rows (in-sample); nested: weights fitted without the scored fold (the honest "
             "estimate); lb: the public leaderboard score recorded with <code>comp leaderboard --record NAME --lb "
             "SCORE</code>. A large oof-nested gap means the weights overfit the OOF rows; lb-nested shows how far "
             "the leaderboard is from the estimate.</p>"]
    if subs.empty:
        parts.append("<p class=note>no submissions yet: comp ensemble -e NAME ... --name NAME</p>")
    else:
        parts.append(table_html(display_frame(subs)))
        recorded = subs[subs["lb"].notna()]
        if recorded.empty:
            parts.append("<p class=note>no leaderboard score recorded yet, so no CV-vs-LB plot: "
                         "comp leaderboard --record NAME --lb SCORE</p>")
        else:
            parts.append(img_html(figure_uri(_plot(recorded)), "CV vs leaderboard")
                         + "<p class=note>points near the diagonal: the CV estimate tracks the leaderboard</p>")
    from comp.core.layout import write_text

    return write_text(ws.submissions_dir / "index.html", page("comp submissions", "\n".join(parts)))


def submission_of(ws: Layout, csv: Path) -> tuple[str, dict, bool] | None:
    """(name, manifest, whether the file is the one the manifest records) for a CSV written by comp ensemble: the
    manifest beside it (<stem>.json) or submissions/<stem>.json; None when there is none."""
    import hashlib

    for path in (csv.with_suffix(".json"), ws.submissions_dir / f"{csv.stem}.json"):
        doc = _read(path, read_json)
        if isinstance(doc, dict) and "members" in doc:
            same = doc.get("sha256") == hashlib.sha256(csv.read_bytes()).hexdigest()
            return path.stem, doc, same
    return None


def record_evaluation(ws: Layout, name: str, score: float, *, solution: Path) -> dict[str, dict[str, Any]]:
    """Store a score against a known solution as submission `name`'s leaderboard score (source: comp evaluate)."""
    if not math.isfinite(score):
        raise CompError(f"the score of {name} is {score}, not a number to record; check the solution file")
    try:
        where = str(solution.resolve().relative_to(ws.root))
    except ValueError:
        where = solution.name
    return record_entry(ws, name, lb=float(score), source=f"comp evaluate --solution {where}",
                        recorded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
