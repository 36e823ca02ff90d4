"""What every command shares: options, config loading, error display, progress bars."""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from comp.core.errors import CompError
from comp.core.output import LineProgress, is_terminal, make_console
from comp.core.progress import Progress

if TYPE_CHECKING:
    from comp.core.config import Config
    from comp.core.layout import Layout

T = TypeVar("T")
console = make_console()
err_console = make_console(stderr=True)

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


def load(workspace: Path, experiment: str = "baseline", overrides: list[str] | None = None) -> tuple[Layout, Config]:
    from comp.core.config import load_config  # imported when a command runs: `comp --help` stays fast
    from comp.core.layout import Layout

    ws = Layout.at(workspace)
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
    from comp.core.layout import WriteError

    verb = "writing" if isinstance(exc, WriteError) else "on"
    path = exc.filename or "a file in the workspace"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device {verb} {path}; free space and rerun (nothing already written was changed)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"permission denied {verb} {path}: the workspace is read-only? make it writable "
                "(or pass another --workspace) and rerun; nothing already written was changed")
    return None


class _RichLogHandler(logging.Handler):
    """comp's info lines go where the results go (log_console); warnings from any library go to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            err_console.print(f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True)
        elif record.name.startswith("comp"):
            log_console().print(record.getMessage(), highlight=False, soft_wrap=True, markup=False)


def log_console() -> Any:
    """Where log lines (epoch lines, comp's info) go: with the results on stdout when stdout is not a terminal
    (`comp fold-train > log` keeps every epoch), else on stderr, above the bars."""
    return console if not is_terminal(sys.stdout) else err_console


def RichProgress() -> Progress:
    """The progress display for this place: bars on a terminal, timed plain lines in a pipe or file (--log-every).

    Not a terminal: progress lines and log lines go to stdout with the results when stdout is not a terminal either
    (one stream, in order: a log file, a notebook `!` cell), else to stderr.
    """
    if is_terminal(sys.stderr):
        from comp.core._bars import BarProgress  # Rich's progress module loads only where bars are drawn

        return BarProgress(err_console, log_console=None if is_terminal(sys.stdout) else console)
    return LineProgress(stream=None if is_terminal(sys.stdout) else sys.stdout)


def rule(title: str, *, err: bool = False) -> None:
    """A heading line: a Rich rule on a terminal, '== title ==' elsewhere (never a 100,000-character line)."""
    target = err_console if err else console
    if is_terminal(sys.stderr if err else sys.stdout):
        target.rule(title)
    else:
        target.print(f"== {title} ==")


def print_table(frame: Any, title: str = "", float_digits: int = 4) -> None:
    """A pandas DataFrame as a rich table on stdout."""
    table = Table(title=title or None, show_lines=False)
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.{float_digits}f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)


def sigterm_as_interrupt() -> threading.Event:
    """SIGTERM (kill, timeout, a cluster's preemption) ends the run like Ctrl-C does; the event says it came."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    return stop
