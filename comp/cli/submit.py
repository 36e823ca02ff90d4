"""`comp submit`: upload a submission with the official kaggle command and record it (and with --wait its score)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import WorkspaceOpt, console, handle_errors, load


@app.command("submit")
@handle_errors
def submit_command(
    name: Annotated[str, typer.Argument(help="A submission: submissions/NAME.csv and its manifest.")],
    message: Annotated[str, typer.Option("--message", "-m", help="The submission's description on Kaggle.")],
    wait: Annotated[bool, typer.Option("--wait", help="Poll until the public score appears, then record it.")] = False,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between polls with --wait.")] = 30.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up waiting after this many seconds.")] = 3600.0,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """kaggle competitions submit -c <comp.yaml competition> -f submissions/NAME.csv -m MESSAGE, recorded in leaderboard.json."""
    from comp.export.kaggle import submit_submission
    from comp.blend.leaderboard import report_cv_vs_lb

    ws, cfg = load(workspace)
    result = submit_submission(cfg, ws, name, message, wait=wait, poll_s=poll, timeout_s=timeout)
    console.print(f"submitted {ws.submission_csv(name)} to {result['competition']}: {result['confirmation']}")
    if result["lb"] is None:
        console.print(f"recorded in {ws.leaderboard_json}; `comp submit --wait` or `comp leaderboard --record` adds the score")
        return
    report_cv_vs_lb(ws)
    private = f", private {result['private_lb']}" if result.get("private_lb") is not None else ""
    console.print(f"public score {result['lb']}{private}: recorded in {ws.leaderboard_json}")
