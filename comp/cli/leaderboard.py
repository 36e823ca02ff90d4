"""`comp leaderboard`: experiments and submissions side by side; --record stores a leaderboard score."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from comp.cli.app import app
from comp.cli.common import WorkspaceOpt, console, handle_errors, print_table
from comp.core.errors import CompError

if TYPE_CHECKING:
    import pandas as pd


@app.command("leaderboard")
@handle_errors
def leaderboard_command(
    record: Annotated[str | None, typer.Option("--record", help="A submission name to record a leaderboard score for.")] = None,
    lb: Annotated[float | None, typer.Option("--lb", help="The public leaderboard score of --record.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print both tables as JSON.")] = False,
    as_html: Annotated[bool, typer.Option("--html", help="Also write submissions/index.html: every submission, its "
                                          "members, weights, CV, nested, LB and a CV-vs-LB plot.")] = False,
    sort: Annotated[str, typer.Option("--sort", help="cv | oof | lb | name (default: best CV first; "
                                      "submissions by nested estimate).")] = "cv",
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Experiments (model, image, epochs, folds, CV mean/std, honest estimate, OOF, minutes) and submissions
    (members, weights, OOF, nested, LB, gaps)."""
    from comp.core.config import load_config
    from comp.blend.leaderboard import (direction_text, experiment_rows, leaderboard_json_text, record_lb, report_cv_vs_lb,
                                  sort_rows, submission_rows, submissions_page)
    from comp.core.metrics import greater_is_better
    from comp.core.layout import Layout

    ws = Layout.at(workspace)
    metric = load_config(ws.root).metric  # also: no comp.yaml here -> run comp init
    better = greater_is_better(metric)
    if (record is None) != (lb is None):
        raise CompError("--record NAME and --lb SCORE go together, e.g. --record blend1 --lb 0.7632")
    if record is not None:
        record_lb(ws, record, lb)
        plots = report_cv_vs_lb(ws)
        console.print(f"recorded LB {lb} for {record}; CV-vs-LB plot in {len(plots)} experiment report(s)")
    if as_html:
        page = submissions_page(ws, metric=metric, greater_is_better=better)
        console.print(f"wrote {page}", highlight=False)
    if as_json:
        console.print_json(leaderboard_json_text(ws))
        return
    exps, subs = experiment_rows(ws), submission_rows(ws)
    if exps.empty and subs.empty:
        console.print("no trained experiments or submissions yet; run `comp fold-train` then `comp ensemble`")
        return
    heading = f"{metric}, {direction_text(better)}"
    if not exps.empty:
        print_table(shown(sort_rows(exps, "experiments", sort, greater_is_better=better)),
                    title=f"experiments ({heading}; honest: the honest CV estimate)")
        if exps["partial"].any():
            console.print("partial: not every fold is trained, so CV and OOF cover fewer rows than a full run",
                          highlight=False)
    if not subs.empty:
        print_table(shown(sort_rows(subs, "submissions", sort, greater_is_better=better).drop(columns=["time"])),
                    title=f"submissions ({heading}; oof in-sample, nested honest)")


def shown(frame: "pd.DataFrame") -> "pd.DataFrame":
    """The table as printed (comp.blend.leaderboard.display_frame)."""
    from comp.blend.leaderboard import display_frame

    return display_frame(frame)
