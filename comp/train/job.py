"""FoldJob: one fold to fit, as comp.train.engine.fit_fold takes it (a plain dataclass: importing it loads no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from comp.core.config import Config
    from comp.core.layout import Layout
    from comp.data.tables import Tables
    from comp.train.targets import RowTargets


@dataclass(frozen=True)
class FoldJob:
    """One fold to fit: what it trains and validates on, where its files go, and which files it writes.

    cfg: the experiment's resolved config (model, image, augment, train, metric). tables: the training table (images
    read through the decoded-image cache in `ws`). fold_of: the fold of every training row (train.csv order); `fold`
    is validated, the rest trained; rows with fold_of -1 train in every fold and are never validated on.
    out_dir: the fold's folder (an experiment's fold{i}/ or a tuning trial's; comp.core.layout.FoldFiles).
    targets: per-row targets of tables.train (soft pseudo labels, a teacher's probabilities; comp.train.targets).
    resumable: False writes last.pt only when the fold finishes (a run that is never resumed). checkpoints: False
    writes neither best.pt nor last.pt (a tuning trial, whose folder is deleted when it ends); the result comes from
    memory.
    """

    cfg: Config
    tables: Tables
    fold_of: np.ndarray
    fold: int
    out_dir: Path
    ws: Layout
    targets: RowTargets | None = None
    resumable: bool = True
    checkpoints: bool = True
