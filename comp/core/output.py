"""Where output goes: bars on a terminal, plain timed lines in a pipe or file, widgets in Jupyter.

Not a terminal (a pipe, a file, a notebook `!` cell): consoles never wrap and print no control
codes, and progress is a plain line at most every `log_every` seconds with images/s and the ETA
of the current bar and of the whole run. Every display implements comp.core.progress.Progress; the
terminal's bars are in comp.core._bars, the notebook's widgets in comp.core._widgets.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from comp.core.progress import Progress

T = TypeVar("T")
NO_WRAP_WIDTH = 100_000  # a console this wide never wraps a line (tables are sized to their content)
DEFAULT_LOG_EVERY = 30.0
_settings = {"log_every": float(os.environ.get("COMP_LOG_EVERY", DEFAULT_LOG_EVERY))}


def set_log_every(seconds: float | None) -> None:
    """Seconds between plain progress lines (the --log-every option)."""
    if seconds is not None:
        _settings["log_every"] = max(0.0, float(seconds))


def log_every() -> float:
    return _settings["log_every"]


def is_terminal(stream: TextIO | None = None) -> bool:
    """True when `stream` (default stderr) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a `!` subprocess, which is a pipe)."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return bool(get and type(get()).__name__ == "ZMQInteractiveShell")


def make_console(stderr: bool = False) -> Any:
    """A Rich console: as usual on a terminal; elsewhere no wrapping and no control codes."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if is_terminal(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=NO_WRAP_WIDTH, soft_wrap=True, no_color=True, highlight=False,
                   force_terminal=False, force_jupyter=False, emoji=False, legacy_windows=False)


def clock(seconds: float | None) -> str:
    """Seconds in comp's one time format: 4.2s, 58s, 1m02s, 1h05m; '-' when unknown."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


def batch_size(item: Any) -> int | None:
    """Images in a loader item ((images, target) with a batch dimension); None for anything else."""
    first = item[0] if isinstance(item, (tuple, list)) and item else None
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) >= 1 else None


@dataclass
class Bar:
    """One tracked iterable: counts, images seen, start time and live fields."""

    description: str
    total: int | None
    done: int = 0
    images: int = 0
    start: float = field(default_factory=time.perf_counter)
    fields: dict[str, Any] = field(default_factory=dict)

    def count(self, item: Any) -> None:
        """One more item done (a batch adds its images)."""
        self.done += 1
        self.images += batch_size(item) or 0

    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def rate(self) -> float | None:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if self.images and elapsed > 0 else None


class Nest:
    """Nested bars (folds > epochs > batches) and ETAs from the fraction of each level done."""

    def __init__(self) -> None:
        self.bars: list[Bar] = []

    def progress_from(self, level: int) -> float:
        """Fraction of bar `level` done, counting the partial progress of the bars inside it."""
        bar = self.bars[level]
        if not bar.total:
            return 0.0
        inner = self.progress_from(level + 1) if level + 1 < len(self.bars) else 0.0
        return min(1.0, (bar.done + inner) / bar.total)

    def eta(self, level: int) -> float | None:
        """Seconds left in bar `level` at the pace so far."""
        done = self.progress_from(level)
        elapsed = time.perf_counter() - self.bars[level].start
        return elapsed * (1 - done) / done if done > 0 else None

    def rate(self) -> float | None:
        """Images/s of the innermost bar that counts images."""
        for bar in reversed(self.bars):
            if bar.images:
                return bar.rate()
        return None

    def fold_level(self) -> int | None:
        """The bar of one fold's epochs ('fold N'), if any."""
        for i, bar in enumerate(self.bars):
            if bar.description.startswith("fold ") and "epoch" not in bar.description:
                return i
        return None


def fields_text(fields: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


class LineProgress(Progress):
    """Plain progress lines, at most one every `every` seconds, with images/s and ETAs; for pipes and files.

    stamp: start every line with the time (HH:MM:SS), as in a fold's train.log. hint: a first line, written when
    the display starts (e.g. how to get widgets).
    """

    def __init__(self, stream: TextIO | None = None, every: float | None = None, *, stamp: bool = False,
                 hint: str | None = None) -> None:
        self.stream = stream
        self.every = log_every() if every is None else every
        self.stamp, self.hint = stamp, hint
        self.nest = Nest()
        self.last = time.perf_counter()

    def __enter__(self) -> "LineProgress":
        if self.hint:
            self.write(self.hint)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._out().flush()

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def track(self, iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        bar = Bar(description, total)
        self.nest.bars.append(bar)
        try:
            for item in iterable:
                yield item
                bar.count(item)
                self._maybe_line()
        finally:
            self.nest.bars.remove(bar)

    def _maybe_line(self) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.write(self.status())

    def status(self) -> str:
        """One line: the innermost bar's count, live fields, images/s, the fold's and the whole run's ETA."""
        nest = self.nest
        if not nest.bars:
            return ""
        bar = nest.bars[-1]
        parts = [f"{bar.description}: {bar.done}/{bar.total if bar.total else '?'}"]
        if bar.fields:
            parts.append(fields_text(bar.fields))
        rate = nest.rate()
        if rate is not None:
            parts.append(f"{rate:.1f} img/s")
        fold = nest.fold_level()
        if fold is not None and fold > 0:
            parts.append(f"fold eta {clock(nest.eta(fold))}")
        parts.append(f"run eta {clock(nest.eta(0))}")
        return "  ".join(parts)

    def note(self, **fields: Any) -> None:
        if self.nest.bars:
            self.nest.bars[-1].fields.update(fields)

    def log(self, message: str) -> None:
        self.write(message)

    def write(self, line: str) -> None:
        out = self._out()
        if self.stamp:
            line = f"{time.strftime('%H:%M:%S')} {line}"
        out.write(line + "\n")
        out.flush()


class TeeProgress(Progress):
    """Two displays at once (the user's, and a fold's train.log)."""

    def __init__(self, first: Progress, second: Progress) -> None:
        self.first, self.second = first, second

    def track(self, iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        inner = self.second.track(iterable, total=total, description=description)
        yield from self.first.track(inner, total=total, description=description)

    def note(self, **fields: Any) -> None:
        self.first.note(**fields)
        self.second.note(**fields)

    def log(self, message: str) -> None:
        self.first.log(message)
        self.second.log(message)
