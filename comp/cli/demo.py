"""`comp demo DIR`: a ready workspace on real bundled data, run end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli import app
from comp.cli.common import RichProgress, console, handle_errors, load, print_table
from comp.data.tables import load_tables
from comp.demo import build_demo
from comp.folds import fold_balance, make_folds, write_folds


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


@app.command("demo")
@handle_errors
def demo_command(
    directory: Annotated[Path, typer.Argument(help="Folder to create the demo workspace in.")] = Path("demo"),
    force: Annotated[bool, typer.Option("--force", help="Rebuild the demo data in an existing DIR.")] = False,
    only_data: Annotated[bool, typer.Option("--only-data", help="Write the workspace and folds, train nothing.")] = False,
) -> None:
    """Build a workspace from scikit-learn's digits (photographed subjects, imbalanced) and run it end to end."""
    step("1. data: digits photographed as subjects")
    with RichProgress() as progress:
        data = build_demo(directory, force=force, progress=progress)
    console.print(f"{data.root}: {data.n_train} train images of {data.n_subjects} subjects, {data.n_test} test images; "
                  f"hidden solution at {data.solution}")
    ws, cfg = load(directory)
    step("2. folds: stratified group k-fold (no subject on both sides)")
    tables = load_tables(cfg, ws)
    folds = make_folds(tables, cfg.folds.k, cfg.folds.seed, cfg.folds.stratify)
    path = write_folds(ws, folds, cfg.folds.k, cfg.folds.seed)
    console.print(f"wrote {path}")
    print_table(fold_balance(folds).table, title="rows, groups and class counts per fold")
    if only_data:
        return
