"""`comp ensemble`: a blend of experiments fitted on OOF predictions -> submissions/<name>.csv + .json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, print_table


@app.command("ensemble")
@handle_errors
def ensemble_command(
    experiments: Annotated[list[str], typer.Option("--experiment", "-e", help="A member experiment (repeatable).")],
    method: Annotated[str, typer.Option("--method", help="mean | geometric | rank | vote | stack (a second-level "
                                        "model on the members' OOF probabilities, nested score) | auto (the best "
                                        "nested score of: plain mean, fitted weights, a stacker; never below the "
                                        "plain mean).")] = "mean",
    stacker: Annotated[str, typer.Option("--stacker", help="With --method stack: logreg (multinomial logistic "
                                         "regression) | hgb (small gradient boosting).")] = "logreg",
    stack_log: Annotated[bool, typer.Option("--stack-log/--stack-probs", help="With --method stack: features are "
                                            "the members' log-probabilities (default) or probabilities.")] = True,
    weights: Annotated[str, typer.Option("--weights", help="auto (fitted on OOF) | equal | w1,w2,... (one per -e).")] = "auto",
    name: Annotated[str | None, typer.Option("--name", help="Submission name (default: members and method).")] = None,
    bias: Annotated[bool, typer.Option("--bias", help="Also fit per-class logit biases on OOF (e.g. for macro-F1).")] = False,
    oof_source: Annotated[str, typer.Option(
        "--oof-source", help="auto: each member's OOF made as its test predictions (re-predicted with its TTA, or "
        "training's OOF when it used none); tta: always re-predicted; plain: training's OOF (only without TTA).")] = "auto",
    tta: Annotated[str | None, typer.Option(
        "--tta", help="TTA for every member (default: the TTA its predictions on disk used, else its tta.transforms; "
        "auto is refused: run `comp predict -e NAME --tta auto` per member first).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weight search.")] = 0,
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Predict members whose predictions are missing or stale, fit the blend on matching OOF, write a validated submission."""
    from comp.api.workflows import ensemble
    from comp.core.layout import Layout

    ws = Layout.at(workspace)
    with RichProgress() as progress:
        used, result = ensemble(ws, experiments, name=name, method=method, weights=weights, bias=bias,
                                oof_source=oof_source, tta=tta, seed=seed, overrides=set_ or (), progress=progress,
                                stacker=stacker, stack_log=stack_log)
    for exp, how in used.items():
        console.print(f"{exp}: {how}", highlight=False)
    if result.get("auto"):
        tried = ", ".join(f"{c['method']}{'/' + c['weights'] if c.get('weights') else ''} {c['nested']:.5f}"
                          for c in result["auto"]["candidates"])
        chosen = result["auto"]["chosen"]
        console.print(f"--method auto chose {chosen['method']}{'/' + chosen['weights'] if chosen.get('weights') else ''}"
                      f" (nested scores: {tried}; the plain mean unless another beats it)", highlight=False)
    show(result)


def show(result: dict) -> None:
    import pandas as pd

    members = result["members"]
    if result["method"] == "stack":
        show_stack(result)
        return
    table = pd.DataFrame({"member": members, "weight": result["weights"],
                          "TTA": [result["tta"][m] for m in members],
                          "OOF from": [result["oof_source"][m] for m in members],
                          "oof": [result["member_oof"][m] for m in members]})
    print_table(table, title=f"members ({result['metric']}; scores on OOF made as each member's test predictions)")
    console.print(f"blend ({result['method']}{', bias' if result['bias'] else ''}): OOF {result['oof']:.5f} in-sample, "
                  f"nested {result['nested']:.5f} (weights fitted without the scored fold; in-sample per-fold mean "
                  f"{result['insample_fold_mean']:.5f})", highlight=False)
    if result.get("thresholds"):
        chosen = ", ".join(f"{o} {t:.2f}" for o, t in zip(result.get("outputs", []), result["thresholds"]))
        console.print(f"decision thresholds (fitted on the blend's OOF; nested in the estimate above): {chosen}",
                      highlight=False)
    console.print(f"wrote {result['csv']} and {result['json']}", highlight=False)


def show_stack(result: dict) -> None:
    import pandas as pd

    members = result["members"]
    table = pd.DataFrame({"member": members, "TTA": [result["tta"][m] for m in members],
                          "OOF from": [result["oof_source"][m] for m in members],
                          "oof": [result["member_oof"][m] for m in members]})
    print_table(table, title=f"members ({result['metric']}; scores on OOF made as each member's test predictions)")
    console.print(f"stack ({result['stacker']} on {result['stack_features']}): nested {result['nested']:.5f} (each fold "
                  f"predicted by a stacker fitted without it); in-sample {result['oof']:.5f} (final stacker on the rows "
                  "it was fitted on)", highlight=False)
    if result.get("thresholds"):
        chosen = ", ".join(f"{o} {t:.2f}" for o, t in zip(result.get("outputs", []), result["thresholds"]))
        console.print(f"decision thresholds (fitted on the blend's OOF; nested in the estimate above): {chosen}",
                      highlight=False)
    console.print(f"wrote {result['csv']} and {result['json']}", highlight=False)
