"""train.seeds: every fold trained once per seed, each (fold, seed) its own resumable run in fold{i}/seed{s}/.

A seed's run is the experiment's config with train.seed = s (its own train_hash, so a checkpoint is
never taken for another seed's); the fold's result is the mean of its seeds' validation probabilities,
so oof.csv, predict and export average the seeds' probabilities. Without train.seeds nothing changes:
one run per fold in fold{i}/ with train.seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from comp.core.config import Config
from comp.core.errors import CompError
from comp.core.layout import Layout

if TYPE_CHECKING:
    from comp.train.engine import FoldResult


def seed_config(cfg: Config, seed: int) -> Config:
    """The config one seed's runs train with: train.seed = seed (train.seeds kept, so the hash names both)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": int(seed)})})


def fold_runs(cfg: Config, ws: Layout, exp: str, fold: int) -> list[tuple[Config, Path, int | None]]:
    """(config, folder, seed) of each run of a fold: one per train.seeds entry, else the fold itself."""
    if not cfg.train.seeds:
        return [(cfg, ws.fold_dir(exp, fold), None)]
    return [(seed_config(cfg, s), ws.seed_dir(exp, fold, s), int(s)) for s in cfg.train.seeds]


def expand_seeds(base: int, n: int) -> list[int]:
    """`--seeds N`: train.seed, train.seed + 1, ... (N seeds)."""
    if n < 1:
        raise CompError(f"--seeds must be 1 or more, got {n}")
    return [base + i for i in range(n)]


def split_key(key: int | str) -> tuple[int, int | None]:
    """(fold, seed) of a model_checkpoints key: 3 -> (3, None), '3-seed43' -> (3, 43)."""
    if isinstance(key, int) or str(key).isdigit():
        return int(key), None
    fold, _, seed = str(key).partition("-seed")
    return int(fold), int(seed)


def checkpoint_hashes(ws: Layout, exp: str, keys: list[int | str], recorded: str) -> dict[int | str, str]:
    """The train_hash each checkpoint must carry: config.yaml's, or for a seed run that of its seed's config."""
    if all(split_key(k)[1] is None for k in keys):
        return {k: recorded for k in keys}
    from comp.core.config import build_config, read_yaml

    doc = {k: v for k, v in read_yaml(ws.config_yaml(exp)).items() if k in Config.model_fields}  # less the records
    trained = build_config(doc, source=f"{ws.config_yaml(exp)}: ")
    return {k: recorded if split_key(k)[1] is None else seed_config(trained, split_key(k)[1]).train_hash()
            for k in keys}


def mean_result(fold: int, runs: dict[int, "FoldResult"], score: Any) -> "FoldResult":
    """A fold's result over its finished seeds: the mean of their validation probabilities, scored again by
    `score(val_ids, probs)`; val_loss is the seeds' mean, the curves and best epoch are the first seed's."""
    from comp.train.engine import FoldResult

    first = runs[min(runs)]
    for seed, res in runs.items():
        if list(res.val_ids) != list(first.val_ids):
            raise CompError(f"fold {fold}: seed {seed} validated other rows than seed {min(runs)}; the folds file "
                            "changed: rerun with --force")
    probs = np.mean([r.val_probs.astype(np.float64) for _, r in sorted(runs.items())], axis=0)
    return FoldResult(fold=fold, best_epoch=first.best_epoch, score=float(score(first.val_ids, probs)),
                      val_loss=float(np.mean([r.val_loss for r in runs.values()])),
                      minutes=float(sum(r.minutes for r in runs.values())), val_ids=list(first.val_ids),
                      val_probs=probs.astype(np.float32), history=first.history,
                      epoch_probs=mean_epoch_probs(list(runs.values())))


def mean_epoch_probs(runs: list["FoldResult"]) -> np.ndarray | None:
    """The seeds' per-epoch validation probabilities averaged, when every seed has them for the same epochs."""
    stacks = [r.epoch_probs for r in runs]
    if any(p is None for p in stacks) or len({p.shape for p in stacks}) != 1:
        return None
    return np.mean([p.astype(np.float64) for p in stacks], axis=0).astype(np.float32)


def seed_scores(cfg: Config, tables: Any, per_seed: dict[int, dict[int, Any]], scores: dict) -> dict:
    """scores.json's train.seeds fields: per-seed fold and OOF scores, and the runs still missing ({} without seeds)."""
    if not cfg.train.seeds:
        return {}
    from comp.core.metrics import get_metric

    metric = get_metric(cfg.metric, tables.task)
    row_of = {i: r for r, i in enumerate(tables.train["id"].astype(str))}
    targets = np.asarray(tables.targets)
    seed_oof = {}
    for seed, results in sorted(per_seed.items()):
        rows = [row_of[i] for r in results.values() for i in r.val_ids]
        probs = np.concatenate([r.val_probs for r in results.values()]) if results else None
        seed_oof[str(seed)] = metric(targets[rows], probs) if rows else None
    missing = [[f, int(s)] for f in range(cfg.folds.k) for s in cfg.train.seeds if f not in per_seed.get(s, {})]
    return {
        "seeds": list(cfg.train.seeds),
        "seed_folds": {str(s): {int(f): float(r.score) for f, r in sorted(per_seed.get(s, {}).items())}
                       for s in cfg.train.seeds},
        "seed_oof": seed_oof,
        "oof_is": "the OOF score of the seeds' mean probabilities",
        "missing_runs": missing,
        "complete": bool(scores.get("complete")) and not missing,
    }
