"""`comp lr-find`: the learning-rate range test on one fold's training rows; --apply writes train.lr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, load


@app.command("lr-find")
@handle_errors
def lr_find_command(
    fold: Annotated[int, typer.Option("--fold", help="The fold whose training rows the test trains on.")] = 0,
    apply: Annotated[bool, typer.Option("--apply", help="Write the suggestion as train.lr into experiments/<exp>.yaml.")] = False,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps of the lr ramp (the loader is cycled).")] = 200,
    start: Annotated[float, typer.Option("--start", help="First learning rate of the ramp.")] = 1e-7,
    end: Annotated[float, typer.Option("--end", help="Last learning rate of the ramp (the test stops earlier when the loss diverges).")] = 10.0,
    rule: Annotated[str, typer.Option("--rule", help="steepest (the steepest descent of the smoothed loss) | min10 "
                                      "(the lr at its minimum / 10).")] = "steepest",
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Train a fresh model while the lr grows exponentially; write experiments/<exp>/lr_find.{csv,json} and a report plot."""
    from comp.train.lrfind import apply_lr, find_lr, rules_note

    ws, cfg = load(workspace, experiment, set_)
    with RichProgress() as progress:
        result = find_lr(cfg, ws, experiment, fold=fold, progress=progress, steps=steps, start=start, end=end, rule=rule)
    others = ", ".join(f"{name} {lr:.1e}" for name, lr in result.suggestions.items() if name != result.rule)
    console.print(f"{result.steps} steps on fold {fold} ({result.stopped}); rule {result.rule}; other rules: {others}",
                  highlight=False)
    console.print(f"suggested lr: {result.suggestion:.1e}", highlight=False)
    console.print(rules_note(result.suggestions, result.rule), highlight=False, soft_wrap=True)
    console.print(f"wrote {ws.lr_find_csv(experiment)}, {ws.lr_find_json(experiment)} and the report's "
                  f"section ({ws.report_html(experiment)})", highlight=False)
    if apply:
        apply_lr(ws, experiment, result.suggestion)
        console.print(f"train.lr: {result.suggestion:.3g} written into {ws.experiment_yaml(experiment)}", highlight=False)

