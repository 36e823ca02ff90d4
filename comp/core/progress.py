"""How library code reports progress without printing: the CLI passes a drawing implementation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Progress:
    """Silent progress. Library functions take one of these; the CLI passes one that draws bars."""

    def track(self, iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Iterate over `iterable`, showing a bar for it."""
        yield from iterable

    def note(self, **fields: Any) -> None:
        """Show live fields (loss=0.41, f1=0.73) on the innermost bar."""

    def log(self, message: str) -> None:
        """A line above the bars (e.g. an epoch summary)."""


SILENT = Progress()
