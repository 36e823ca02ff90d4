"""The start-up work of `comp fold-train` that needs no torch, done by a second process while this one imports torch.

A training process spends its first seconds importing torch and timm, on one core. What the first fold-train
does before it can train needs neither: reading the tables, decoding every image once (the check for corrupt
files and the decoded-image cache, comp.data.checked) and making the folds file (comp.folds). `start` runs that
in a child process on another core meanwhile; `Prefetch.finish`, called once torch is imported, waits for it and
passes its log lines on. The child writes only what the training process would write itself, with the same
atomic writes and locks, so the training process then finds the cache and the folds file ready and reads them
(its own checks run as always). When the child fails for any reason, the training process does the work itself
and reports any error exactly as it would have: the child never decides anything.

Large image sets (more than PREFETCH_IMAGES rows without a valid cache) are cached by the training process
itself, with its progress bar: the child has at most the few seconds of the torch import to win, and a long
cache build out of sight would look like a hang.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comp.config import Config

log = logging.getLogger("comp.prefetch")

PREFETCH_IMAGES = 5000  # ~3-4 s of decoding small files: about what the torch import lasts


def wanted(cfg: Config) -> bool:
    """Worth a child process: torch not imported yet (a CLI run, not a notebook), a second core, one process
    (not a torchrun rank), and COMP_PREFETCH not set to 0."""
    return ("torch" not in sys.modules and (os.cpu_count() or 1) >= 2 and os.environ.get("COMP_PREFETCH", "1") != "0"
            and int(os.environ.get("WORLD_SIZE", "1")) == 1)


@dataclass
class Prefetch:
    proc: subprocess.Popen

    def finish(self) -> bool:
        """Wait for the child; replay its log records here. True when it finished its work."""
        out, err = self.proc.communicate()
        for line in out.splitlines():
            try:
                record = json.loads(line)
                logging.getLogger(record["name"]).log(int(record["level"]), "%s", record["message"])
            except (ValueError, KeyError, TypeError):
                continue
        if self.proc.returncode != 0:
            last = (err.strip().splitlines() or [f"exit {self.proc.returncode}"])[-1]
            log.debug("start-up helper stopped (%s); this process checks the images and makes the folds", last)
            return False
        return True


def start(root: Path, cfg: Config, *, check: bool = True, max_images: int = PREFETCH_IMAGES) -> Prefetch | None:
    """The child process for `cfg` in workspace `root`, or None when it is not worth one (`wanted`, unless not
    `check`). max_images: cache only when at most this many images lack a valid cache."""
    if check and not wanted(cfg):
        return None
    text = cfg.model_dump_json()
    if type(cfg).model_validate_json(text) != cfg:  # the child must work on exactly this config, or not at all
        log.debug("no start-up helper: the config does not survive JSON")
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "comp.prefetch", str(root), str(max_images)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write(text)  # stdin, not argv: a config may hold a storage URL with a password
        proc.stdin.close()
        proc.stdin = None  # written and closed: communicate() must not flush it again
    except OSError as exc:  # no process to spare: this process does the work as before
        log.debug("no start-up helper: %s", exc)
        return None
    return Prefetch(proc)


class _JsonLines(logging.Handler):
    """The child's log records, one JSON object per line on its stdout (the pipe `Prefetch.finish` reads)."""

    def emit(self, record: logging.LogRecord) -> None:
        line = json.dumps({"name": record.name, "level": record.levelno, "message": record.getMessage()})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run(root: Path, cfg: Config, max_images: int = PREFETCH_IMAGES) -> None:
    """The child's work: the tables, the image check + cache (unless large and not cached), the folds file."""
    from comp.data.cache import is_cached
    from comp.data.checked import check_and_cache, image_frames
    from comp.data.tables import load_tables
    from comp.folds import ensure_folds
    from comp.workspace import Workspace

    ws = Workspace.at(root)
    tables = load_tables(cfg, ws, check_images=False)
    todo = [(frame, name) for frame, name in image_frames(tables) if not is_cached(frame, cfg, ws)]
    if sum(len(frame) for frame, _ in todo) <= max_images:
        for frame, name in todo:
            check_and_cache(frame, cfg, ws, name)
    ensure_folds(ws, tables, cfg)


def main() -> None:
    from comp.startup import pause_collector

    pause_collector()  # a short-lived process that mostly imports (comp.startup)
    from comp.config import Config

    handler = _JsonLines()
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    run(Path(sys.argv[1]), Config.model_validate_json(sys.stdin.read()), int(sys.argv[2]))


if __name__ == "__main__":
    main()
