"""`comp fold-train`: one model per fold, out-of-fold predictions, CV and OOF scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from comp.cli import app
from comp.cli.common import ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, load, print_table
from comp.errors import CompError


def parse_folds(text: str | None) -> list[int] | None:
    """'0,2' -> [0, 2]; None -> None (all folds)."""
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CompError(f"--fold expects fold numbers separated by commas, e.g. --fold 0,2; got {text!r}") from None


@app.command("fold-train")
@handle_errors
def fold_train_command(
    k: Annotated[int | None, typer.Option("--k", help="Number of folds (sets folds.k; default: folds.k).")] = None,
    fold: Annotated[str | None, typer.Option("--fold", help="Train only these folds, e.g. 0 or 0,2 (default: all).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete this experiment's previous outputs and start over.")] = False,
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Train one model per fold; write experiments/<exp>/{fold*/best.pt, oof.csv, scores.json, report.html}."""
    from comp.train import fold_train  # torch loads only for the commands that train

    overrides = list(set_ or []) + ([f"folds.k={k}"] if k is not None else [])
    ws, cfg = load(workspace, experiment, overrides)
    with RichProgress() as progress:
        scores = fold_train(cfg, ws, experiment, folds=parse_folds(fold), force=force, progress=progress)
    show_scores(scores)
    console.print(f"outputs in {ws.exp_dir(experiment)} (report: {ws.report_html(experiment)})", highlight=False)


def show_scores(scores: dict) -> None:
    """The per-fold table, then CV mean +- std and the OOF score."""
    metric = scores["metric"]
    rows = [{"fold": f, "best epoch": scores["best_epochs"][f] + 1, metric: float(s),
             "val loss": float(scores["val_losses"][f]), "minutes": float(scores["minutes"][f])}
            for f, s in scores["folds"].items()]
    print_table(pd.DataFrame(rows), title=f"fold-train (k={scores['k']})")
    if scores["mean"] is not None:
        console.print(f"CV {metric}: {scores['mean']:.4f} +- {scores['std']:.4f}   "
                      f"OOF {metric}: {scores['oof']:.4f} ({scores['oof_rows']}/{scores['train_rows']} images)",
                      highlight=False)
    if not scores["complete"]:
        console.print(f"[yellow]folds not trained yet: {scores['missing_folds']}[/] (OOF covers the trained folds only)")
