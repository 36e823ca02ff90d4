"""`comp ensemble`: a blend of experiments fitted on OOF predictions -> submissions/<name>.csv + .json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from comp.cli import app
from comp.cli.common import RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, load, print_table
from comp.ensemble import METHODS
from comp.errors import CompError


@app.command("ensemble")
@handle_errors
def ensemble_command(
    experiments: Annotated[list[str], typer.Option("--experiment", "-e", help="A member experiment (repeatable).")],
    method: Annotated[str, typer.Option("--method", help="mean | geometric | rank | vote.")] = "mean",
    weights: Annotated[str, typer.Option("--weights", help="auto (fitted on OOF) | equal | w1,w2,... (one per -e).")] = "auto",
    name: Annotated[str | None, typer.Option("--name", help="Submission name (default: members and method).")] = None,
    bias: Annotated[bool, typer.Option("--bias", help="Also fit per-class logit biases on OOF (e.g. for macro-F1).")] = False,
    oof_source: Annotated[str, typer.Option("--oof-source", help="plain: oof.csv from training; tta: re-predicted with test TTA.")] = "plain",
    tta: Annotated[str | None, typer.Option("--tta", help="TTA for members that need predicting (default: each one's tta.transforms).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weight search.")] = 0,
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Predict members whose test predictions are missing or stale, fit the blend, write a validated submission."""
    from comp.predict import is_stale, predict_experiment
    from comp.submission import make_submission

    if method not in METHODS:
        raise CompError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if oof_source not in ("plain", "tta"):
        raise CompError(f"--oof-source must be plain or tta, got {oof_source!r}")
    name = name or "-".join([*experiments, method])
    ws, cfg = member_config(workspace, experiments[0], set_)
    with RichProgress() as progress:
        for exp in experiments:
            _, member_cfg = member_config(workspace, exp, set_)
            if is_stale(ws, exp, member_cfg, oof=oof_source == "tta", tta_name=tta):
                progress.log(f"{exp}: test predictions missing or stale; predicting")
                predict_experiment(member_cfg, ws, exp, tta=tta, oof=oof_source == "tta", progress=progress)
        result = make_submission(cfg, ws, experiments, name=name, method=method, weights=weights, bias=bias,
                                 oof_source=oof_source, seed=seed)
    show(result)


def member_config(workspace: Path, exp: str, set_: list[str] | None):
    """The member's config (tta, device); a trained experiment whose YAML is gone falls back to comp.yaml."""
    has_yaml = (workspace / "experiments" / f"{exp}.yaml").is_file()
    return load(workspace, exp if has_yaml else "baseline", set_)


def show(result: dict) -> None:
    table = pd.DataFrame({"member": result["members"], "weight": result["weights"],
                          "oof": [result["member_oof"][m] for m in result["members"]]})
    print_table(table, title=f"members ({result['metric']}, {result['oof_source']} OOF)")
    console.print(f"blend ({result['method']}{', bias' if result['bias'] else ''}): OOF {result['oof']:.5f} in-sample, "
                  f"nested {result['nested']:.5f} (weights fitted without the scored fold; in-sample per-fold mean "
                  f"{result['insample_fold_mean']:.5f})")
    console.print(f"wrote {result['csv']} and {result['json']}")
