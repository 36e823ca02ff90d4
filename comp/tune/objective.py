"""The tuning objective: a trial's config trained on the chosen folds through `comp.train.engine.fit_fold`.

Each epoch's validation score goes to the pruner as a running mean over folds, at step
fold_pos * epochs + epoch, so pruning compares trials across folds. A trial's outputs live
in experiments/<exp>/tune/trial{N}/ and are deleted when the trial ends.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from comp.core.config import Config
from comp.data.tables import Tables
from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.train.job import FoldJob
from comp.tune.space import Param, apply_params
from comp.core.layout import Layout

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


LOADER_TRAIN_KEYS = ("batch_size", "num_workers", "device", "sampler", "sample_ratio", "seed")


class LoaderCache:
    """The trials' (train, validation) loaders, reused by a later trial whose data settings are the same.

    A loader's batches depend on its settings, rows and seed alone (each epoch's order and augmentation follow
    (seed, epoch): comp.data.dataset), so a reused loader yields what a new one would, without the image-cache
    look-up (a stat of every file), the pipeline build and the augment.preset auto probe again. The key is the
    config without the train settings a loader never reads (lr, weight decay, label smoothing, epochs, ...) and
    the fold's rows. Holds at most `size` pairs (1 when loaders have workers: each pair keeps its processes).
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._pairs: OrderedDict[tuple[str, str], tuple[Any, Any]] = OrderedDict()
        self.hits = 0

    @staticmethod
    def key(cfg: Config, train_idx: np.ndarray, val_idx: np.ndarray, targets: Any) -> tuple[str, str] | None:
        if targets is not None:  # per-row targets (pseudo labels, distillation) are not part of the key: never reuse
            return None
        raw = cfg.model_dump(mode="json")
        raw["train"] = {k: raw["train"].get(k) for k in LOADER_TRAIN_KEYS}
        raw.pop("tune", None)
        rows = hashlib.sha256(np.asarray(train_idx, np.int64).tobytes() + b"|" + np.asarray(val_idx, np.int64).tobytes())
        return json.dumps(raw, sort_keys=True, default=str), rows.hexdigest()

    def __call__(self, cfg: Config, tables: Tables, train_idx: np.ndarray, val_idx: np.ndarray, **kwargs: Any) -> Any:
        """comp.train.engine.build_loaders, or the pair an earlier trial built with the same key."""
        from comp.data.dataset import loader_settings
        from comp.train.engine import build_loaders

        key = self.key(cfg, train_idx, val_idx, kwargs.get("targets"))
        if key is not None and key in self._pairs:
            self._pairs.move_to_end(key)
            self.hits += 1
            return self._pairs[key]
        pair = build_loaders(cfg, tables, train_idx, val_idx, **kwargs)
        if key is not None:
            limit = self.size if loader_settings(cfg.train).num_workers == 0 else 1
            while len(self._pairs) >= limit:
                self._pairs.popitem(last=False)
            self._pairs[key] = pair
        return pair


@dataclass(frozen=True)
class Objective:
    """Callable for Optuna: sample params, build the trial config, fit the folds, return the mean score."""

    cfg: Config
    params: tuple[Param, ...]
    tables: Tables
    fold_of: np.ndarray
    folds: tuple[int, ...]
    ws: Layout
    exp: str
    progress: Progress = SILENT
    fit: Callable[..., Any] | None = None  # default comp.train.engine.fit_fold; tests may pass a stand-in
    loaders: LoaderCache = field(default_factory=LoaderCache)  # shared by the trials of this objective

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
        fit = self.fit or _fit_fold(self.loaders)
        scores: list[float] = []
        for pos, fold in enumerate(self.folds):
            reporter = FoldReporter(trial, tuple(scores), fold, pos, cfg.train.epochs)
            # a trial is never resumed and its folder is deleted when it ends: no best.pt or last.pt, result from memory
            job = FoldJob(cfg, self.tables, self.fold_of, fold, self.ws.trial_fold_dir(self.exp, trial.number, fold),
                          self.ws, resumable=False, checkpoints=False)
            result = fit(job, progress=self.progress, on_epoch=reporter)
            score = float(result.score)
            if not np.isfinite(score):
                raise CompError(f"fold {fold} ended with a non-finite score {score}")
            scores.append(score)
        return scores


def _fit_fold(loaders: LoaderCache) -> Callable[..., Any]:
    from comp.train.engine import fit_fold  # torch is imported only when training

    return functools.partial(fit_fold, make_loaders=loaders)


def _free_memory() -> None:
    """Drop what a trial left on the GPU, so an out-of-memory trial does not doom the next one."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
