"""`comp tune`: an Optuna search over an experiment's space, trained through the same fit_fold as fold-train.

Reads comp.yaml, experiments/<exp>.yaml and the folds; writes the study (default
experiments/<exp>/tune.journal), experiments/<exp>-tuned.yaml and the report's tune section.
"""

from __future__ import annotations

import gc
import logging
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
import pandas as pd

from comp.core.config import Config
from comp.data.checked import load_checked_tables
from comp.data.folds import ensure_folds, parse_fold_selection
from comp.core.metrics import greater_is_better
from comp.core.progress import SILENT, Progress
from comp.tune.objective import Objective, failure_types
from comp.tune.output import best_trial, trials_table, write_report, write_tuned_yaml
from comp.tune.space import Param, default_space, parse_space, resolve_space
from comp.tune.study import (
    Outcome,
    TrialSeededSampler,
    build_pruner,
    counted,
    open_storage,
    open_study,
    quiet_optuna,
    redact,
    run_trials,
    tally,
)
from comp.core.layout import Layout

__all__ = ["TuneResult", "tune_experiment", "parse_space", "default_space", "resolve_space", "Param"]

log = logging.getLogger("comp.tune")


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    storage: str  # where the study lives (journal path or redacted URL)
    counts: dict[str, int]  # complete, pruned, failed, running: the whole study
    ran: tuple[Outcome, ...]  # the trials this call ran
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    tuned_yaml: Path | None
    report: Path
    table: pd.DataFrame  # top trials, best first


@dataclass(frozen=True)
class _Plan:
    """Everything a tuning run needs, resolved and checked before the first trial."""

    params: tuple[Param, ...]
    folds: tuple[int, ...]
    n_trials: int
    timeout: float | None
    direction: str
    study_name: str


def _plan(cfg: Config, exp: str, *, trials: int | None, timeout: float | None,
          folds: tuple[int, ...] | str | None, study_name: str | None) -> _Plan:
    better = greater_is_better(cfg.metric)
    return _Plan(
        params=resolve_space(cfg),
        folds=parse_fold_selection(cfg.tune.folds if folds is None else folds, cfg.folds.k),
        n_trials=cfg.tune.trials if trials is None else trials,
        timeout=cfg.tune.timeout if timeout is None else timeout,
        direction="maximize" if better else "minimize",
        study_name=study_name or exp,
    )


def tune_experiment(
    ws: Layout,
    cfg: Config,
    *,
    exp: str,
    overrides: tuple[str, ...] = (),
    trials: int | None = None,
    timeout: float | None = None,
    folds: tuple[int, ...] | str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    progress: Progress = SILENT,
    fit: Callable[..., Any] | None = None,
    stop: threading.Event | None = None,
) -> TuneResult:
    """Run (or resume, or join) the study until it holds `trials` trials; write the tuned YAML and report."""
    if cfg.train.lr == "auto" and "train.lr" not in {p.key for p in resolve_space(cfg)}:
        from comp.train.lrfind import resolve_auto_lr  # the finder on fold 0 once (lr_find.json), every trial uses it

        cfg = resolve_auto_lr(cfg, ws, exp, trained=False, progress=progress)
    plan = _plan(cfg, exp, trials=trials, timeout=timeout, folds=folds, study_name=study_name)
    tables = load_checked_tables(cfg, ws, progress=progress)  # checked and cached once for every trial
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
    journal = ws.tune_journal(exp)
    epochs = cfg.tune.epochs or cfg.train.epochs
    with quiet_optuna():  # comp reports each trial itself
        store = open_storage(storage, journal)
        study = open_study(
            store, plan.study_name, direction=plan.direction,
            sampler=TrialSeededSampler(cfg.train.seed if cfg.tune.seed is None else cfg.tune.seed,
                                       n_startup_trials=cfg.tune.n_startup_trials),
            pruner=build_pruner(cfg.tune.pruner, max_steps=epochs * len(plan.folds)),
        )
        with warnings.catch_warnings():  # experimental since optuna 3.2; names the value axis in optuna-dashboard
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([cfg.metric])
        objective = Objective(cfg, plan.params, tables, fold_of, plan.folds, ws, exp, progress=progress, fit=fit)
        lock = journal.with_name(journal.name + ".ask-lock") if storage is None else None
        clean_trial_dirs(ws, exp, study)
        with frozen_heap():
            ran = _run(study, objective, plan, store=store, lock=lock, progress=progress, stop=stop)
        return _finish(ws, exp, study, ran, overrides=overrides, metric=cfg.metric,
                       where=str(journal) if storage is None else redact(storage))


@contextmanager
def frozen_heap() -> Iterator[None]:
    """gc.freeze() the objects that outlive every trial (modules, tables, the study) for the trial loop.

    Each trial ends with gc.collect() (comp.tune.objective._free_memory: a failed trial's GPU tensors must go
    before the next trial); frozen objects are not scanned, so that collection looks at the trial's own objects
    only (a full collection over torch, pandas and optuna costs ~0.3 s a trial). Frozen objects stay alive, which
    the ones frozen here do anyway; they are unfrozen afterwards (unless something else froze objects before).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def clean_trial_dirs(ws: Layout, exp: str, study: Any) -> list[int]:
    """Delete the folders of trials that are no longer running (left behind by a killed trial); their numbers."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    removed = []
    for folder in sorted(ws.trial_dir(exp, 0).parent.glob("trial*")):
        number = folder.name.removeprefix("trial")
        if number.isdigit() and int(number) not in running:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(int(number))
    if removed:
        log.info("removed the folders of trials %s, left behind by a run that was stopped", removed)
    return removed


def _run(study: Any, objective: Objective, plan: _Plan, *, store: Any, lock: Path | None, progress: Progress,
         stop: threading.Event | None) -> tuple[Outcome, ...]:
    """The trial loop with a progress bar: done / pruned / failed, best so far."""
    have = sum(counted(t) for t in study.get_trials(deepcopy=False))
    log.info("study %r: %d of %d trials present; folds %s; space %s", plan.study_name, have, plan.n_trials,
             list(plan.folds), ", ".join(p.key for p in plan.params))
    ran: list[Outcome] = []
    loop = run_trials(study, objective, n_trials=plan.n_trials, timeout=plan.timeout, storage=store,
                      catch=failure_types(), lock_path=lock, stop=stop, root=objective.ws.root)
    for outcome in progress.track(loop, total=max(0, plan.n_trials - have), description=f"tune {plan.study_name}"):
        ran.append(outcome)
        counts = tally(study)
        best = _best_value(study)
        shown = "-" if best is None else f"{best:.4f}"
        progress.note(done=counts["complete"], pruned=counts["pruned"], failed=counts["failed"], best=shown)
        value = "" if outcome.value is None else f" {outcome.value:.4f}"
        reason = f" ({outcome.reason})" if outcome.reason else ""
        progress.log(f"trial {outcome.number}: {outcome.state}{value} in {outcome.seconds:.0f}s{reason}"
                     f"; best so far {shown}")
    return tuple(ran)


def _best_value(study: Any) -> float | None:
    best = best_trial(study)
    return None if best is None else float(best.value)


def _finish(ws: Layout, exp: str, study: Any, ran: tuple[Outcome, ...], *, overrides: tuple[str, ...],
            metric: str, where: str) -> TuneResult:
    best = best_trial(study)
    tuned = None
    if best is not None:
        tuned = write_tuned_yaml(ws, exp, best, overrides=overrides, study_name=study.study_name, metric=metric)
    else:
        log.warning("no trial of study %r completed, so no tuned experiment was written", study.study_name)
    counts = tally(study)
    summary = (f"study {study.study_name!r} in {where}: {counts['complete']} complete, {counts['pruned']} pruned, "
               f"{counts['failed']} failed; best {metric} "
               f"{'-' if best is None else f'{best.value:.4f} (trial {best.number})'}")
    report = write_report(ws, exp, study, summary=summary, tuned=tuned)
    return TuneResult(study.study_name, where, counts, ran, None if best is None else best.number,
                      None if best is None else float(best.value), {} if best is None else dict(best.params),
                      tuned, report, trials_table(study))
