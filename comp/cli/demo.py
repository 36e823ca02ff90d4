"""`comp demo DIR`: a ready workspace on real bundled data, run end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from comp.cli import app
from comp.cli.common import RichProgress, console, handle_errors, load, print_table
from comp.data.tables import load_tables
from comp.demo import build_demo
from comp.folds import fold_balance, load_or_make_folds
from comp.metrics import get_metric
from comp.workspace import Workspace

MEMBERS = ("baseline", "effnet")


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


@app.command("demo")
@handle_errors
def demo_command(
    directory: Annotated[Path, typer.Argument(help="Folder to create the demo workspace in.")] = Path("demo"),
    force: Annotated[bool, typer.Option("--force", help="Rebuild the demo in an existing DIR (its outputs are replaced).")] = False,
    only_data: Annotated[bool, typer.Option("--only-data", help="Write the workspace and folds, train nothing.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs per fold (default: the demo's experiments).")] = None,
) -> None:
    """Build a workspace from scikit-learn's digits (photographed subjects, imbalanced) and run every stage.

    folds -> eda -> fold-train (two architectures) -> tune (short) -> predict with TTA ->
    ensemble (weights fitted on OOF, nested estimate) -> score against the hidden solution.
    """
    start = time.perf_counter()
    step("1. data: digits photographed as subjects")
    with RichProgress() as progress:
        data = build_demo(directory, force=force, progress=progress)
    console.print(f"{data.root}: {data.n_train} train images of {data.n_subjects} subjects, {data.n_test} test images; "
                  f"hidden solution at {data.solution}", highlight=False)
    ws, cfg = load(directory)
    step("2. folds: stratified group k-fold (no subject on both sides)")
    tables = load_tables(cfg, ws)
    made = load_or_make_folds(ws, tables, k=cfg.folds.k, seed=cfg.folds.seed, group_col=cfg.data.group_col,
                              stratify=cfg.folds.stratify, force=True)
    console.print(f"wrote {made.path}", highlight=False)
    print_table(fold_balance(made.folds).table, title="rows, groups and class counts per fold")
    if only_data:
        return
    run_stages(ws, data.solution, force=force, epochs=epochs)
    console.print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; open "
                  f"{ws.report_html('baseline')} and {ws.eda_dir / 'report.html'}", highlight=False)


def run_stages(ws: Workspace, solution: Path, *, force: bool, epochs: int | None) -> None:
    """Every stage after folds, on the demo's two experiments."""
    from comp.cli.ensemble import show as show_blend
    from comp.cli.train import show_scores
    from comp.eda import run_eda
    from comp.predict import predict_experiment
    from comp.submission import make_submission, score_submission
    from comp.train import fold_train
    from comp.tune import tune_experiment

    overrides = [f"train.epochs={epochs}"] if epochs else []
    step("3. eda: the data report")
    _, cfg = load(ws.root)
    with RichProgress() as progress:
        eda = run_eda(cfg, ws, progress=progress)
    console.print(f"wrote {eda.report}", highlight=False)
    cv = {}
    for i, exp in enumerate(MEMBERS):
        step(f"{4 + i}. fold-train -e {exp}")
        _, cfg = load(ws.root, exp, overrides)
        with RichProgress() as progress:
            cv[exp] = fold_train(cfg, ws, exp, force=force, progress=progress)
        show_scores(cv[exp])
    step("6. tune -e baseline (a short study: lr and label smoothing, one fold, two epochs a trial)")
    _, cfg = load(ws.root, "baseline")
    with RichProgress() as progress:
        tuned = tune_experiment(ws, cfg, exp="baseline", progress=progress)
    console.print(f"best {cfg.metric} {tuned.best_value} with {tuned.best_params}; tuned experiment: {tuned.tuned_yaml} "
                  "(train it with `comp fold-train -e baseline-tuned`)", highlight=False)
    step("7. predict with TTA (hflip), every fold of each experiment")
    for exp in MEMBERS:
        _, cfg = load(ws.root, exp, overrides)
        with RichProgress() as progress:
            predict_experiment(cfg, ws, exp, oof=True, progress=progress)
        console.print(f"wrote {ws.test_probs_csv(exp)}", highlight=False)
    step("8. ensemble: weights fitted on TTA out-of-fold predictions")
    _, cfg = load(ws.root)
    blend = make_submission(cfg, ws, list(MEMBERS), name="demo-blend", weights="auto", oof_source="tta")
    show_blend(blend)
    step("9. the hidden test set (what the leaderboard would say)")
    tables = load_tables(cfg, ws, check_images=False)
    hidden = score_submission(Path(blend["csv"]), solution, cfg.submission, classes=tables.classes,
                              metric=get_metric(cfg.metric))
    rows = [{"what": f"{exp} CV (mean of folds)", cfg.metric: cv[exp]["mean"]} for exp in MEMBERS]
    rows += [{"what": "blend OOF (in-sample weights)", cfg.metric: blend["oof"]},
             {"what": "blend nested estimate", cfg.metric: blend["nested"]},
             {"what": "blend on the hidden test set", cfg.metric: hidden}]
    print_table(pd.DataFrame(rows), title="honest estimates vs the hidden test score")
    console.print(f"submission: {blend['csv']} (manifest {blend['json']})", highlight=False)
