"""`comp eda`: a data report (plots + numbers) that answers the questions before training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import RichProgress, SetOpt, WorkspaceOpt, console, handle_errors, load, print_table


@app.command("eda")
@handle_errors
def eda_command(
    samples: Annotated[int, typer.Option("--samples", help="Sample images per class in the grid.")] = 8,
    threshold: Annotated[
        int, typer.Option("--threshold", help="Near-duplicate: Hamming distance of 64-bit dHashes at most this.")
    ] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seed for choosing the sample images.")] = 0,
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Write eda/report.html, eda/summary.json and PNGs: classes, groups, sizes, colour, duplicates, folds."""
    from comp.eda import run_eda  # matplotlib and the image stack load only for this command

    ws, cfg = load(workspace, "baseline", set_)
    with RichProgress() as progress:
        result = run_eda(cfg, ws, samples=samples, threshold=threshold, seed=seed, progress=progress)
    print_summary(result.summary)
    console.print(f"wrote {result.report} (numbers in {result.report.with_name('summary.json')})")


def print_summary(s: dict) -> None:
    """A few lines and a class table on the console; the report holds the rest."""
    import pandas as pd

    from comp.eda.stats import task_lines

    c = s["classes"]
    kind = (s.get("task") or {}).get("kind", "multiclass")
    what = {"multilabel": "tag", "regression": "target bin", "multitask": "combined label"}.get(kind, "class")
    plural = "classes" if what == "class" else what + "s"
    console.print(f"{s['n_train']} training images, {s['n_test']} test images, {len(c['counts'])} {plural}; "
                  f"imbalance ratio {c['imbalance_ratio']:.3g} ({c['largest']} / {c['smallest']})", highlight=False)
    for line in task_lines(s.get("task") or {"kind": kind}):
        console.print(line, highlight=False)
    frame = pd.DataFrame({what: list(c["counts"]), "images": list(c["counts"].values()),
                          "share": list(c["shares"].values())})
    print_table(frame.head(30), title=f"{what} distribution" + (" (first 30)" if len(frame) > 30 else ""))
    if s["groups"]:
        g = s["groups"]
        console.print(f"{g['n_groups']} groups; images per group median {g['images_per_group']['median']:.3g}, "
                      f"{g['n_groups_multi_label']} groups with several labels")
    for key in ("train", "test"):
        st = s["images"][key]
        if st:
            console.print(f"{key}: dominant size {st['dominant_size']} ({st['dominant_size_share']:.0%}), "
                          f"modes {st['modes']}, formats {st['formats']}")
    d = s["duplicates"]
    inner = (f"{d['n_cross_group']} across groups" if s["groups"] else
             f"{d['n_train_same_label']} within train (no group column: they may split across folds)")
    console.print(f"near-duplicates (dHash <= {d['threshold']}, confirmed by pixel correlation; "
                  f"{d.get('n_unconfirmed', 0)} look-alikes rejected): {d['n_train_test']} train/test, "
                  f"{d['n_label_conflicts']} with different labels, {inner}")
    counts = s["problems"]["counts"]
    if counts:
        console.print("files: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for flag in s["images"]["flags"]:
        console.print(f"[yellow]warning:[/] {flag}", highlight=False)
