"""`comp leaderboard`: experiments and submissions side by side; --record stores a leaderboard score."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from comp.cli import app
from comp.cli.common import WorkspaceOpt, console, handle_errors, print_table
from comp.errors import CompError

if TYPE_CHECKING:
    import pandas as pd


@app.command("leaderboard")
@handle_errors
def leaderboard_command(
    record: Annotated[str | None, typer.Option("--record", help="A submission name to record a leaderboard score for.")] = None,
    lb: Annotated[float | None, typer.Option("--lb", help="The public leaderboard score of --record.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print both tables as JSON.")] = False,
    sort: Annotated[str, typer.Option("--sort", help="cv | oof | lb | name (default: best CV first; "
                                      "submissions by nested estimate).")] = "cv",
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Experiments (model, image, epochs, folds, CV mean/std, OOF, minutes) and submissions (OOF, nested, LB)."""
    from comp.leaderboard import experiment_rows, leaderboard_json_text, record_lb, report_cv_vs_lb, submission_rows
    from comp.workspace import Workspace

    from comp.config import load_config
    from comp.leaderboard import sort_rows
    from comp.metrics import greater_is_better

    ws = Workspace.at(workspace)
    better = greater_is_better(load_config(ws.root).metric)  # also: no comp.yaml here -> run comp init
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
        print_table(shown(sort_rows(exps, "experiments", sort, greater_is_better=better)), title="experiments")
    if not subs.empty:
        print_table(shown(sort_rows(subs, "submissions", sort, greater_is_better=better).drop(columns=["time"])),
                    title="submissions")


def shown(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Scores to 4 decimals, minutes as m:ss, '-' for a missing value."""
    from comp.output import clock

    out = frame.astype(object)
    for col in frame.columns:
        if col == "minutes":
            out[col] = [clock(v * 60) if v == v else "-" for v in frame[col]]
        elif frame[col].dtype.kind == "f":
            out[col] = ["-" if v != v else f"{v:.4f}" for v in frame[col]]
    return out
