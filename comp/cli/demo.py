"""`comp demo DIR`: a ready workspace on real bundled data, run end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from comp.cli.app import app
from comp.cli.common import RichProgress, console, handle_errors, load, print_table, rule

if TYPE_CHECKING:
    from comp.core.layout import Layout

MEMBERS = ("baseline", "effnet")


def step(title: str) -> None:
    rule(title)


@app.command("demo")
@handle_errors
def demo_command(
    directory: Annotated[Path, typer.Argument(help="Folder to create the demo workspace in.")] = Path("demo"),
    force: Annotated[bool, typer.Option("--force", help="Rebuild the demo in an existing DIR (its outputs are replaced).")] = False,
    only_data: Annotated[bool, typer.Option("--only-data", help="Write the workspace and folds, train nothing.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs per fold (default: the demo's experiments).")] = None,
    task: Annotated[str, typer.Option(
        "--task", help="multiclass (the digit) | multilabel (two digits side by side) | regression (the digit's value) "
                       "| multitask (parity, >= 5, mod 3 heads) | binary (even?).")] = "multiclass",
) -> None:
    """Build a workspace from scikit-learn's digits (photographed subjects, imbalanced) and run every stage.

    folds -> eda -> fold-train (two architectures) -> tune (short) -> predict with TTA ->
    ensemble (weights fitted on OOF, nested estimate) -> score against the hidden solution.
    --task builds the same digits as another kind of competition (multilabel, regression, multitask, binary).
    """
    from comp.data.tables import load_tables
    from comp.init.demo import TASK_KINDS, build_demo, build_task_demo
    from comp.core.errors import CompError
    from comp.data.folds import fold_balance, fold_summary, fold_summary_title, load_or_make_folds

    if task not in TASK_KINDS:
        raise CompError(f"--task {task!r} is not a demo task; use one of: {', '.join(TASK_KINDS)}")
    start = time.perf_counter()
    step("1. data: digits photographed as subjects" + ("" if task == "multiclass" else f" ({task})"))
    with RichProgress() as progress:
        if task == "multiclass":
            data = build_demo(directory, force=force, progress=progress)
        else:
            data = build_task_demo(directory, task, force=force, progress=progress)
    console.print(f"{data.root}: {data.n_train} train images of {data.n_subjects} subjects, {data.n_test} test images; "
                  f"hidden solution at {data.solution}", highlight=False)
    ws, cfg = load(directory)
    step("2. folds: stratified group k-fold (no subject on both sides)")
    tables = load_tables(cfg, ws)
    made = load_or_make_folds(ws, tables, k=cfg.folds.k, seed=cfg.folds.seed, group_col=cfg.data.group_col,
                              stratify=cfg.folds.stratify, force=True)
    console.print(f"wrote {made.path}", highlight=False)
    if task == "multiclass":
        print_table(fold_balance(made.folds).table, title="rows, groups and class counts per fold")
    else:
        print_table(fold_summary(tables, made.fold_of(tables.train)).table, title=fold_summary_title(task))
    if only_data:
        return
    run_stages(ws, data.solution, force=force, epochs=epochs)
    console.print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; open "
                  f"{ws.report_html('baseline')} and {ws.eda_dir / 'report.html'}", highlight=False)


def run_stages(ws: Layout, solution: Path, *, force: bool, epochs: int | None) -> None:
    """Every stage after folds, on the demo's two experiments (comp.api.workflows runs them; this prints)."""
    from comp.api.workflows import run_demo_stages

    result = run_demo_stages(ws, solution, force=force, epochs=epochs, progress=RichProgress, step=step, show=_show)
    print_table(result.estimates, title="honest estimates vs the hidden test score")
    console.print(f"submission: {result.blend['csv']} (manifest {result.blend['json']})", highlight=False)


def _show(kind: str, value: object) -> None:
    """Print what a demo stage returned."""
    from comp.cli.ensemble import show as show_blend
    from comp.cli.train import show_scores

    if kind == "eda":
        console.print(f"wrote {value.report}", highlight=False)  # type: ignore[attr-defined]
    elif kind == "scores":
        show_scores(value)  # type: ignore[arg-type]
    elif kind == "tuned":
        console.print(f"best {value.best_value} with {value.best_params}; tuned experiment: {value.tuned_yaml} "  # type: ignore[attr-defined]
                      "(train it with `comp fold-train -e baseline-tuned`)", highlight=False)
    elif kind == "predicted":
        exp, summary = value  # type: ignore[misc]
        auto = summary.get("tta_auto") or {}
        why = (f" (chosen on OOF: {auto['metric']} {auto['scores'][summary['tta']]:.4f} in-sample, nested "
               f"{auto['nested']:.4f})" if auto else "")
        console.print(f"wrote {exp}: {summary['test_rows']} test rows, TTA {summary['tta']}{why}", highlight=False)
    elif kind == "blend":
        show_blend(value)  # type: ignore[arg-type]
