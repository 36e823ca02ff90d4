"""`comp evaluate`: score a submission file against a solution file with the competition metric."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli import app
from comp.cli.common import SetOpt, WorkspaceOpt, console, handle_errors, load


@app.command("evaluate")
@handle_errors
def evaluate_command(
    submission: Annotated[Path, typer.Argument(help="A submission CSV in the competition's format.")],
    solution: Annotated[Path, typer.Option("--solution", help="CSV with the submission id column and the true target column.")],
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Print the competition metric of SUBMISSION against --solution."""
    from comp.data.tables import load_tables
    from comp.metrics import get_metric
    from comp.submission import score_submission

    ws, cfg = load(workspace, "baseline", set_)
    tables = load_tables(cfg, ws, check_images=False)
    metric = get_metric(cfg.metric, tables.task)
    score = score_submission(submission, solution, cfg.submission, classes=tables.classes, metric=metric,
                             task=tables.task)
    console.print(f"{submission.name}: {cfg.metric} = {score:.5f}")
