"""`comp fold-train`: one model per fold, out-of-fold predictions, CV and OOF scores."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from comp.cli.app import app
from comp.cli.common import (ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, err_console, handle_errors,
                             load, print_table, rule, sigterm_as_interrupt)
from comp.core.progress import SILENT

if TYPE_CHECKING:
    from comp.core.config import Config
    from comp.core.layout import Layout


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
    seed: Annotated[int | None, typer.Option("--seed", help="Training seed (sets train.seed; default: train.seed).")] = None,
    seeds: Annotated[int | None, typer.Option(
        "--seeds", help="Train every fold N times: seeds train.seed, +1, ... (sets train.seeds; fold{i}/seed{s}/).")] = None,
    track: Annotated[str | None, typer.Option(
        "--track", help="Experiment trackers: tensorboard,mlflow,wandb (default: the experiment's track).")] = None,
    log_every: Annotated[float | None, typer.Option(
        "--log-every", help="Seconds between progress lines when output is not a terminal (default 30).")] = None,
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Train one model per fold; write experiments/<exp>/{fold*/best.pt, oof.csv, scores.json, report.html}.

    Under `torchrun --nproc-per-node N -m comp fold-train --fold i`, the fold trains data-parallel.
    """
    from comp.core.config import resolve_config
    from comp.core.output import set_log_every
    from comp.api.workflows import resume_command, with_seed
    from comp.train.track import parse_track
    from comp.core.layout import Layout

    set_log_every(log_every)
    overrides = with_seed(list(set_ or []) + ([f"folds.k={k}"] if k is not None else []), seed)
    ws = Layout.at(workspace)
    cfg, origins = resolve_config(ws.root, experiment, tuple(overrides))
    if seeds is not None:
        from comp.train.seeds import expand_seeds

        overrides.append(f"train.seeds=[{','.join(map(str, expand_seeds(cfg.train.seed, seeds)))}]")
        cfg, origins = resolve_config(ws.root, experiment, tuple(overrides))
    names = parse_track(track) if track is not None else None
    try:
        if devices is not None:
            return run_on_devices(ws, cfg, experiment, devices=devices, overrides=overrides, fold=fold, force=force,
                                  origins=origins, track=names)
        sigterm_as_interrupt()  # a preempted or killed run writes its last finished epoch and prints the resume command
        scores = train_here(ws, cfg, experiment, origins, fold=fold, force=force, track=names)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished folds and epochs are kept; resume with:", highlight=False)
        err_console.print(resume_command(str(workspace), experiment, overrides, fold), highlight=False, markup=False)
        raise typer.Exit(130) from None
    if scores is None:  # a torchrun rank other than 0
        return
    show_scores(scores)
    console.print(f"outputs in {ws.exp_dir(experiment)} (report: {ws.report_html(experiment)})", highlight=False)


def train_here(ws: Layout, cfg: Config, experiment: str, origins: dict, *, fold: str | None, force: bool,
               track: tuple[str, ...] | None) -> dict | None:
    """Train in this process (or as one torchrun rank); the scores on rank 0, None on the other ranks."""
    from comp.run import distributed  # torch loads only for the commands that train
    from comp.api.workflows import train_experiment

    with distributed.process_group(cfg.train.device):
        main = distributed.is_main()
        if not main:  # under torchrun only rank 0 logs and draws
            logging.getLogger("comp").setLevel(logging.WARNING)
        with RichProgress() if main else contextlib.nullcontext(SILENT) as progress:
            scores = train_experiment(ws, experiment, cfg, origins, folds=fold, force=force, progress=progress,
                                      track=track)
    return scores if main else None


def run_on_devices(ws: Layout, cfg: Config, experiment: str, *, devices: str, overrides: list[str], fold: str | None,
                   force: bool, origins: dict | None = None, track: tuple[str, ...] | None = None) -> None:
    """--devices: folds in child processes, then the scores table; failed folds with their log tails, exit 1."""
    from comp.api.workflows import train_experiment
    from comp.train.devices import FoldsFailed, parse_devices

    failed = None
    with RichProgress() as progress:
        try:
            scores = train_experiment(ws, experiment, cfg, origins, folds=fold, force=force, progress=progress,
                                      track=track, devices=parse_devices(devices), overrides=overrides)
        except FoldsFailed as exc:
            scores, failed = exc.scores, exc
    show_scores(scores)
    console.print(f"outputs in {ws.exp_dir(experiment)} (report: {ws.report_html(experiment)})", highlight=False)
    if failed is not None:
        for run in failed.runs:
            rule(f"fold {run.fold} failed on device {run.device} (exit {run.returncode}): {run.log_path}", err=True)
            err_console.print(run.tail(), highlight=False, markup=False)
        err_console.print(f"[bold red]error:[/] {failed}", highlight=False)
        raise typer.Exit(1)


def show_scores(scores: dict) -> None:
    """The per-fold table, then CV mean +- std (one fold: "CV (1 of 5 folds)") and the OOF score."""
    import pandas as pd

    from comp.core.output import clock

    metric = scores["metric"]
    rows = [{"fold": f, "kept epoch": scores["best_epochs"][f], metric: float(s),
             "val loss": float(scores["val_losses"][f]), "time": clock(float(scores["minutes"][f]) * 60)}
            for f, s in scores["folds"].items()]
    print_table(pd.DataFrame(rows), title=f"fold-train (k={scores['k']})")
    if scores["mean"] is not None:
        console.print(f"{cv_text(scores)}   OOF {metric}: {scores['oof']:.4f} "
                      f"({scores['oof_rows']}/{scores['train_rows']} images)", highlight=False)
    if scores.get("selection"):
        console.print(selection_text(scores), highlight=False)
    if not scores["complete"]:
        console.print(f"[yellow]folds not trained yet: {scores['missing_folds']}[/] (OOF covers the trained folds only)")


def cv_text(scores: dict) -> str:
    """'CV macro_f1: 0.8123 +- 0.0121'; with one fold trained there is no spread: 'CV macro_f1: 0.8123 (1 of 5 folds)'."""
    metric, n = scores["metric"], len(scores["folds"])
    if n < 2:
        return f"CV {metric}: {scores['mean']:.4f} ({n} of {scores['k']} folds)"
    return f"CV {metric}: {scores['mean']:.4f} +- {scores['std']:.4f}"


def selection_text(scores: dict) -> str:
    """Which epoch each fold kept, the honest CV and, when it differs, the optimistic best-on-fold figure."""
    from comp.report.card import HONEST_SOURCE, honest_figures

    fig, metric = honest_figures(scores), scores["metric"]
    how = {"last": "the last epoch", "nested": "the epoch chosen on the other folds",
           "best": "the best epoch on the fold's own rows"}.get(scores.get("checkpoint"), "?")
    line = (f"kept: {how} (train.checkpoint={scores.get('checkpoint')});  honest CV {metric}: {fig['honest']:.4f} "
            f"(OOF {fig['honest_oof']:.4f}; {HONEST_SOURCE.get(fig['source'], 'the CV mean')})")
    if fig["best_on_fold"] is not None:
        line += f";  best epoch on each fold's own rows would read {fig['best_on_fold']:.4f} (optimistic)"
    return line
