"""Folds in parallel across devices: one child process per fold, at most one per device at a time.

`comp fold-train --devices 0,1,2,3` (GPUs) or `--devices cpu,cpu` (CPU processes): the parent
makes the folds file, config.yaml and the image cache first, so children never race to build
them; one thread per device pulls folds from a queue, writes the fold's job file (ChildJob: workspace,
experiment, fold, --set overrides, device) and runs `python -m CHILD_MODULE JOB_FILE` with CUDA_VISIBLE_DEVICES
set to its GPU (or hidden GPUs and a fair share of CPU threads for `cpu`); each child writes only
experiments/<exp>/fold{i}/ and streams its output to fold{i}/train.log; when all have ended the
parent writes oof.csv, scores.json and the report as a sequential run does. A failed fold is
reported with the tail of its log while the others finish.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from comp.core.config import Config
from comp.data.cache import prepare_images
from comp.train.engine import finished_result
from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.data.folds import parse_fold_selection
from comp.core.locks import JOB_ENV, FoldLocked, acquire_fold, job_id, release_fold
from comp.train.fold_train import Recipes, aggregate_folds, prepare_run, require_recipes
from comp.core.replace import settles_replaced
from comp.core.layout import Layout, write_json

log = logging.getLogger("comp.train.devices")

TAIL_LINES = 30


@dataclass(frozen=True)
class FoldRun:
    """How one child process ended."""

    fold: int
    device: str
    returncode: int
    log_path: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.rstrip().splitlines()[-lines:])


class FoldsFailed(CompError):
    """Some folds' child processes failed; the others finished and were aggregated (scores: the partial scores)."""

    def __init__(self, scores: dict, runs: list[FoldRun]) -> None:
        self.scores, self.runs = scores, runs
        super().__init__(f"folds {[r.fold for r in runs]} failed; fix the cause and rerun the same command "
                         "(finished folds are not trained again)")


@dataclass(frozen=True)
class DispatchResult:
    scores: dict
    runs: list[FoldRun]  # the folds that ran in a child, in the order they ended

    @property
    def failed(self) -> list[FoldRun]:
        return [r for r in self.runs if not r.ok]


def parse_devices(text: str) -> list[str]:
    """'0,1' -> ['0', '1']; 'cpu,cpu' -> ['cpu', 'cpu']; anything else is a CompError."""
    devices = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [d for d in devices if d != "cpu" and not d.isdigit()]
    if not devices or bad:
        raise CompError(f"--devices expects GPU numbers or 'cpu' separated by commas (e.g. 0,1,2,3 or cpu,cpu); "
                        f"got {text!r}")
    return devices


def check_devices(devices: list[str], device_spec: str) -> None:
    """Refuse device lists that train.device contradicts, or GPUs that do not exist."""
    gpus = [d for d in devices if d != "cpu"]
    if device_spec == "cpu" and gpus:
        raise CompError(f"--devices {','.join(devices)} names GPUs but train.device=cpu; use --devices cpu,... "
                        "or set train.device=auto")
    if device_spec.startswith("cuda") and len(gpus) < len(devices):
        raise CompError(f"--devices has cpu entries but train.device={device_spec}; set train.device=auto")
    if device_spec.startswith("cuda:"):
        raise CompError(f"train.device={device_spec} pins one GPU; with --devices set train.device=auto or cuda")
    if gpus:
        import torch

        count = torch.cuda.device_count()
        missing = sorted({int(g) for g in gpus if int(g) >= count}, key=int)
        if missing:
            raise CompError(f"--devices names GPU {missing} but {count} CUDA devices are visible here")


def child_env(device: str, *, n_cpu_slots: int) -> dict[str, str]:
    """The environment of a child: its GPU alone, or no GPU and a fair share of the CPU threads."""
    env = dict(os.environ)
    if device == "cpu":
        threads = str(max(1, (os.cpu_count() or 1) // max(1, n_cpu_slots)))
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    else:
        env["CUDA_VISIBLE_DEVICES"] = device
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # a child is never a DDP rank of the parent's group
        env.pop(key, None)
    env[JOB_ENV] = job_id()  # the parent's fold locks are the child's: one job
    return env


CHILD_MODULE = "comp.api._child"  # run as `python -m CHILD_MODULE JOB_FILE`: reads the job (read_job), trains its folds


@dataclass(frozen=True)
class ChildJob:
    """What one `--devices` child trains: the job file the parent writes (write_job) and the child reads (read_job)."""

    workspace: str
    experiment: str
    folds: tuple[int, ...]
    overrides: tuple[str, ...] = ()  # the --set items the child loads the config with (folds.k included)
    device: str | None = None  # where it runs ("cpu" or a GPU number; CUDA_VISIBLE_DEVICES already says so)

    def record(self) -> dict:
        return dataclasses.asdict(self)  # tuples are written as JSON lists


def write_job(path: Path, job: ChildJob) -> Path:
    """The job file, written atomically (a child never reads half of one)."""
    return write_json(path, job.record())


def read_job(path: Path | str) -> ChildJob:
    """A job file as write_job wrote it; anything else is a CompError that names the file and what is wrong."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as exc:
        raise CompError(f"cannot read the fold-train job file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CompError(f"fold-train job file {path} is not JSON: {exc}") from None

    def bad(what: str) -> CompError:
        return CompError(f"fold-train job file {path}: {what}")

    if not isinstance(record, dict):
        raise bad(f"expected a JSON object, got {type(record).__name__}")
    fields = {f.name: f for f in dataclasses.fields(ChildJob)}
    required = {name for name, f in fields.items() if f.default is dataclasses.MISSING}
    missing, unknown = sorted(required - set(record)), sorted(set(record) - set(fields))
    if missing or unknown:
        raise bad(", ".join(([f"missing {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])))
    for key in ("workspace", "experiment"):
        if not isinstance(record[key], str) or not record[key]:
            raise bad(f"{key} must be a non-empty string, got {record[key]!r}")
    folds = record["folds"]
    if not isinstance(folds, list) or not folds or not all(type(f) is int and f >= 0 for f in folds):
        raise bad(f"folds must be a non-empty list of fold numbers, got {folds!r}")
    overrides = record.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise bad(f"overrides must be a list of KEY=VALUE strings, got {overrides!r}")
    device = record.get("device")
    if device is not None and not isinstance(device, str):
        raise bad(f"device must be a string or null, got {device!r}")
    return ChildJob(record["workspace"], record["experiment"], tuple(folds), tuple(overrides), device)


def child_command(job_path: Path) -> list[str]:
    """`python -m comp.api._child JOB_FILE`: the child trains the job's fold(s), no experiment-level aggregation."""
    return [sys.executable, "-m", CHILD_MODULE, str(job_path)]


def run_child(fold: int, device: str, *, cmd: list[str], env: dict[str, str], log_path: Path) -> FoldRun:
    """Run one child to its end, its stdout and stderr streamed to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        out.write(f"# device {device}: {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    return FoldRun(fold, device, proc.returncode, log_path)


def device_worker(device: str, todo: queue.Queue, done: queue.Queue, *, make_cmd: Callable[[int, str], list[str]],
                  env: dict[str, str], log_of: Callable[[int], Path]) -> None:
    """Take folds from `todo` until it is empty; one child at a time on this device."""
    while True:
        try:
            fold = todo.get_nowait()
        except queue.Empty:
            return
        try:
            done.put(run_child(fold, device, cmd=make_cmd(fold, device), env=env, log_path=log_of(fold)))
        except Exception as exc:  # the child could not even start: report it like a failed fold
            log_path = log_of(fold)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(f"could not start the fold-train child on device {device}: {exc}\n")
            done.put(FoldRun(fold, device, -1, log_path))


def run_folds(folds: list[int], devices: list[str], *, make_cmd: Callable[[int, str], list[str]],
              log_of: Callable[[int], Path]) -> Iterator[FoldRun]:
    """Run the folds on the devices (a thread each, at most one fold per device at a time); yield as they end."""
    todo: queue.Queue = queue.Queue()
    for fold in folds:
        todo.put(fold)
    done: queue.Queue = queue.Queue()
    n_cpu = sum(d == "cpu" for d in devices)
    threads = [threading.Thread(target=device_worker, args=(d, todo, done), daemon=True,
                                kwargs={"make_cmd": make_cmd, "env": child_env(d, n_cpu_slots=n_cpu), "log_of": log_of},
                                name=f"comp-device-{i}-{d}")
               for i, d in enumerate(devices[:max(1, len(folds))])]
    for t in threads:
        t.start()
    for _ in folds:
        yield done.get()
    for t in threads:
        t.join()


@settles_replaced  # --force's old outputs: deleted once a child trained an epoch, else put back
def fold_train_parallel(cfg: Config, ws: Layout, exp: str, *, devices: list[str], overrides: list[str],
                        folds: str | list[int] | None = None, force: bool = False,
                        progress: Progress = SILENT, recipes: Recipes | None = None,
                        origins: dict[str, str] | None = None) -> DispatchResult:
    """Train the selected folds in child processes across `devices`, then aggregate as fold_train does.

    overrides: the --set items (folds.k included) the children load the config with, so their
    train_hash equals cfg's. Folds that already finished with this config are not rerun. recipes: as fold_train's
    (the children build their own from the same config).
    """
    require_recipes(cfg, recipes)
    asked = None if origins is None else (cfg, origins)
    check_devices(devices, cfg.train.device)
    selected = parse_fold_selection(folds, cfg.folds.k)
    cfg, tables, fold_of = prepare_run(cfg, ws, exp, force=force, progress=progress)  # train.lr: auto chosen here
    prepare_images(tables.train, cfg.image, cfg.augment, ws, progress=progress)  # built once here, read by every child
    todo = [f for f in selected if finished_result(ws.fold_dir(exp, f), cfg, f) is None]
    if len(todo) < len(selected):
        log.info("folds %s already finished; skipping them", sorted(set(selected) - set(todo)))
    locked = lock_folds(ws, exp, todo, skip_held=folds is not None)
    try:
        runs = run_locked(ws, exp, locked, devices, overrides=overrides, progress=progress)
    finally:
        for fold in locked:
            release_fold(ws.fold_dir(exp, fold))
    return DispatchResult(aggregate_folds(cfg, ws, exp, tables, fold_of, recipes=recipes, asked=asked), runs)


def lock_folds(ws: Layout, exp: str, folds: list[int], *, skip_held: bool) -> list[int]:
    """Lock the folds for this job (its children inherit them); held folds are skipped or, by default, an error."""
    locked: list[int] = []
    try:
        for fold in folds:
            try:
                acquire_fold(ws.fold_dir(exp, fold))
                locked.append(fold)
            except FoldLocked as exc:
                if not skip_held:
                    raise
                log.warning("fold %d skipped: %s", fold, exc)
    except BaseException:
        for fold in locked:
            release_fold(ws.fold_dir(exp, fold))
        raise
    return locked


def run_locked(ws: Layout, exp: str, todo: list[int], devices: list[str], *, overrides: list[str],
               progress: Progress) -> list[FoldRun]:
    """Children for the locked folds, one device each at a time; how each ended."""
    runs = []
    with tempfile.TemporaryDirectory(prefix=f"comp-{exp}-jobs-") as jobs:  # the job files go when the children have

        def make_cmd(fold: int, device: str) -> list[str]:
            job = ChildJob(str(ws.root), exp, (fold,), tuple(overrides), device)
            return child_command(write_job(Path(jobs) / f"fold{fold}.json", job))

        def log_of(fold: int) -> Path:
            return ws.fold_files(exp, fold).log

        for run in progress.track(run_folds(todo, devices, make_cmd=make_cmd, log_of=log_of), total=len(todo),
                                  description="folds"):
            runs.append(run)
            progress.log(f"fold {run.fold} on {run.device}: " + ("done" if run.ok else f"FAILED (exit {run.returncode})")
                         + f"; log {run.log_path}")
    return runs

