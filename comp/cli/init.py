"""`comp init`: write comp.yaml, the data tables and experiments/baseline.yaml from a competition's data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from comp.cli.app import app
from comp.cli.common import WorkspaceOpt, console, handle_errors, print_table
from comp.core.errors import CompError

if TYPE_CHECKING:
    from comp.init import Plan, Written

PathOpt = Path | None


def pick_source(source: Path | None, train: Path | None) -> Path:
    if source is not None and train is not None and source.resolve() != train.resolve():
        raise CompError(f"got both SOURCE {source} and --train {train}; pass one of them")
    if source is None and train is None:
        raise CompError("nothing to read: pass the train CSV, the train folder or the data folder "
                        "(e.g. `comp init --from csv --train data/train.csv`)")
    return source if source is not None else train  # type: ignore[return-value]


def show(plan: Plan, done: Written) -> None:
    import pandas as pd

    if plan.guesses:
        rows = [(g.role, g.column or "-", g.how, ", ".join(g.alternatives[:4]) or "-") for g in plan.guesses]
        print_table(pd.DataFrame(rows, columns=["role", "column", "why", "alternatives"]),
                    title="columns (override with --id-col / --image-col / --label-col / --group-col)")
    for note in plan.notes:
        console.print(note, highlight=False)
    for skip in plan.skipped:
        console.print(f"[yellow]{skip}[/]", highlight=False)
    if plan.corrections:
        console.print(f"applied {len(plan.corrections)} corrections:")
        for c in plan.corrections:
            console.print(f"  {c.person}: {c.column} {c.old} -> {c.new}", highlight=False)
    for path in done.written:
        console.print(f"wrote {path}", highlight=False)
    for path in done.kept:
        console.print(f"kept {path} (it exists; delete it to get a fresh baseline)", highlight=False)
    kind = done.tables.task.kind
    what = {"multilabel": "tags", "regression": "output", "binary": "output (the positive probability)",
            "multitask": "head outputs"}.get(kind, "classes")
    console.print(f"{len(done.tables.train)} training images, task {kind}, {done.tables.n_classes} {what}, metric "
                  f"{done.config.metric}. Next: comp folds, then comp fold-train", highlight=False)


@app.command("init")
@handle_errors
def init_command(
    source: Annotated[PathOpt, typer.Argument(help="The train CSV (csv), train folder (folders) or data folder (mask).")] = None,
    form: Annotated[str | None, typer.Option("--from", help="csv | folders | mask (default: told from SOURCE).")] = None,
    train: Annotated[PathOpt, typer.Option("--train", help="Same as SOURCE.")] = None,
    test: Annotated[PathOpt, typer.Option("--test", help="Test CSV (csv) or flat test folder (folders).")] = None,
    sample: Annotated[PathOpt, typer.Option("--sample", help="Sample submission: the ids, order and columns to write.")] = None,
    image_root: Annotated[PathOpt, typer.Option("--image-root", help="csv: folder the image column is relative to.")] = None,
    id_col: Annotated[str | None, typer.Option("--id-col", help="csv: the id column (default: guessed).")] = None,
    image_col: Annotated[str | None, typer.Option("--image-col", help="csv: the image path column.")] = None,
    label_col: Annotated[str | None, typer.Option("--label-col", help="csv: the label column.")] = None,
    group_col: Annotated[str | None, typer.Option("--group-col", help="csv: the group column, or none.")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Competition metric (default: accuracy; mask: macro_f1).")] = None,
    task: Annotated[str | None, typer.Option(
        "--task", help="csv: multiclass | multilabel | binary | regression (default: proposed from the target).")] = None,
    heads: Annotated[bool, typer.Option(
        "--heads", help="mask: three heads (mask, gender, age) on one backbone, combined into the 18 classes.")] = False,
    age_bands: Annotated[str, typer.Option("--age-bands", help="mask: age band boundaries, e.g. 30,58.")] = "30,60",
    fix: Annotated[PathOpt, typer.Option("--fix", help="mask: corrections CSV with columns person, column, value.")] = None,
    out_train: Annotated[str | None, typer.Option(
        "--out-train", help="Generated train table, workspace-relative (default: data/train.csv).")] = None,
    out_test: Annotated[str | None, typer.Option(
        "--out-test", help="Generated test table (default: data/test.csv).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing comp.yaml and data tables.")] = False,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Write a validated workspace from a CSV, class folders (train/<class>/*.jpg) or the face-mask layout.

    \b
    comp init --from csv --train data/train.csv --test data/test.csv --sample data/sample_submission.csv
    comp init --from folders data/train --test data/test --sample data/sample_submission.csv
    comp init --from mask data/ --age-bands 30,58 --fix labels_fix.csv
    comp init --from mask data/ --heads    (three heads: mask, gender, age)
    comp init --from csv --train train.csv --task multilabel

    Writes comp.yaml, experiments/baseline.yaml (when absent) and, where the data needs them,
    data/train.csv and data/test.csv; never overwrites without --force.
    """
    from comp.init import FORMS, detect_form, init_csv, init_folders, init_mask, parse_age_bands, write_plan
    from comp.core.layout import Layout

    ws = Layout.at(workspace)
    src = pick_source(source, train)
    form = form or detect_form(src)
    if form not in FORMS:
        raise CompError(f"--from {form!r} is not a form; use one of {', '.join(FORMS)}")
    if task is not None and form != "csv":
        raise CompError(f"--task {task} applies to --from csv; --from {form} is multiclass"
                        + (" (or multitask with --heads)" if form == "mask" else ""))
    if heads and form != "mask":
        raise CompError(f"--heads applies to --from mask, not --from {form}")
    outs = {"out_train": out_train, "out_test": out_test}
    if form == "csv":
        plan = init_csv(src, ws, test_csv=test, image_root=image_root, id_col=id_col, image_col=image_col,
                        label_col=label_col, group_col=group_col, sample_csv=sample, metric=metric, task=task, **outs)
    elif form == "folders":
        plan = init_folders(src, ws, test_dir=test, sample_csv=sample, metric=metric or "accuracy", **outs)
    else:
        plan = init_mask(src, ws, age_bands=parse_age_bands(age_bands), fix=fix, heads=heads, **outs)
        if metric:
            plan = replace(plan, comp={**plan.comp, "metric": metric})
    show(plan, write_plan(ws, plan, force=force))
    from comp.cli.doctor import show_pretrained

    show_pretrained(ws.root)
