"""`comp fold-train`: one model per fold, out-of-fold predictions, CV and OOF scores."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from comp.cli import app
from comp.cli.common import (ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, err_console, handle_errors,
                             load, print_table)
from comp.config import Config
from comp.progress import SILENT
from comp.workspace import Workspace


@app.command("fold-train")
@handle_errors
def fold_train_command(
    k: Annotated[int | None, typer.Option("--k", help="Number of folds (sets folds.k; default: folds.k).")] = None,
    fold: Annotated[str | None, typer.Option(
        "--folds", "--fold", help="Train only these folds: 0 | 0,2 | all (default: all); folds that another process "
        "is training are skipped.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete this experiment's previous outputs and start over.")] = False,
    devices: Annotated[str | None, typer.Option(
        "--devices", help="Train folds in parallel, one process per device: GPU numbers (0,1,2,3) or cpu (cpu,cpu).",
    )] = None,
    child: Annotated[bool, typer.Option("--child", hidden=True, help="Train the folds only (a --devices child).")] = False,
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Train one model per fold; write experiments/<exp>/{fold*/best.pt, oof.csv, scores.json, report.html}.

    Under `torchrun --nproc-per-node N -m comp fold-train --fold i`, the fold trains data-parallel.
    """
    overrides = list(set_ or []) + ([f"folds.k={k}"] if k is not None else [])
    ws, cfg = load(workspace, experiment, overrides)
    if devices is not None:
        return run_on_devices(ws, cfg, experiment, devices=devices, overrides=overrides, fold=fold, force=force)
    from comp import distributed  # torch loads only for the commands that train
    from comp.train import fold_train

    with distributed.process_group(cfg.train.device):
        main = distributed.is_main()
        if not main:  # under torchrun only rank 0 logs and draws
            logging.getLogger("comp").setLevel(logging.WARNING)
        with RichProgress() if main else contextlib.nullcontext(SILENT) as progress:
            scores = fold_train(cfg, ws, experiment, folds=fold, force=force, progress=progress,
                                aggregate=not child)
    if child or not main:
        return
    show_scores(scores)
    console.print(f"outputs in {ws.exp_dir(experiment)} (report: {ws.report_html(experiment)})", highlight=False)


def run_on_devices(ws: Workspace, cfg: Config, experiment: str, *, devices: str, overrides: list[str], fold: str | None,
                   force: bool) -> None:
    """--devices: folds in child processes, then the scores table; failed folds with their log tails, exit 1."""
    from comp.dispatch import fold_train_parallel, parse_devices

    with RichProgress() as progress:
        result = fold_train_parallel(cfg, ws, experiment, devices=parse_devices(devices), overrides=overrides,
                                     folds=fold, force=force, progress=progress)
    show_scores(result.scores)
    console.print(f"outputs in {ws.exp_dir(experiment)} (report: {ws.report_html(experiment)})", highlight=False)
    for run in result.failed:
        err_console.rule(f"fold {run.fold} failed on device {run.device} (exit {run.returncode}): {run.log_path}")
        err_console.print(run.tail(), highlight=False, markup=False)
    if result.failed:
        err_console.print(f"[bold red]error:[/] folds {[r.fold for r in result.failed]} failed; fix the cause and "
                          "rerun the same command (finished folds are not trained again)", highlight=False)
        raise typer.Exit(1)


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
