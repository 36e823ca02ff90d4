"""One writer per fold: lock files naming their holder, and short experiment-level locks.

A fold lock is `experiments/<exp>/fold{i}/.lock`, created exclusively and holding JSON
{host, pid, started (process start tick), command, time, job}. It outlives its process if that
process is killed; a later process on the same host sees that the pid is gone (or belongs to
another process now) and takes the lock over, with a note. A lock held on another host cannot be
checked from here, so it is refused with the holder's name and the file to delete if that
process is gone. `job` lets a `--devices` parent hand its fold locks to its children (one job).

Short locks around aggregation and predict/ensemble writes use filelock (an OS lock that dies
with its process), so they never go stale.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from comp.core.errors import CompError
from comp.core.layout import FoldFiles

log = logging.getLogger("comp.core.locks")

JOB_ENV = "COMP_LOCK_JOB"  # set by a --devices parent for its children: locks of this job are theirs
SHORT_WAIT_S = 600.0  # how long a short experiment-level lock waits for another process


@dataclass(frozen=True)
class Holder:
    """Who holds a fold lock."""

    host: str
    pid: int
    started: int | None
    command: str
    time: str
    job: str

    def describe(self) -> str:
        return f"{self.command!r} (pid {self.pid} on {self.host}, since {self.time})"


class FoldLocked(CompError):
    """A fold is being trained by another live process."""

    def __init__(self, path: Path, holder: Holder, remote: bool) -> None:
        self.path, self.holder = path, holder
        hint = (f"if that process is gone, delete {path} and rerun" if remote
                else "wait for it to finish, or stop it and rerun")
        super().__init__(f"{path.parent.name} of {path.parent.parent.name} is being trained by {holder.describe()}; "
                         f"{hint} (other folds can run at the same time with --folds)")


def job_id() -> str:
    """This process's job: inherited from a --devices parent, else new."""
    return os.environ.get(JOB_ENV) or _own_job


_own_job = uuid.uuid4().hex[:12]


def process_start(pid: int) -> int | None:
    """The start tick of a process (Linux /proc), to tell a reused pid from the original; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name in parentheses


def pid_alive(pid: int, started: int | None) -> bool:
    """Is process `pid` (started at tick `started`, when known) still running on this host?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = process_start(pid)
    return started is None or now is None or now == started


def me() -> Holder:
    pid = os.getpid()
    return Holder(host=socket.gethostname(), pid=pid, started=process_start(pid),
                  command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
                  time=time.strftime("%Y-%m-%d %H:%M:%S"), job=job_id())


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lock file; None if it is unreadable (half-written by a killed process)."""
    try:
        doc = json.loads(path.read_text())
        return Holder(host=str(doc["host"]), pid=int(doc["pid"]), started=doc.get("started"),
                      command=str(doc.get("command", "?")), time=str(doc.get("time", "?")), job=str(doc.get("job", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create(path: Path, holder: Holder) -> bool:
    """Create the lock file exclusively with the holder's record; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(holder.__dict__, fh)
    return True


def acquire_fold(fold_dir: Path) -> bool:
    """Lock a fold folder for this process. True: taken (release it); False: already this job's (do not release).

    Raises FoldLocked when a live process of another job holds it.
    """
    fold_dir.mkdir(parents=True, exist_ok=True)
    path = FoldFiles(fold_dir).lock
    mine = me()
    with FileLock(str(path) + ".guard"):  # one local process at a time checks and takes over
        if _create(path, mine):
            return True
        holder = read_holder(path)
        if holder is not None and holder.job == mine.job:
            return False
        if holder is not None and holder.host != mine.host:
            raise FoldLocked(path, holder, remote=True)
        if holder is not None and pid_alive(holder.pid, holder.started):
            raise FoldLocked(path, holder, remote=False)
        what = holder.describe() if holder else "an unreadable lock"
        log.warning("%s: taking over the lock of %s, which is no longer running", fold_dir, what)
        path.unlink(missing_ok=True)
        if not _create(path, mine):
            raise CompError(f"{path} was taken by another process just now; rerun")
    return True


def release_fold(fold_dir: Path) -> None:
    """Remove this process's lock on a fold (only if it is still ours)."""
    path = FoldFiles(fold_dir).lock
    holder = read_holder(path)
    if holder is not None and holder.job == job_id() and holder.host == socket.gethostname():
        path.unlink(missing_ok=True)


def live_holder(fold_dir: Path) -> Holder | None:
    """The holder of a fold's lock if another job holds it and may be alive (remote holders count as alive)."""
    holder = read_holder(FoldFiles(fold_dir).lock)
    if holder is None or holder.job == job_id():
        return None
    if holder.host == socket.gethostname() and not pid_alive(holder.pid, holder.started):
        return None
    return holder


@contextmanager
def fold_lock(fold_dir: Path) -> Iterator[None]:
    """Hold a fold's lock for a block (a no-op when this job already holds it)."""
    taken = acquire_fold(fold_dir)
    try:
        yield
    finally:
        if taken:
            release_fold(fold_dir)


@contextmanager
def short_lock(path: Path, what: str, *, timeout: float = SHORT_WAIT_S) -> Iterator[None]:
    """An OS lock (released when the process dies) around a few writes that belong together."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise CompError(f"{what}: another comp process has held {path} for {timeout:.0f} s; wait for it or stop it, "
                        "then rerun") from None
    try:
        yield
    finally:
        lock.release()
