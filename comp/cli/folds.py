"""`comp folds`: leakage-proof fold assignment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, load, print_table
from comp.core.errors import CompError


@app.command("folds")
@handle_errors
def folds_command(
    k: Annotated[int | None, typer.Option("--k", help="Number of folds (default: folds.k).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Shuffle seed (default: folds.seed).")] = None,
    stratify: Annotated[
        str | None, typer.Option("--stratify", help="Extra columns to stratify with the label, comma-separated (e.g. gender).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite an existing folds file.")] = False,
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Write folds/k{K}-s{SEED}.csv: StratifiedKFold, or StratifiedGroupKFold when data.group_col is set.

    By task: multilabel folds stratify the tags (iterative stratification, groups whole), regression folds
    quantile bins of the target, multitask folds the combined label; the table shows each fold's tag
    shares (multilabel), target mean/std (regression) or class counts.
    """
    from comp.data.tables import load_tables
    from comp.data.folds import fold_summary, fold_summary_title, load_or_make_folds

    ws, cfg = load(workspace, experiment, set_)
    k = k if k is not None else cfg.folds.k
    seed = seed if seed is not None else cfg.folds.seed
    extra = tuple(c.strip() for c in stratify.split(",") if c.strip()) if stratify else cfg.folds.stratify
    if k < 2:
        raise CompError(f"--k must be 2 or more, got --k {k}")
    extra = tuple(extra)
    with RichProgress() as progress:
        tables = load_tables(cfg, ws, progress=progress)
    made = load_or_make_folds(ws, tables, k=k, seed=seed, group_col=cfg.data.group_col, stratify=extra, force=force)
    on = {"multilabel": "the tags (iterative stratification)", "regression": "quantile bins of the target",
          "multitask": "the combined label of the heads"}.get(tables.task.kind, "label")
    how = (f"{', grouped by ' + cfg.data.group_col if cfg.data.group_col else ', not grouped'}"
           f"{', stratified on ' + on + (' x ' + ','.join(extra) if extra else '') if extra or on != 'label' else ''}")
    if made.made:
        console.print(f"wrote {made.path} and {made.path.with_suffix('.json').name} ({len(made.folds)} rows, k={k}, "
                      f"seed={seed}{how})", highlight=False)
    else:
        console.print(f"{made.path} exists and was made from this data and these settings (k={k}, seed={seed}{how}); "
                      "kept it (--force to rewrite)", highlight=False)
    if extra != tuple(cfg.folds.stratify):
        console.print(f"[yellow]note:[/] --stratify {','.join(extra)} differs from folds.stratify in the config; set "
                      f"folds.stratify: [{', '.join(extra)}] in comp.yaml so fold-train accepts this file", highlight=False)
    balance = fold_summary(tables, made.fold_of(tables.train))
    print_table(balance.table, title=fold_summary_title(tables.task.kind))
    for warning in balance.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
