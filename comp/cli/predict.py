"""`comp predict`: test-set probabilities per fold with test-time augmentation (ttach)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import ExperimentOpt, RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, load


@app.command("predict")
@handle_errors
def predict_command(
    tta: Annotated[
        str | None,
        typer.Option("--tta", help="none | hflip | vflip | flip | d4 | multiscale | five_crop | ten_crop | auto (chosen on "
                     "OOF: every candidate scored, nested estimate; implies --oof) (default: tta.transforms)."),
    ] = None,
    oof: Annotated[bool, typer.Option("--oof", help="Also re-predict each fold's validation rows with the same TTA (oof_tta.csv).")] = False,
    workspace: WorkspaceOpt = Path("."),
    experiment: ExperimentOpt = "baseline",
    set_: SetOpt = None,
) -> None:
    """Write experiments/<exp>/fold{i}/test.csv and their mean experiments/<exp>/test.csv (id, p_<class>...)."""
    from comp.api.workflows import predict  # torch is imported only by commands that need it

    ws, cfg = load(workspace, experiment, set_)
    with RichProgress() as progress:
        summary = predict(ws, experiment, cfg, tta=tta, oof=oof, progress=progress)
    console.print(f"{experiment}: {summary['test_rows']} test rows, folds {summary['folds']}, "
                  f"TTA {summary['tta']} ({summary['merge']}) -> {ws.test_probs_csv(experiment)}")
    if summary["oof_tta"]:
        console.print(f"OOF re-predicted with the same TTA -> {summary['oof_tta']}")
    if summary.get("tta_auto"):
        show_auto(summary["tta_auto"])


def show_auto(auto: dict) -> None:
    """--tta auto: each candidate's OOF score and gain over none, the choice and the nested estimate."""
    import pandas as pd

    from comp.cli.common import print_table

    gains = auto.get("gain_vs_none") or {}
    table = pd.DataFrame({"candidate": auto["candidates"], f"OOF {auto['metric']}": [auto["scores"][c] for c in auto["candidates"]],
                          "gain vs none": [gains.get(c, float("nan")) for c in auto["candidates"]],
                          "chosen": ["<-" if c == auto["chosen"] else "" for c in auto["candidates"]]})
    print_table(table, title="--tta auto: candidates scored on OOF (each distinct view computed once)")
    choices = ", ".join(f"fold {f}: {c}" for f, c in auto["nested_choices"].items())
    console.print(f"chosen: {auto['chosen']} (OOF {auto['scores'][auto['chosen']]:.4f} in-sample); nested estimate "
                  f"{auto['nested']:.4f} (each fold scored with the TTA chosen without it: {choices})", highlight=False)
