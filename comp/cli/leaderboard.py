"""`comp leaderboard`: experiments and submissions side by side; --record stores a leaderboard score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli import app
from comp.cli.common import WorkspaceOpt, console, handle_errors, print_table
from comp.errors import CompError
from comp.leaderboard import experiment_rows, leaderboard_json_text, record_lb, report_cv_vs_lb, submission_rows
from comp.workspace import Workspace


@app.command("leaderboard")
@handle_errors
def leaderboard_command(
    record: Annotated[str | None, typer.Option("--record", help="A submission name to record a leaderboard score for.")] = None,
    lb: Annotated[float | None, typer.Option("--lb", help="The public leaderboard score of --record.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print both tables as JSON.")] = False,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Experiments (model, image, epochs, folds, CV mean/std, OOF, minutes) and submissions (OOF, nested, LB)."""
    ws = Workspace.at(workspace)
    if (record is None) != (lb is None):
        raise CompError("--record NAME and --lb SCORE go together, e.g. --record blend1 --lb 0.7632")
    if record is not None:
        record_lb(ws, record, lb)
        plots = report_cv_vs_lb(ws)
        console.print(f"recorded LB {lb} for {record}; CV-vs-LB plot in {len(plots)} experiment report(s)")
    if as_json:
        console.print_json(leaderboard_json_text(ws))
        return
    exps, subs = experiment_rows(ws), submission_rows(ws)
    if exps.empty and subs.empty:
        console.print("no trained experiments or submissions yet; run `comp fold-train` then `comp ensemble`")
        return
    if not exps.empty:
        print_table(exps, title="experiments")
    if not subs.empty:
        print_table(subs.drop(columns=["time"]), title="submissions")
