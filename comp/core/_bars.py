"""Rich progress bars for a terminal: every bar's ETA from the nest of bars, columns dropped to fit the width."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBars, ProgressColumn, Task, TextColumn
from rich.table import Column, Table
from rich.text import Text

from comp.core.output import Bar, Nest, clock, fields_text, make_console
from comp.core.progress import Progress

T = TypeVar("T")
MIN_BAR, MAX_BAR = 10, 40
DROP_ORDER = ("info", "elapsed", "speed")  # what goes first when a line would not fit the terminal


class ClockColumn(ProgressColumn):
    """Elapsed time, or the ETA the nest of bars computed (field `eta`), in comp's one time format (58s, 1m02s)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        if self.kind == "elapsed":
            return Text(clock(task.elapsed or 0.0), style="progress.elapsed")
        return Text(f"eta {task.fields.get('eta', '-')}", style="progress.remaining")


class FittingBars(RichBars):
    """Rich's Progress whose rows never wrap: at a narrow terminal the optional columns go, then the bar shrinks."""

    def __init__(self, console: Console, *, redirect_stdout: bool = True) -> None:
        self.bar = BarColumn(bar_width=MAX_BAR)
        self.named: dict[str, ProgressColumn] = {
            "description": TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
            "bar": self.bar, "count": MofNCompleteColumn(table_column=Column(no_wrap=True)),
            "elapsed": ClockColumn("elapsed"), "eta": ClockColumn("eta"),
            "speed": TextColumn("{task.fields[speed]}", table_column=Column(no_wrap=True)),
            "info": TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True)),
        }
        super().__init__(*self.named.values(), console=console, transient=False, redirect_stdout=redirect_stdout,
                         redirect_stderr=False)

    def fitted_columns(self, tasks: list[Task]) -> list[ProgressColumn]:
        """The columns that fit the console's width for these rows, the bar sized to what is left."""
        width = self.console.width
        keep = dict(self.named)
        widths = {name: self._width(col, tasks) for name, col in keep.items() if col is not self.bar}

        def needed() -> int:  # the other columns, one space between columns, and the smallest bar
            return sum(widths[n] for n in keep if n != "bar") + len(keep) - 1 + MIN_BAR

        for name in DROP_ORDER:
            if needed() <= width:
                break
            keep.pop(name)
        self.bar.bar_width = max(MIN_BAR, min(MAX_BAR, width - needed() + MIN_BAR))
        return list(keep.values())

    def _width(self, column: ProgressColumn, tasks: list[Task]) -> int:
        return max((Measurement.get(self.console, self.console.options, column(t)).maximum for t in tasks), default=0)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        shown = [t for t in tasks if t.visible]
        if not hasattr(self, "live"):  # Rich renders once while it builds its Live display
            return super().make_tasks_table(shown)
        columns = self.fitted_columns(shown)
        table = Table.grid(*(c.get_table_column().copy() for c in columns), padding=(0, 1), expand=self.expand)
        for task in shown:
            table.add_row(*(column(task) for column in columns))
        return table


class BarProgress(Progress):
    """Rich bars on a terminal: count, elapsed, ETA (every bar's, from the work done inside it), images/s, fields.

    log_console: where log lines (epoch lines) go; None prints them above the bars. The CLI passes the stdout
    console when stdout is not a terminal, so `comp fold-train > log` keeps every epoch line.
    """

    def __init__(self, console: Any = None, *, log_console: Any = None) -> None:
        self.bars = FittingBars(console if console is not None else make_console(stderr=True),
                                redirect_stdout=log_console is None)
        self.log_console = log_console
        self.nest = Nest()
        self.tasks: list[int] = []

    def __enter__(self) -> "BarProgress":
        self.bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.stop()

    def track(self, iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        task = self.bars.add_task(description, total=total, info="", speed="", eta="-")
        bar = Bar(description, total)
        self.tasks.append(task)
        self.nest.bars.append(bar)
        try:
            for item in iterable:
                yield item
                bar.count(item)
                self.bars.update(task, advance=1, speed=f"{bar.rate():.0f} img/s" if bar.images else "")
                self._etas()
        finally:
            self.tasks.remove(task)
            self.nest.bars.remove(bar)
            self.bars.remove_task(task)

    def _etas(self) -> None:
        """Every bar's ETA from the fraction done, its inner bars' partial progress included: the folds bar has one
        from the first batch on, not only once a fold ends."""
        for level, task in enumerate(self.tasks):
            self.bars.update(task, eta=clock(self.nest.eta(level)))

    def note(self, **fields: Any) -> None:
        if self.tasks:
            self.bars.update(self.tasks[-1], info=fields_text(fields))

    def log(self, message: str) -> None:
        target = self.log_console if self.log_console is not None else self.bars.console
        target.print(message, highlight=False, markup=False, soft_wrap=True)
