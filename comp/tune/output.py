"""What a study leaves behind: experiments/<exp>-tuned.yaml, a table of top trials, report plots."""

from __future__ import annotations

import html
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from comp.core.config import build_config, deep_merge, nest, parse_override, read_yaml
from comp.report.page import add_section, img_html, report_image, save_figure, table_html
from comp.core.layout import Layout, write_text

log = logging.getLogger("comp.tune")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None when no trial completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def trials_table(study: optuna.Study, *, top: int | None = 10) -> pd.DataFrame:
    """number, state, value, seconds, one column per param, reason: best complete trials first."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            continue
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else math.nan
        reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or ""
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "value": math.nan if t.value is None else float(t.value), "seconds": seconds,
                     **t.params, "reason": reason})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    complete = frame["state"] == "complete"
    ascending = study.direction == optuna.study.StudyDirection.MINIMIZE
    best = frame[complete].sort_values(["value", "trial"], ascending=[ascending, True])
    rest = frame[~complete].sort_values("trial")
    frame = pd.concat([best, rest], ignore_index=True)
    return frame if top is None else frame.head(top)


def tuned_document(ws: Layout, exp: str, overrides: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    """experiments/<exp>.yaml with the --set overrides and the best params merged (tune section as it was)."""
    path = ws.experiment_yaml(exp)
    doc = read_yaml(path) if path.is_file() else {}
    for text in overrides:
        doc = deep_merge(doc, parse_override(text))
    for key, value in params.items():
        doc = deep_merge(doc, nest(key, value))
    return doc


def write_tuned_yaml(
    ws: Layout, exp: str, best: FrozenTrial, *, overrides: tuple[str, ...] = (), study_name: str, metric: str
) -> Path:
    """Write experiments/<exp>-tuned.yaml (checked to load) for `comp fold-train -e <exp>-tuned`."""
    doc = tuned_document(ws, exp, overrides, best.params)
    base = read_yaml(ws.comp_yaml) if ws.comp_yaml.is_file() else {}
    build_config(deep_merge(base, doc), source=f"experiments/{exp}-tuned.yaml: ")
    import yaml

    header = (f"# Written by `comp tune -e {exp}`: best trial {best.number} of study {study_name!r}, "
              f"{metric} {best.value:.6g}.\n# Tuned keys: {', '.join(best.params) or 'none'}. "
              f"Train it with: comp fold-train -e {exp}-tuned\n")
    return write_text(ws.tuned_yaml(exp), header + yaml.safe_dump(doc, sort_keys=False))


def _plot(ws: Layout, exp: str, name: str, draw: Callable[[], Any]) -> str:
    """One optuna matplotlib plot into report/<name>; '' (and a log line) when it cannot be drawn."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            ax = draw()
        fig = getattr(ax, "figure", None)
        if fig is None:  # some plots return an array of axes
            fig = ax.flat[0].figure
        path, src = report_image(ws, exp, name)
        save_figure(fig, path)
        return img_html(src, name)
    except Exception as exc:  # a plot is never worth failing a finished study for
        log.warning("tune report: could not draw %s (%s: %s)", name, type(exc).__name__, exc)
        return ""


def label_history(ax: Any, trials: list[FrozenTrial]) -> Any:
    """Integer trial ticks, and the score labelled with the epochs and folds the trials were scored on."""
    from matplotlib.ticker import MaxNLocator

    epochs = sorted({t.user_attrs["epochs"] for t in trials if "epochs" in t.user_attrs})
    folds = sorted({int(k[4:]) for t in trials for k in t.user_attrs if k.startswith("fold") and k[4:].isdigit()})
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"mean score over folds {folds} ({'/'.join(map(str, epochs)) or '?'} epochs a trial)")
    return ax


def tune_plots(ws: Layout, exp: str, study: optuna.Study) -> list[str]:
    """Optimisation history, parameter importances (>= 2 complete trials, > 1 param), parallel coordinates."""
    from optuna.visualization import matplotlib as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    n_params = len({k for t in complete for k in t.params})
    images = [_plot(ws, exp, "tune-history.png", lambda: label_history(vis.plot_optimization_history(study), complete))]
    if len(complete) >= 2 and n_params > 1:
        images.append(_plot(ws, exp, "tune-importances.png", lambda: vis.plot_param_importances(study)))
    if n_params >= 1:
        images.append(_plot(ws, exp, "tune-parallel.png", lambda: vis.plot_parallel_coordinate(study)))
    return [i for i in images if i]


def write_report(ws: Layout, exp: str, study: optuna.Study, *, summary: str, tuned: Path | None) -> Path:
    """Add (or replace) the 'tune' section of experiments/<exp>/report.html (paths in it relative to the workspace)."""
    from comp.tune.study import in_workspace

    table = trials_table(study, top=20)
    parts = [f"<p>{html.escape(in_workspace(summary, ws.root))}</p>"]
    if tuned is not None:
        parts.append(f"<p>best parameters merged into <code>{html.escape(in_workspace(str(tuned), ws.root))}</code></p>")
    if not table.empty:
        parts.append(table_html(table, float_format="{:.4g}"))
    parts.extend(tune_plots(ws, exp, study))
    return add_section(ws, exp, "tune", "Hyperparameter search (Optuna)", "\n".join(parts), order=60)
