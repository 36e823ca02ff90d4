"""What every command shares: options, config loading, error display, progress bars."""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress as RichBars,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from comp.config import Config, load_config
from comp.errors import CompError
from comp.progress import Progress
from comp.workspace import Workspace, WriteError

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

WorkspaceOpt = Annotated[
    Path, typer.Option("--workspace", "-w", help="Workspace folder (holds comp.yaml).", show_default=True)
]
ExperimentOpt = Annotated[
    str, typer.Option("--experiment", "-e", help="Experiment name: experiments/<NAME>.yaml (may be absent for baseline).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set train.lr=1e-3 (repeatable; value parsed as YAML)."),
]


def load(workspace: Path, experiment: str = "baseline", overrides: list[str] | None = None) -> tuple[Workspace, Config]:
    ws = Workspace.at(workspace)
    return ws, load_config(ws.root, experiment, tuple(overrides or ()))


def handle_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Show a CompError (or a read-only / full disk) as one red line and exit 2; COMP_DEBUG=1 shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_RichLogHandler()])
        try:
            return fn(*args, **kwargs)
        except (CompError, OSError) as exc:
            message = str(exc) if isinstance(exc, CompError) else os_error_message(exc)
            if message is None or os.environ.get("COMP_DEBUG") == "1":
                raise  # a bug (or a traceback asked for): show it
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def os_error_message(exc: OSError) -> str | None:
    """One line for the OS errors a user can cause and fix (no permission, read-only, disk full); None for others."""
    verb = "writing" if isinstance(exc, WriteError) else "on"
    path = exc.filename or "a file in the workspace"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device {verb} {path}; free space and rerun (nothing already written was changed)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"permission denied {verb} {path}: the workspace is read-only? make it writable "
                "(or pass another --workspace) and rerun; nothing already written was changed")
    return None


class _RichLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            err_console.print(f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True)
        elif record.name.startswith("comp"):
            err_console.print(record.getMessage(), highlight=False, soft_wrap=True, markup=False)


class RichProgress(Progress):
    """Progress bars on stderr with live fields (loss, metric) and ETA."""

    def __init__(self) -> None:
        self.bars = RichBars(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            transient=False,
        )
        self.tasks: list[int] = []

    def __enter__(self) -> "RichProgress":
        self.bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.stop()

    def track(self, iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        task = self.bars.add_task(description, total=total, info="")
        self.tasks.append(task)
        try:
            for item in iterable:
                yield item
                self.bars.advance(task)
        finally:
            self.tasks.remove(task)
            self.bars.remove_task(task)

    def note(self, **fields: Any) -> None:
        if self.tasks:
            info = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            self.bars.update(self.tasks[-1], info=info)

    def log(self, message: str) -> None:
        self.bars.console.print(message, highlight=False, markup=False)


def print_table(frame: Any, title: str = "", float_digits: int = 4) -> None:
    """A pandas DataFrame as a rich table on stdout."""
    table = Table(title=title or None, show_lines=False)
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.{float_digits}f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
