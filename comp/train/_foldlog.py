"""Each fold's own log: experiments/<exp>/fold{i}/train.log, in sequential runs as in `--devices` children."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from comp.core.output import LineProgress, TeeProgress
from comp.core.progress import Progress


@contextmanager
def fold_log(path: Path, progress: Progress, *, enabled: bool = True) -> Iterator[Progress]:
    """While training a fold: its log lines, epoch lines and timed progress lines also go to `path` (appended)."""
    if not enabled:
        yield progress
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(['comp', *sys.argv[1:]])}\n")
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger = logging.getLogger("comp")
        level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            yield TeeProgress(progress, LineProgress(stream=fh, stamp=True))  # every line carries its time
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
