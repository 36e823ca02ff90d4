"""The Optuna study: storage (journal file or RDB URL), seeded sampler, pruner, and the trial loop.

The loop asks for a trial only while the study holds fewer than `n_trials` counted trials
(finished, or running in a live worker), so every worker running the same command stops at
the same total, and a resumed run adds only what is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from comp.core.errors import CompError
from comp.core.locks import pid_alive

try:  # a process-wide file lock around "count, then ask"; not on Windows
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger("comp.tune")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INTERRUPTED = "interrupted"  # fail_reason of a trial stopped by Ctrl-C; not counted, so a rerun redoes it
SURPLUS = "surplus"  # fail_reason of a trial another worker made unnecessary while it was asked for; not counted
HEARTBEAT_S = 60  # an RDB worker records a heartbeat this often while a trial runs
GRACE_S = 240  # a RUNNING trial without a heartbeat for this long belongs to a dead worker: failed, not counted


# ---------------------------------------------------------------- storage, sampler, pruner



@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own INFO lines off (comp reports the trials itself); the caller's level is restored."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)

def open_storage(url: str | None, journal: Path) -> BaseStorage:
    """Optuna's journal file at `journal` by default; an RDB URL (postgresql://, mysql://) when given."""
    if url is None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal)))
    if url.startswith("sqlite"):
        log.warning("SQLite storage is not safe for several workers (database is locked, lost trials); "
                    "use the default journal file locally or postgresql:// across machines")
    try:
        return _rdb_storage(postgres_driver(url))
    except (ImportError, ModuleNotFoundError, ValueError) as exc:
        raise CompError(f"--storage {redact(url)!r} could not be opened: {exc}; pass an SQLAlchemy URL such as "
                        f"postgresql://user:pass@host/db, or leave --storage out for the journal file") from exc
    except Exception as exc:  # sqlalchemy OperationalError etc.: the server is not reachable
        raise CompError(f"--storage {redact(url)}: cannot connect ({type(exc).__name__}: {str(exc).strip()[:300]}); "
                        "check that the database server runs and the URL is right") from exc


def _rdb_storage(url: str, attempts: int = 5) -> RDBStorage:
    """RDBStorage, retried when workers starting together race to create optuna's tables in a new database."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are experimental in Optuna (stable since 2.9)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  heartbeat_stale_trial_callback=note_stale_trial)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def postgres_driver(url: str) -> str:
    """postgresql:// with the driver that is installed: SQLAlchemy 2.1 means psycopg 3, comp ships psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def redact(url: str) -> str:
    """The URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':')[0]}:***@{host}"


class TrialSeededSampler(BaseSampler):
    """TPE whose random state is seeded from (seed, trial number).

    The same seed and storage state give the same suggestions, and workers that start
    together (same study state) still draw different trials, because trial numbers differ.
    """

    def __init__(self, seed: int, *, n_startup_trials: int = 10) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._tpe = self._build(seed)

    def _build(self, seed: int) -> TPESampler:
        return TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._build(self.seed * 100_003 + trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def build_pruner(name: str, *, max_steps: int) -> optuna.pruners.BasePruner:
    """median | hyperband | none; steps are epochs across folds (fold_pos * epochs + epoch)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_steps), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise CompError(f"tune.pruner must be median, hyperband or none, got {name!r}")


def open_study(
    storage: BaseStorage, name: str, *, direction: str, sampler: BaseSampler, pruner: optuna.pruners.BasePruner
) -> optuna.Study:
    """Create the study, or load it when it exists (resume / another worker); the direction must match."""
    study = optuna.create_study(storage=storage, study_name=name, direction=direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise CompError(f"study {name!r} exists with direction {study.direction.name.lower()}, but the metric wants "
                        f"{direction}; pass another --study name or remove the old study")
    return study


# ---------------------------------------------------------------- counting and the trial loop


def note_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial whose worker stopped sending heartbeats (it has been marked failed)."""
    log.warning("trial %d of study %r: its worker (%s, pid %s) sent no heartbeat for %d s, so it died; the trial is "
                "marked failed and not counted, and a later trial takes its place", trial.number, study.study_name,
                trial.user_attrs.get("host", "?"), trial.user_attrs.get("pid", "?"), GRACE_S)


def counted(trial: FrozenTrial) -> bool:
    """Does this trial count towards --trials? Finished ones do, except those stopped by Ctrl-C or by a dead worker.

    A trial failed by comp always carries a fail_reason; one failed without it was failed by Optuna's
    heartbeat check (its worker died), so it does not count either.
    """
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("fail_reason") not in (INTERRUPTED, SURPLUS, None)
    return trial.state in FINISHED or trial.state == TrialState.RUNNING


def tally(study: optuna.Study) -> dict[str, int]:
    """Trials by state: complete, pruned, failed, running."""
    trials = study.get_trials(deepcopy=False)
    out = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
    for trial in trials:
        if trial.state in names:
            out[names[trial.state]] += 1
    return out


def trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number` (public storage API; the Trial object's own id is private)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of dead processes on this host as failed (a killed worker), so they stop counting.

    They are failed without a fail_reason, as Optuna's heartbeat check fails those of dead workers on
    any machine (RDB storages); `counted` leaves both out.
    """
    fail_stale_trials(study)
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") == host and pid is not None and not pid_alive(int(pid), None):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(trial.number)
    if failed:
        log.info("trials %s were left running by a dead process; marked failed (not counted)", failed)
    return failed


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's heartbeat check (a no-op unless the storage has heartbeats); experimental in Optuna, stable since 2.9."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def heartbeat(storage: BaseStorage | None, study: optuna.Study, number: int) -> Iterator[None]:
    """Record the trial's heartbeat every HEARTBEAT_S seconds while it runs (RDB storages with heartbeats)."""
    if not (isinstance(storage, RDBStorage) and storage.get_heartbeat_interval()):
        yield
        return
    tid = trial_id(storage, study, number)
    done = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(tid)
            if done.wait(storage.get_heartbeat_interval() or HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"comp-heartbeat-{number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def ask_lock(lock_path: Path | None) -> Iterator[None]:
    """Serialise "count, then ask" among local workers (RDB workers on other machines race benignly)."""
    if lock_path is None or fcntl is None:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class Outcome:
    """What became of one trial this process ran."""

    number: int
    state: str  # complete | pruned | failed
    value: float | None
    reason: str | None
    seconds: float


def next_trial(study: optuna.Study, n_trials: int, lock_path: Path | None) -> optuna.Trial | None:
    """A new trial, or None when the study already holds n_trials counted trials.

    The check after `ask` makes the total exact without a lock (RDB workers on several machines):
    trials numbered before this one were created before it, so if n_trials of them count, it is surplus.
    """
    with ask_lock(lock_path):
        if sum(counted(t) for t in study.get_trials(deepcopy=False)) >= n_trials:
            return None
        with warnings.catch_warnings():  # comp records the heartbeats itself (see `heartbeat`), not Study.optimize
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
    ahead = sum(counted(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number)
    if ahead >= n_trials:
        trial.set_user_attr("fail_reason", SURPLUS)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def in_workspace(text: str, root: Path | None) -> str:
    """`text` with every path under the workspace `root` written relative to it (what the study keeps travels)."""
    if root is None:
        return text
    return text.replace(str(root) + os.sep, "").replace(str(root), ".")


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float],
              *, catch: tuple[type[BaseException], ...], stop: threading.Event | None = None,
              root: Path | None = None) -> Outcome:
    """Run the objective on one trial and tell the study how it ended; Ctrl-C marks it failed, then re-raises.

    `stop` is set by a signal handler: an error raised while stopping (a DataLoader worker killed by the
    same SIGTERM) is the interruption's, not the trial's. root: the workspace; the reasons recorded in the study
    name its paths relative to it.
    """
    start = time.monotonic()
    try:
        value = objective(trial)
    except optuna.TrialPruned as exc:
        reason = in_workspace(str(exc), root) or "pruned"
        trial.set_user_attr("prune_reason", reason)
        study.tell(trial, state=TrialState.PRUNED)
        return Outcome(trial.number, "pruned", None, reason, time.monotonic() - start)
    except catch as exc:
        if stop is not None and stop.is_set():
            trial.set_user_attr("fail_reason", INTERRUPTED)
            study.tell(trial, state=TrialState.FAIL)
            raise KeyboardInterrupt("stopped by a signal") from exc
        reason = in_workspace(f"{type(exc).__name__}: {exc}", root)[:2000]
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        log.debug("trial %d failed:\n%s", trial.number, traceback.format_exc())
        return Outcome(trial.number, "failed", None, reason, time.monotonic() - start)
    except BaseException:
        trial.set_user_attr("fail_reason", INTERRUPTED)
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, value)
    return Outcome(trial.number, "complete", float(value), None, time.monotonic() - start)


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int,
    timeout: float | None = None,
    storage: BaseStorage | None = None,
    catch: tuple[type[BaseException], ...] = (),
    lock_path: Path | None = None,
    max_failures_in_a_row: int = 5,
    stop: threading.Event | None = None,
    root: Path | None = None,
) -> Iterator[Outcome]:
    """Run trials until the study holds n_trials counted trials or `timeout` seconds have passed; yield each.

    storage: the study's storage, for heartbeats while a trial runs (RDB storages opened by open_storage).
    root: the workspace (fail and prune reasons name its paths relative to it).
    Stops with a CompError after `max_failures_in_a_row` failed trials: then the cause is not one bad
    combination but something every trial hits, and the rest of the budget would be wasted.
    """
    if n_trials < 1:
        raise CompError(f"--trials must be 1 or more, got {n_trials}")
    fail_dead_local_trials(study)
    deadline = None if timeout is None else time.monotonic() + timeout
    failures = 0
    while deadline is None or time.monotonic() < deadline:
        fail_stale_trials(study)  # RDB workers that died since the last trial
        trial = next_trial(study, n_trials, lock_path)
        if trial is None:
            return
        with heartbeat(storage, study, trial.number):
            outcome = run_trial(study, trial, objective, catch=catch, stop=stop, root=root)
        failures = failures + 1 if outcome.state == "failed" else 0
        yield outcome
        if failures >= max_failures_in_a_row:
            raise CompError(f"{failures} trials in a row failed; the last one with {outcome.reason}; "
                            "fix the cause (see fail_reason of the trials) and rerun to resume the study")
