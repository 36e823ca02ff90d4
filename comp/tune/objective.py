"""The tuning objective: a trial's config trained on the chosen folds through `comp.engine.fit_fold`.

Each epoch's validation score goes to the pruner as a running mean over folds, at step
fold_pos * epochs + epoch, so pruning compares trials across folds. A trial's outputs live
in experiments/<exp>/tune/trial{N}/ and are deleted when the trial ends.
"""

from __future__ import annotations

import functools
import gc
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from comp.config import Config
from comp.data.tables import Tables
from comp.errors import CompError
from comp.progress import SILENT, Progress
from comp.tune.space import Param, apply_params
from comp.workspace import Workspace

log = logging.getLogger("comp.tune")


def trial_config(cfg: Config, params: dict[str, Any], *, epochs: int | None) -> Config:
    """The experiment config with the trial's params (and tune.epochs as train.epochs) applied."""
    overrides = dict(params)
    if epochs is not None:
        overrides["train.epochs"] = epochs
    return apply_params(cfg, overrides)


def failure_types() -> tuple[type[BaseException], ...]:
    """Exceptions that fail one trial but let the study go on: bad combinations, NaN loss, out of memory.

    RuntimeError covers CUDA out-of-memory on older torch and shape errors of a model/size combination;
    a bug that fails every trial is caught by the consecutive-failure limit of the trial loop.
    """
    import torch

    return (CompError, torch.OutOfMemoryError, RuntimeError, ValueError, AssertionError)


@dataclass(frozen=True)
class FoldReporter:
    """on_epoch callback: report the running mean over folds to the trial and prune when told to."""

    trial: optuna.Trial
    done: tuple[float, ...]  # best scores of the folds already trained in this trial
    fold: int
    fold_pos: int
    epochs: int

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        score = float(metrics["score"])
        running = float(np.mean([*self.done, score]))
        step = self.fold_pos * self.epochs + epoch
        if not np.isfinite(running):
            raise optuna.TrialPruned(f"non-finite validation score {score} at fold {self.fold} epoch {epoch}")
        self.trial.report(running, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at fold {self.fold} epoch {epoch}: running score {running:.4f}")


@dataclass(frozen=True)
class Objective:
    """Callable for Optuna: sample params, build the trial config, fit the folds, return the mean score."""

    cfg: Config
    params: tuple[Param, ...]
    tables: Tables
    fold_of: np.ndarray
    folds: tuple[int, ...]
    ws: Workspace
    exp: str
    progress: Progress = SILENT
    fit: Callable[..., Any] | None = None  # default comp.engine.fit_fold; tests may pass a stand-in

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = {p.key: p.suggest(trial) for p in self.params}
        cfg = trial_config(self.cfg, sampled, epochs=self.cfg.tune.epochs)
        trial.set_user_attr("config_hash", cfg.hash())
        trial.set_user_attr("epochs", cfg.train.epochs)  # what the score was trained with (the report labels it)
        out = self.ws.trial_dir(self.exp, trial.number)
        try:
            scores = self._fit_folds(trial, cfg)
        finally:
            shutil.rmtree(out, ignore_errors=True)  # keep only the study: disk must not fill up
            _free_memory()
        for fold, score in zip(self.folds, scores):
            trial.set_user_attr(f"fold{fold}", score)
        return float(np.mean(scores))

    def _fit_folds(self, trial: optuna.Trial, cfg: Config) -> list[float]:
        fit = self.fit or _fit_fold()
        scores: list[float] = []
        for pos, fold in enumerate(self.folds):
            reporter = FoldReporter(trial, tuple(scores), fold, pos, cfg.train.epochs)
            result = fit(cfg, self.tables, self.fold_of, fold, self.ws.trial_fold_dir(self.exp, trial.number, fold),
                         ws=self.ws, progress=self.progress, on_epoch=reporter)
            score = float(result.score)
            if not np.isfinite(score):
                raise CompError(f"fold {fold} ended with a non-finite score {score}")
            scores.append(score)
        return scores


def _fit_fold() -> Callable[..., Any]:
    from comp.engine import fit_fold  # torch is imported only when training

    return functools.partial(fit_fold, resumable=False)  # a trial is never resumed: no per-epoch last.pt


def _free_memory() -> None:
    """Drop what a trial left on the GPU, so an out-of-memory trial does not doom the next one."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
