"""`comp folds`: leakage-proof fold assignment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli import app
from comp.cli.common import ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, load, print_table
from comp.data.tables import load_tables
from comp.errors import CompError
from comp.folds import fold_balance, make_folds, read_folds, write_folds


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
    """Write folds/k{K}-s{SEED}.csv: StratifiedKFold, or StratifiedGroupKFold when data.group_col is set."""
    ws, cfg = load(workspace, experiment, set_)
    k = k if k is not None else cfg.folds.k
    seed = seed if seed is not None else cfg.folds.seed
    extra = tuple(c.strip() for c in stratify.split(",") if c.strip()) if stratify else cfg.folds.stratify
    if k < 2:
        raise CompError(f"--k must be 2 or more, got --k {k}")
    with RichProgress() as progress:
        tables = load_tables(cfg, ws, progress=progress)
    path = ws.folds_csv(k, seed)
    if path.is_file() and not force:
        folds = read_folds(path, tables, k)
        console.print(f"{path} exists and matches train.csv; kept it (--force to rewrite)")
    else:
        folds = make_folds(tables, k, seed, extra)
        write_folds(ws, folds, k, seed)
        console.print(f"wrote {path} ({len(folds)} rows, k={k}, seed={seed}"
                      f"{', grouped by ' + cfg.data.group_col if cfg.data.group_col else ''}"
                      f"{', stratified on label x ' + ','.join(extra) if extra else ''})")
    balance = fold_balance(folds)
    print_table(balance.table, title="rows, groups and class counts per fold")
    for warning in balance.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
