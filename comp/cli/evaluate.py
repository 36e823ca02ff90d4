"""`comp evaluate`: score a submission file against a solution file with the competition metric."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import SetOpt, WorkspaceOpt, console, handle_errors, load


@app.command("evaluate")
@handle_errors
def evaluate_command(
    submission: Annotated[Path, typer.Argument(help="A submission CSV in the competition's format.")],
    solution: Annotated[Path, typer.Option("--solution", help="CSV with the submission id column and the true target column.")],
    record: Annotated[bool, typer.Option("--record", help="Store the score as the submission's leaderboard score "
                                         "(leaderboard.json, as `comp leaderboard --record`).")] = False,
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Print the competition metric of SUBMISSION against --solution, beside the OOF and nested scores its manifest
    recorded."""
    from comp.data.tables import load_tables
    from comp.core.errors import CompError
    from comp.blend.leaderboard import direction_text, record_evaluation, submission_of
    from comp.core.metrics import get_metric
    from comp.blend.submission import score_submission

    ws, cfg = load(workspace, "baseline", set_)
    tables = load_tables(cfg, ws, check_images=False)
    metric = get_metric(cfg.metric, tables.task)
    score = score_submission(submission, solution, cfg.submission, classes=tables.classes, metric=metric,
                             task=tables.task)
    console.print(f"{submission.name}: {cfg.metric} = {score:.5f} ({direction_text(metric.greater_is_better)})",
                  highlight=False)
    made = submission_of(ws, submission)
    if made is None:
        if record:
            raise CompError(f"--record needs a submission made by `comp ensemble` (no manifest {submission.stem}.json "
                            f"beside {submission.name} or in submissions/); score it without --record")
        return
    name, doc, same = made
    if not same:
        console.print(f"[yellow]{submission.name} is not the file manifest {name}.json records (another sha256): "
                      "its recorded scores are of another file[/]", highlight=False)
    oof, nested = doc.get("oof"), doc.get("nested")
    if isinstance(oof, (int, float)) and isinstance(nested, (int, float)):
        console.print(f"recorded for {name}: OOF {oof:.5f} (in-sample), nested {nested:.5f}; this score - nested "
                      f"{score - nested:+.5f}", highlight=False)
    if record:
        if not same:
            raise CompError(f"--record: {submission} differs from the file submissions/{name}.json records; "
                            f"record the score of submissions/{name}.csv itself")
        record_evaluation(ws, name, score, solution=solution)
        console.print(f"recorded {score:.5f} as the leaderboard score of {name} (leaderboard.json)", highlight=False)
    else:
        console.print(f"store it as {name}'s leaderboard score with --record", highlight=False)
