"""`comp doctor`: is this machine ready to train."""

from __future__ import annotations

from pathlib import Path

import typer

from comp.cli.app import app
from comp.cli.common import console, err_console, handle_errors


@app.command("doctor")
@handle_errors
def doctor_command() -> None:
    """Versions, the CUDA build vs each GPU (sm_XY in the build?), bf16, cuDNN, a tensor test per device.

    Exits 1 when a visible GPU cannot run torch or torch is installed twice.
    """
    from rich.table import Table

    from comp.run.doctor import diagnose

    report = diagnose()
    console.print(f"python {report.python} on {report.platform}")
    for name, version in report.versions.items():
        console.print(f"  {name:<24} {version}")
    console.print(f"torch CUDA build: {report.torch_cuda_build or 'none (CPU build)'}; cuDNN: {report.cudnn or 'n/a'}")
    console.print(f"CPU tensor test: {'ok' if report.cpu_tensor_ok else 'FAILED'}")
    if not report.cuda_available:
        console.print("CUDA: not available (training runs on the CPU)")
    else:
        console.print(f"CUDA: available; this torch has kernels for {', '.join(report.arch_list)}")
        table = Table(title="GPUs")
        for col in ("#", "name", "capability", "memory GiB", "arch in build", "bf16", "tensor test"):
            table.add_column(col)
        for g in report.gpus:
            table.add_row(str(g.index), g.name, g.capability, f"{g.memory_gib:.1f}",
                          "yes" if g.arch_supported else f"NO ({g.arch})", "yes" if g.bf16 else "no",
                          "ok" if g.tensor_ok else "FAILED")
        console.print(table)
    show_extras()
    show_pretrained(Path("."))
    problems = report.problems()
    for problem in problems:
        err_console.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print("[green]ready[/]")


def show_pretrained(workspace: Path, experiment: str = "baseline") -> None:
    """One line inside a workspace: can the experiment's pretrained weights be had here (hub cache or local)?"""
    from rich.markup import escape

    from comp.run.doctor import pretrained_check

    checked = pretrained_check(workspace, experiment)
    if checked is not None:
        ok, line = checked
        style = "green" if ok else "yellow"
        console.print(f"[{style}]{experiment} weights:[/] {escape(line)}", highlight=False, soft_wrap=True)


def show_extras() -> None:
    """One line per optional extra: installed, or the pip command that installs it."""
    from comp.run.doctor import EXTRAS, extras_installed

    console.print("optional extras:")
    for name, missing in extras_installed().items():
        state = "installed" if not missing else f"not installed (pip install 'comp[{name}]'; missing {', '.join(missing)})"
        console.print(f"  {name:<12} {state}  - {EXTRAS[name]}", highlight=False, soft_wrap=True, markup=False)
