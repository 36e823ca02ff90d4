"""`comp pseudo`: a new experiment that also trains on a submission's confident test predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import WorkspaceOpt, console, handle_errors


@app.command("pseudo")
@handle_errors
def pseudo_command(
    source: Annotated[str, typer.Option("--from", help="A submission name (submissions/NAME.json), or a CSV file.")],
    experiment: Annotated[str, typer.Option("--experiment", "-e", help="The new experiment's name.")],
    threshold: Annotated[float, typer.Option("--threshold", help="Keep test rows whose top probability is at least this.")] = 0.9,
    soft: Annotated[bool, typer.Option("--soft", help="Train on the per-class probabilities, not the top class.")] = False,
    base: Annotated[str | None, typer.Option(
        "--base", help="The experiment whose settings the new one copies (default: the submission's first member).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace experiments/NAME.yaml if it exists.")] = False,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Write experiments/NAME.yaml (the base experiment plus `pseudo:`) and experiments/NAME/pseudo.csv; then run
    `comp fold-train -e NAME`. Student fold f's pseudo labels come from the members' fold-f models only."""
    from comp.recipes.pseudo import make_pseudo
    from comp.core.layout import Layout

    ws = Layout.at(workspace)
    done = make_pseudo(ws, source, experiment, threshold=threshold, soft=soft, base=base, force=force)
    per_fold = ", ".join(f"fold {f}: {n}" for f, n in done["rows_per_fold"].items())
    console.print(f"{experiment}: pseudo rows from {source} (threshold {threshold}, "
                  f"{'soft' if soft else 'hard'} labels) of {done['test_rows']} test images kept per fold: {per_fold}",
                  highlight=False)
    console.print(f"wrote {done['yaml']} and {ws.pseudo_csv(experiment)}; next: comp fold-train -e {experiment}",
                  highlight=False)
