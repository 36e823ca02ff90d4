"""`--force` without data loss: an experiment's previous outputs are moved aside, not deleted, until the new run has
trained an epoch; a run that stops before that puts them back.

The outputs go to experiments/<exp>/.replaced-<host>-<pid>/ (one rename per file or folder, on the same disk). The
process that moved them settles them when its run ends (or as soon as an epoch finished): deleted once a fold of the
new run has a history.csv, else restored. A folder left by a process that was killed is settled by the next run on
that host.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from comp.core.locks import pid_alive

log = logging.getLogger("comp.core.replace")

# the tuning study and the pseudo table (`comp pseudo`) are not fold-train outputs; .lock may be held
KEEP_ON_FORCE = ("tune.journal", "tune", ".lock", "pseudo.csv", "pseudo.json")
ASIDE_PREFIX = ".replaced-"


def aside_dir(folder: Path) -> Path:
    """Where this process moves `folder`'s outputs."""
    return folder / f"{ASIDE_PREFIX}{socket.gethostname()}-{os.getpid()}"


def outputs(folder: Path) -> list[Path]:
    """The experiment folder's fold-train outputs: everything but KEEP_ON_FORCE and the folders set aside."""
    return [c for c in folder.iterdir() if c.name not in KEEP_ON_FORCE and not c.name.startswith(ASIDE_PREFIX)]


def set_aside(folder: Path) -> Path | None:
    """Move `folder`'s outputs into aside_dir(folder); the aside folder, or None when there was nothing to move."""
    if not folder.is_dir():
        return None
    children = outputs(folder)
    if not children:
        return None
    aside = aside_dir(folder)
    if aside.exists():  # an earlier run of this process (the Python API) that was not settled
        settle(folder, aside)
    aside.mkdir()
    for child in children:
        os.replace(child, aside / child.name)
    log.info("--force: the previous outputs of %s are in %s until the new run trains an epoch", folder, aside.name)
    return aside


def trained_any(folder: Path) -> bool:
    """Has a run finished an epoch in `folder` (a history.csv in one of its fold folders or their seed folders)?"""
    return any(True for d in folder.glob("fold*") if d.is_dir() for _ in d.rglob("history.csv"))


def settle(folder: Path, aside: Path) -> None:
    """Delete the outputs set aside in `aside` when the new run trained an epoch in `folder`, else put them back."""
    if trained_any(folder):
        shutil.rmtree(aside)
        log.info("--force: deleted the previous outputs of %s", folder)
        return
    for child in outputs(folder):  # what the new run made before it stopped: its config.yaml, fold logs
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for child in aside.iterdir():
        os.replace(child, folder / child.name)
    aside.rmdir()
    log.warning("the new run stopped before its first epoch: the previous outputs of %s are back", folder)


def stale_asides(folder: Path) -> list[Path]:
    """Folders set aside by processes of this host that are no longer running (killed before they settled)."""
    host, found = socket.gethostname(), []
    for path in folder.glob(f"{ASIDE_PREFIX}*") if folder.is_dir() else ():
        owner, _, pid = path.name[len(ASIDE_PREFIX):].rpartition("-")
        if owner == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid), None):
            found.append(path)
    return found


@contextmanager
def replacing(folder: Path) -> Iterator[Callable[[], None]]:
    """Settle what this process sets aside in `folder` when the block ends (and stale ones when it starts).

    Yields `trained`: call it after an epoch finished, to delete the old outputs at once.
    """
    for stale in stale_asides(folder):
        settle(folder, stale)

    def trained() -> None:
        aside = aside_dir(folder)
        if aside.is_dir() and trained_any(folder):
            settle(folder, aside)

    try:
        yield trained
    finally:
        if aside_dir(folder).is_dir():
            settle(folder, aside_dir(folder))


def settles_replaced(stage: Callable[..., Any]) -> Callable[..., Any]:
    """Run stage(cfg, ws, exp, ...) inside replacing(ws.exp_dir(exp)); a stage that takes on_epoch(fold, epoch, row)
    also settles after each epoch (the old outputs go as soon as the new run has trained one)."""
    takes_on_epoch = "on_epoch" in inspect.signature(stage).parameters

    @functools.wraps(stage)
    def run(cfg: Any, ws: Any, exp: str, *args: Any, **kwargs: Any) -> Any:
        with replacing(ws.exp_dir(exp)) as trained:
            if takes_on_epoch:
                kwargs["on_epoch"] = _then(trained, kwargs.get("on_epoch"))
            return stage(cfg, ws, exp, *args, **kwargs)

    return run


def _then(trained: Callable[[], None], on_epoch: Callable[..., None] | None) -> Callable[..., None]:
    def after_epoch(fold: int, epoch: int, row: dict) -> None:
        trained()
        if on_epoch is not None:
            on_epoch(fold, epoch, row)

    return after_epoch
