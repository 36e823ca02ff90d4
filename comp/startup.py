"""Start-up of a `comp` process: the cyclic garbage collector waits while the heavy libraries import.

Importing torch, timm, torchvision, pandas, albumentations and matplotlib creates about a million
Python objects (functions, classes, dicts) that live as long as the process. With the collector's
defaults (a collection every 700 new objects, a full one every 100 of those) CPython walks that
growing heap again and again while it imports: about a second of a command's start-up on a
2-core machine, none of which frees anything. So the `comp` command raises the thresholds first
(`pause_collector`), and a command calls `imports_done` once its libraries are in: the thresholds
come back and the import-time objects are frozen (`gc.freeze`), so the later full collections of a
long training run skip them too.

Only the command does this, in its own fresh process: a notebook or a test that imports comp keeps
its collector exactly as it was (`imports_done` does nothing there).
"""

from __future__ import annotations

import gc

# A collection of the youngest generation after 100,000 new objects instead of 700: the collector still runs
# (a command that never calls imports_done holds at most that much cyclic garbage at a time), but the few
# dozen young collections of an import phase never promote enough for a full one.
PAUSED_THRESHOLDS = (100_000, 50, 50)

_saved: tuple[int, int, int] | None = None


def pause_collector() -> None:
    """Raise the collector's thresholds until `imports_done` (the `comp` command's first step)."""
    global _saved
    if _saved is None and gc.isenabled():
        _saved = gc.get_threshold()
        gc.set_threshold(*PAUSED_THRESHOLDS)


def imports_done() -> None:
    """Freeze what the imports created and give the collector its thresholds back; a no-op unless paused."""
    global _saved
    if _saved is None:
        return
    gc.freeze()
    gc.set_threshold(*_saved)
    _saved = None
