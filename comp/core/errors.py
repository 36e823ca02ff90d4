"""The one exception type a user is meant to read."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CompError(Exception):
    """A problem the user can act on: what was wrong, the value received, what to do."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The choices nearest to `name` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' did you mean X?' or '' when nothing is close."""
    hits = closest(name, choices, n=1)
    return f"; did you mean {hits[0]}?" if hits else ""
