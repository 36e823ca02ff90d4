"""The summary card at the top of an experiment's report: what a competitor reads first.

Drawn from the experiment's artifacts each time report.html is rendered (scores.json, config.yaml,
predict.json, submissions/*.json, leaderboard.json), so it always matches the files beside it.
Files from older versions lack some keys: the honest estimate then falls back to the CV mean.
"""

from __future__ import annotations

import html
import math
from typing import Any

from comp.core.layout import Layout, read_json_record


def fmt(value: Any, digits: int = 4) -> str:
    """A score to `digits` decimals; '-' for a missing or non-finite one."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{number:.{digits}f}" if math.isfinite(number) else "-"


def honest_figures(scores: dict) -> dict[str, Any]:
    """{honest, honest_oof, source, best_on_fold}: the honest CV estimate and how it was made.

    scores.json from before epoch selection was recorded has none of these keys: honest is then the CV mean (source
    None), and best_on_fold is None. best_on_fold is None too when it equals the honest figure.
    """
    honest = scores.get("honest", scores.get("mean"))
    best = ((scores.get("selection") or {}).get("best_on_fold") or {}).get("mean")
    if best is not None and honest is not None and abs(float(best) - float(honest)) < 1e-12:
        best = None
    return {"honest": honest, "honest_oof": scores.get("honest_oof", scores.get("oof")),
            "source": scores.get("honest_source"), "best_on_fold": best}


HONEST_SOURCE = {"kept": "the kept checkpoints' CV: their epoch was chosen on nothing",
                 "nested": "each fold's epoch chosen on the other folds (nested)"}


def direction(scores: dict) -> str:
    better = scores.get("greater_is_better")
    return "" if better is None else ("higher is better" if better else "lower is better")


def _tile(label: str, value: str, sub: str = "") -> str:
    return (f"<div class='tile'><div class='label'>{html.escape(label)}</div>"
            f"<div class='value'>{html.escape(value)}</div>"
            + (f"<div class='sub'>{html.escape(sub)}</div>" if sub else "") + "</div>")


def score_tiles(scores: dict, planned_epochs: Any) -> list[str]:
    """CV +- std, the honest estimate, OOF, epochs kept, training time (comp's one time format, comp.core.output.clock)."""
    from comp.core.output import clock

    metric = str(scores.get("metric", "score"))
    n = len(scores.get("folds") or {})
    cv = f"{fmt(scores.get('mean'))} ± {fmt(scores.get('std'))}"
    fig = honest_figures(scores)
    sub = HONEST_SOURCE.get(fig["source"], "the CV mean (this scores.json records no epoch selection)")
    if fig["best_on_fold"] is not None:
        sub += f"; best epoch on each fold's own rows: {fmt(fig['best_on_fold'])} (optimistic)"
    epochs = scores.get("best_epochs") or {}
    kept = ", ".join(str(e) for _, e in sorted(epochs.items(), key=lambda kv: int(kv[0]))) or "-"
    checkpoint = scores.get("checkpoint")
    minutes = scores.get("minutes")
    total = sum(float(v) for v in minutes.values()) if isinstance(minutes, dict) else minutes
    return [
        _tile(f"CV {metric} ({direction(scores) or 'mean of folds'})", cv, f"mean ± std of {n} fold(s)"),
        _tile("honest estimate", fmt(fig["honest"]), sub),
        _tile("OOF", fmt(scores.get("oof")), f"{scores.get('oof_rows', '?')} of {scores.get('train_rows', '?')} images"
              + (f"; honest OOF {fmt(fig['honest_oof'])}" if fig["honest_oof"] != scores.get("oof") else "")),
        _tile("epochs kept per fold", kept, (f"checkpoint: {checkpoint}; " if checkpoint else "")
              + f"of {planned_epochs} planned"),
        _tile("training time", clock(None if total is None else 60 * float(total)), "all folds together"),
    ]


def tta_tile(ws: Layout, exp: str) -> str:
    """The TTA the test predictions used, and how it was chosen (predict.json)."""
    record = read_json_record(ws.predict_json(exp))
    if record is None:
        return _tile("TTA", "-", f"not predicted yet: comp predict -e {exp} --tta auto")
    auto = record.get("tta_auto") or {}
    if auto:
        chosen = str(auto.get("chosen", record.get("tta")))
        sub = (f"chosen on OOF ({auto.get('metric', '')} {fmt((auto.get('scores') or {}).get(chosen))} in-sample, "
               f"nested {fmt(auto.get('nested'))})")
        return _tile("TTA chosen", chosen, sub)
    return _tile("TTA", str(record.get("tta", "-")), f"{record.get('merge', 'mean')} of the views, set by you")


def member_submissions(ws: Layout, exp: str) -> list[dict[str, Any]]:
    """The submissions whose manifest lists `exp` as a member: name, weight, method, OOF, nested, LB."""
    board = read_json_record(ws.leaderboard_json) or {}
    rows = []
    for path in sorted(ws.submissions_dir.glob("*.json")) if ws.submissions_dir.is_dir() else []:
        doc = read_json_record(path)
        if doc is None or exp not in (doc.get("members") or []):
            continue
        members, weights = list(doc["members"]), doc.get("weights") or []
        weight = weights[members.index(exp)] if len(weights) == len(members) else None
        rows.append({"submission": path.stem, "members": ", ".join(members), "weight": weight,
                     "method": str(doc.get("method", "?")), "oof": doc.get("oof"), "nested": doc.get("nested"),
                     "lb": (board.get(path.stem) or {}).get("lb")})
    return rows


def submissions_html(rows: list[dict[str, Any]], exp: str) -> str:
    if not rows:
        return (f"<p class=note>no submission lists {html.escape(exp)} yet "
                f"(comp ensemble -e {html.escape(exp)} ... --name NAME)</p>")
    head = "".join(f"<th>{h}</th>" for h in ("submission", "members", f"weight of {html.escape(exp)}", "method",
                                              "OOF (in-sample)", "nested estimate", "LB"))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r["submission"], r["members"], fmt(r["weight"], 3), r["method"], fmt(r["oof"]), fmt(r["nested"]),
            fmt(r["lb"]))) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def summary_card(ws: Layout, exp: str) -> str:
    """The card's HTML: scores, TTA, minutes and the submissions made from the experiment."""
    scores = read_json_record(ws.scores_json(exp))
    parts = ["<section id='summary' class='card'><h2>Summary</h2>"]
    if scores is None or scores.get("mean") is None:
        parts.append(f"<p>not trained yet: comp fold-train -e {html.escape(exp)}</p>")
    else:
        cfg = _config(ws, exp)
        parts.append("<div class='tiles'>" + "".join(score_tiles(scores, (cfg.get("train") or {}).get("epochs", "?")))
                     + tta_tile(ws, exp) + "</div>")
        if scores.get("complete") is False:
            missing = scores.get("missing_folds") or []
            k = scores.get("k", len(scores.get("folds") or {}) + len(missing))
            parts.append(f"<p class='warn'>partial: {len(scores.get('folds') or {})} of {k} folds trained "
                         f"(missing {', '.join(map(str, missing))}); CV and OOF cover the trained folds only</p>")
    parts.append("<h3>Submissions made from it</h3>" + submissions_html(member_submissions(ws, exp), exp))
    parts.append("<p class=note>the resolved config and the environment are at the end of this page</p></section>")
    return "\n".join(parts)


def _config(ws: Layout, exp: str) -> dict:
    """The experiment's config.yaml through comp's one YAML reader (size and alias caps), {} when unreadable."""
    from comp.core.config import read_yaml
    from comp.core.errors import CompError

    path = ws.config_yaml(exp)
    try:
        return read_yaml(path) if path.is_file() else {}
    except CompError:  # the card leaves out what it cannot read; the config section says why
        return {}
