"""`comp tune`: Optuna search over the experiment's space, pruned on fold scores, resumable, many workers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from comp.cli.app import app

from comp.cli.common import (ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, err_console, handle_errors, load,
                             print_table, sigterm_as_interrupt)

if TYPE_CHECKING:
    import pandas as pd


@app.command("tune")
@handle_errors
def tune_command(
    trials: Annotated[int | None, typer.Option("--trials", help="Run until the study holds N trials (default: tune.trials).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Start no new trial after SECONDS (default: tune.timeout).")] = None,
    folds: Annotated[str | None, typer.Option("--folds", "--fold", help="Folds to score each trial on: 0 | 0,1 | all (default: tune.folds).")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna RDB URL (postgresql://...) shared by workers on many machines; default: experiments/<exp>/tune.journal.")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name (default: the experiment name).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed (sets tune.seed; default: tune.seed, else train.seed).")] = None,
    log_every: Annotated[float | None, typer.Option(
        "--log-every", help="Seconds between progress lines when output is not a terminal (default 30).")] = None,
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Search tune.space with Optuna (TPE + pruning); rerun to resume, run it on several workers to share one study."""
    from comp.tune import tune_experiment  # optuna and torch load only for this command

    from comp.core.output import set_log_every
    from comp.api.workflows import with_seed

    set_log_every(log_every)
    set_ = with_seed(set_ or [], seed, key="tune.seed")
    ws, cfg = load(workspace, experiment, set_)
    console.print(f"watch the study: {dashboard_command(ws, experiment, storage)}", highlight=False, markup=False)
    stop = sigterm_as_interrupt()  # a preempted or killed worker marks its running trial as interrupted, not counted
    try:
        with RichProgress() as progress:
            result = tune_experiment(ws, cfg, exp=experiment, overrides=tuple(set_ or ()), trials=trials,
                                     timeout=timeout, folds=folds, storage=storage, study_name=study, progress=progress, stop=stop)
    except KeyboardInterrupt:
        err_console.print("interrupted: the running trial is marked failed and not counted; rerun the same command to resume")
        raise typer.Exit(130) from None
    c = result.counts
    console.print(f"study {result.study_name!r} ({result.storage}): {c['complete']} complete, {c['pruned']} pruned, "
                  f"{c['failed']} failed, {c['running']} running; this run: {len(result.ran)} trials")
    if not result.table.empty:
        print_table(_shown(result.table), title=f"top trials ({cfg.metric})")
    if result.tuned_yaml is None:
        console.print("[yellow]no trial completed[/]: no tuned experiment written; see the reasons above")
    else:
        console.print(f"best {cfg.metric} {result.best_value:.4f} (trial {result.best_number}): {result.best_params}")
        console.print(f"wrote {result.tuned_yaml}; train it with: comp fold-train -e {experiment}-tuned")
    console.print(f"report: {result.report}")


def dashboard_command(ws: object, experiment: str, storage: str | None) -> str:
    """The optuna-dashboard command that watches this study (the journal relative to the current folder)."""
    import os
    import shlex

    from comp.tune.study import redact

    if storage is not None:
        return f"optuna-dashboard {shlex.quote(redact(storage))}"
    journal = ws.tune_journal(experiment)  # type: ignore[attr-defined]
    try:
        shown = os.path.relpath(journal)
    except ValueError:
        shown = str(journal)
    return f"optuna-dashboard {shlex.quote(shown)}"


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The trials table as short strings: 4 significant digits, whole seconds, reasons cut to 60 characters."""
    import pandas as pd

    out = table.drop(columns=["reason"]) if table["reason"].eq("").all() else table.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f":
            digits = "{:.0f}" if col == "seconds" else "{:.4g}"
            out[col] = out[col].map(lambda v: "-" if pd.isna(v) else digits.format(v))
    if "reason" in out.columns:
        out["reason"] = out["reason"].str.slice(0, 60)
    return out
