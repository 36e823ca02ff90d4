"""Progress in a Jupyter cell: ipywidgets bars that end as plain text, so a saved notebook holds no dead widgets.

A notebook run headless (Kaggle's "Save & Run All", papermill, nbconvert) keeps each output as it was last
displayed. A widget left there is stored as its text form (`HBox(children=(IntProgress(value=207, max=208)...`),
so every bar here is replaced, when it ends, by a text line (the outermost) or nothing (the inner ones).
"""

from __future__ import annotations

import html
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from comp.core.output import Bar, Nest, clock, fields_text
from comp.core.progress import Progress

T = TypeVar("T")


def finished_text(state: Bar, elapsed: float) -> str:
    """What an ended bar leaves behind: 'folds: 5/5 in 1m02s, 812 img/s'."""
    rate = state.images / elapsed if state.images and elapsed > 0 else None
    speed = f", {rate:.0f} img/s" if rate else ""
    return f"{state.description}: {state.done}/{state.total or state.done} in {clock(elapsed)}{speed}"


class WidgetProgress(Progress):
    """ipywidgets progress bars in a Jupyter cell (the full description beside each bar); log lines below them."""

    def __init__(self) -> None:
        self.nest = Nest()

    def __enter__(self) -> "WidgetProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def track(self, iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        import time

        import ipywidgets as widgets
        from IPython.display import display

        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        bar = widgets.IntProgress(min=0, max=max(1, total or 1))
        title, label = widgets.HTML(html.escape(description)), widgets.HTML()
        box = widgets.HBox([title, bar, label])
        handle = display(box, display_id=True)
        state, level = Bar(description, total), len(self.nest.bars)
        self.nest.bars.append(state)
        try:
            for item in iterable:
                yield item
                state.count(item)
                bar.value = state.done
                label.value = html.escape(self._label(state))
        finally:
            self.nest.bars.remove(state)
            bar.value = bar.max  # a bar that ended early (early stopping) ends full, not at 207/208
            text = finished_text(state, time.perf_counter() - state.start) if level == 0 else ""
            if handle is not None:
                handle.update({"text/plain": text}, raw=True)
            box.close()

    def _label(self, state: Bar) -> str:
        rate = state.rate()
        speed = f"{rate:.0f} img/s  " if rate else ""
        return f"{state.done}/{state.total or '?'}  {speed}run eta {clock(self.nest.eta(0))}  {fields_text(state.fields)}"

    def note(self, **fields: Any) -> None:
        if self.nest.bars:
            self.nest.bars[-1].fields.update(fields)

    def log(self, message: str) -> None:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
