"""`comp export`: an offline inference bundle (weights, configs, blend, predict.py, notebook) that reproduces a submission."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from comp.cli.app import app
from comp.cli.common import SetOpt, WorkspaceOpt, console, handle_errors, load


@app.command("export")
@handle_errors
def export_command(
    name: Annotated[str, typer.Argument(help="A submission (submissions/NAME.json) or a trained experiment.")],
    to: Annotated[Path, typer.Option("--to", help="The bundle folder to write (empty, or a previous bundle with --force).")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Also write each fold as ONNX, checked with onnxruntime (needs comp[export]).")] = False,
    check: Annotated[int, typer.Option("--check", help="Test images the bundle predicts at export to prove it matches test.csv (0: skip).")] = 8,
    dataset_id: Annotated[str | None, typer.Option("--dataset-id", help="OWNER/SLUG of the Kaggle dataset (dataset-metadata.json).")] = None,
    images: Annotated[str | None, typer.Option("--notebook-images", help="Test image folder in the notebook (default /kaggle/input/<competition>/test).")] = None,
    csv: Annotated[str | None, typer.Option("--notebook-csv", help="Test CSV in the notebook (default: the sample submission under /kaggle/input/<competition>/).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a previous bundle in --to.")] = False,
    workspace: WorkspaceOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Write a folder that reproduces NAME offline: python predict.py --images DIR --csv test.csv --out submission.csv."""
    from comp.export import ExportOptions, export

    ws, cfg = load(workspace, "baseline", set_)
    options = ExportOptions(onnx=onnx, force=force, check=check, dataset_id=dataset_id, notebook_images=images,
                            notebook_csv=csv)
    result = export(cfg, ws, name, to, options)
    console.print(f"exported {result['kind']} {name!r} ({', '.join(result['members'])}) to {result['out']}: "
                  f"{len(result['files'])} files")
    if result["image_check"]:
        worst = max(result["image_check"]["max_abs_diff"].values())
        console.print(f"checked: predict.py matches test.csv on {result['image_check']['images']} test images "
                      f"(max abs difference {worst:.2g}), and the blend reproduces the submission")
    if result["onnx_max_abs_diff"] is not None:
        console.print(f"ONNX: onnxruntime matches torch (max abs probability difference {result['onnx_max_abs_diff']:.2g})")
    if dataset_id is None:
        console.print("dataset-metadata.json has a placeholder owner: pass --dataset-id OWNER/SLUG or edit its id")
    console.print(f"run it: python {result['out']}/predict.py --images DIR --csv test.csv --out submission.csv; "
                  f"upload it: kaggle datasets create -p {result['out']}")
