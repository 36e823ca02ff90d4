"""The only module that knows where artifacts live, and how every artifact is written (atomically)."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import yaml

from comp.core.errors import CompError


# ---------------------------------------------------------------- atomic writes

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask once (setting it back at once)


class WriteError(OSError):
    """Writing an artifact failed for a reason the user fixes (no permission, read-only, disk full); names the artifact."""


FIXABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A fixable OSError inside the block becomes a WriteError naming `path` (not a temporary file); others pass."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, WriteError) or exc.errno not in FIXABLE_ERRNOS:
            raise
        raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from exc


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    tmp_path = Path(tmp)
    try:
        with _writing(path):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(path: Path | str, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def csv_bytes(frame: pd.DataFrame, float_format: str | None = "%.6f") -> bytes:
    """A frame as reproducible CSV bytes (fixed float format, '\\n' line endings, no index)."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format=float_format, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def write_csv(path: Path | str, frame: pd.DataFrame, float_format: str | None = "%.6f") -> Path:
    """A CSV written byte-reproducibly (see csv_bytes)."""
    return write_bytes(path, csv_bytes(frame, float_format))


def write_with(path: Path | str, writer: Callable[[Path], Any]) -> Path:
    """Atomic write through any function that writes to a path (torch.save, savefig, ...)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def read_json_record(path: Path | str) -> dict | None:
    """A JSON object written by comp, or None when the file is missing, unreadable JSON or not an object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------- paths

NAME_RULE = "letters, digits, '-', '_' and '.', not starting with '.'"
_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def check_name(name: str, what: str = "experiment") -> str:
    """An experiment or submission name is a plain name, so every artifact stays inside the workspace."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CompError(f"{what} name {name!r} is not a plain name: use {NAME_RULE} (no path separators, "
                        f"at most 128 characters), e.g. {what}-2")
    return name



@dataclass(frozen=True)
class FoldFiles:
    """The files of one fold folder (an experiment's fold{i}/, or a tuning trial's)."""

    dir: Path

    @property
    def best(self) -> Path:
        """The best epoch's weights and its validation predictions (the fold's model)."""
        return self.dir / "best.pt"

    @property
    def last(self) -> Path:
        """Everything needed to resume after the last finished epoch."""
        return self.dir / "last.pt"

    @property
    def history(self) -> Path:
        return self.dir / "history.csv"

    @property
    def log(self) -> Path:
        return self.dir / "train.log"

    @property
    def lock(self) -> Path:
        """Held while a process trains the fold (see comp.core.locks)."""
        return self.dir / ".lock"

    @property
    def test_csv(self) -> Path:
        """This fold model's test probabilities."""
        return self.dir / "test.csv"


@dataclass(frozen=True)
class Layout:
    """Where each artifact of one workspace folder lives (the layout is listed in the README, "Workspace"); the
    public, user-facing class is comp.Workspace (comp/api/__init__.py)."""

    root: Path

    @classmethod
    def at(cls, root: Path | str) -> "Layout":
        return cls(Path(root).resolve())

    def path(self, relative: str | Path) -> Path:
        """A path from config (relative to the workspace unless absolute)."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def comp_yaml(self) -> Path:
        return self.root / "comp.yaml"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"

    @property
    def image_check_json(self) -> Path:
        """Cached facts of every image checked (size, mode, decodable), keyed by path, size and time."""
        return self.cache_dir / "image_check.json"

    @property
    def eda_features_json(self) -> Path:
        return self.cache_dir / "eda_features.json"

    def image_cache(self, key: str) -> Path:
        """A decoded, cropped and resized image array (memory-mapped), named by what it was made from."""
        return self.cache_dir / "images" / f"{key}.npy"

    @property
    def mlruns_dir(self) -> Path:
        """The local MLflow store when MLFLOW_TRACKING_URI is not set."""
        return self.root / "mlruns"

    @property
    def folds_dir(self) -> Path:
        return self.root / "folds"

    def folds_csv(self, k: int, seed: int) -> Path:
        return self.folds_dir / f"k{k}-s{seed}.csv"

    @property
    def experiments_dir(self) -> Path:
        return self.root / "experiments"

    def experiment_yaml(self, exp: str) -> Path:
        return self.experiments_dir / f"{check_name(exp)}.yaml"

    def exp_dir(self, exp: str) -> Path:
        return self.experiments_dir / check_name(exp)

    def fold_dir(self, exp: str, fold: int) -> Path:
        return self.exp_dir(exp) / f"fold{fold}"

    def fold_files(self, exp: str, fold: int) -> FoldFiles:
        return FoldFiles(self.fold_dir(exp, fold))

    def fold_dirs(self, exp: str) -> dict[int, Path]:
        """{fold: folder} of every fold{i}/ folder of the experiment, in fold order."""
        found = {int(p.name[4:]): p for p in self.exp_dir(exp).glob("fold*") if p.is_dir() and p.name[4:].isdigit()}
        return dict(sorted(found.items()))

    def fold_checkpoints(self, exp: str) -> dict[int, Path]:
        """{fold: best.pt} for every fold folder holding one (one seed per fold: best.pt directly in fold{i}/)."""
        return {f: FoldFiles(d).best for f, d in self.fold_dirs(exp).items() if FoldFiles(d).best.is_file()}

    def seed_dir(self, exp: str, fold: int, seed: int) -> Path:
        """One (fold, seed) run of a multi-seed experiment (train.seeds): fold{i}/seed{s}/."""
        return self.fold_dir(exp, fold) / f"seed{seed}"

    def seed_files(self, exp: str, fold: int, seed: int) -> FoldFiles:
        return FoldFiles(self.seed_dir(exp, fold, seed))

    def seed_dirs(self, exp: str, fold: int) -> dict[int, Path]:
        """{seed: folder} of every fold{i}/seed{s}/ folder of a fold, in seed order."""
        found = {int(p.name[4:]): p for p in self.fold_dir(exp, fold).glob("seed*")
                 if p.is_dir() and p.name[4:].lstrip("-").isdigit()}
        return dict(sorted(found.items()))

    def model_checkpoints(self, exp: str) -> dict[int | str, Path]:
        """Every model's best.pt: {fold: path} (one seed per fold), or {"<fold>-seed<s>": path} for the
        seed folders of a multi-seed experiment, in (fold, seed) order. What predict and export load."""
        found: dict[int | str, Path] = {}
        for fold, folder in self.fold_dirs(exp).items():
            if FoldFiles(folder).best.is_file():
                found[fold] = FoldFiles(folder).best
            for seed, sub in self.seed_dirs(exp, fold).items():
                if FoldFiles(sub).best.is_file():
                    found[f"{fold}-seed{seed}"] = FoldFiles(sub).best
        return found

    def pseudo_csv(self, exp: str) -> Path:
        """The pseudo-labelled test rows an experiment trains on (`comp pseudo`)."""
        return self.exp_dir(exp) / "pseudo.csv"

    def pseudo_json(self, exp: str) -> Path:
        """Where the pseudo labels came from: submission, sha256, threshold, rows kept per fold and class."""
        return self.exp_dir(exp) / "pseudo.json"

    def pair_dir(self, exp: str, a: int, b: int) -> Path:
        """A model of experiment `exp` trained without folds a and b (a < b), validated on both: the distillation
        teacher's targets for a student fold that must see nothing trained on its own rows."""
        return self.exp_dir(exp) / "pairs" / f"fold{a}-{b}"

    def best_ckpt(self, exp: str, fold: int) -> Path:
        return self.fold_files(exp, fold).best

    def last_ckpt(self, exp: str, fold: int) -> Path:
        return self.fold_files(exp, fold).last

    def tb_dir(self, exp: str) -> Path:
        """TensorBoard event files of the experiment (track: [tensorboard])."""
        return self.exp_dir(exp) / "tb"

    def exp_lock(self, exp: str) -> Path:
        """The experiment's short lock (aggregation, predict and ensemble writes)."""
        return self.exp_dir(exp) / ".lock"

    def oof_csv(self, exp: str) -> Path:
        return self.exp_dir(exp) / "oof.csv"

    def oof_tta_csv(self, exp: str) -> Path:
        """OOF rows re-predicted with the TTA of the test predictions (`comp predict --oof`)."""
        return self.exp_dir(exp) / "oof_tta.csv"

    def predict_json(self, exp: str) -> Path:
        """The record of the last predict: TTA, checkpoints, and the sha256 of each file it wrote."""
        return self.exp_dir(exp) / "predict.json"

    def lr_find_csv(self, exp: str) -> Path:
        """The learning-rate range test: lr, loss, smoothed per step (`comp lr-find`, `train.lr: auto`)."""
        return self.exp_dir(exp) / "lr_find.csv"

    def lr_find_json(self, exp: str) -> Path:
        """The range test's record: suggestion, rule, steps, fold, and the config it applies to."""
        return self.exp_dir(exp) / "lr_find.json"

    def scores_json(self, exp: str) -> Path:
        return self.exp_dir(exp) / "scores.json"

    def config_yaml(self, exp: str) -> Path:
        return self.exp_dir(exp) / "config.yaml"

    def test_probs_csv(self, exp: str, fold: int | None = None) -> Path:
        """The experiment's test probabilities (fold mean), or one fold model's."""
        return self.exp_dir(exp) / "test.csv" if fold is None else self.fold_files(exp, fold).test_csv

    def tune_journal(self, exp: str) -> Path:
        return self.exp_dir(exp) / "tune.journal"

    def trial_dir(self, exp: str, number: int) -> Path:
        """A tuning trial's fold folders (deleted when the trial ends)."""
        return self.exp_dir(exp) / "tune" / f"trial{number}"

    def trial_fold_dir(self, exp: str, number: int, fold: int) -> Path:
        return self.trial_dir(exp, number) / f"fold{fold}"

    def tuned_yaml(self, exp: str) -> Path:
        return self.experiments_dir / f"{check_name(exp)}-tuned.yaml"

    def report_dir(self, exp: str) -> Path:
        return self.exp_dir(exp) / "report"

    def report_html(self, exp: str) -> Path:
        return self.exp_dir(exp) / "report.html"

    @property
    def submissions_dir(self) -> Path:
        return self.root / "submissions"

    def submission_csv(self, name: str) -> Path:
        return self.submissions_dir / f"{check_name(name, 'submission')}.csv"

    def submission_json(self, name: str) -> Path:
        return self.submissions_dir / f"{check_name(name, 'submission')}.json"

    @property
    def submissions_lock(self) -> Path:
        """Held while a submission's csv and manifest are written."""
        return self.submissions_dir / ".lock"

    @property
    def leaderboard_json(self) -> Path:
        """Recorded public-leaderboard scores; beside submissions/, so no submission name can collide with it."""
        return self.root / "leaderboard.json"

    @property
    def eda_dir(self) -> Path:
        return self.root / "eda"

    def write_config(self, exp: str, cfg: Any, *, folds_file: dict | None = None, extra: dict | None = None) -> Path:
        """The resolved config, its hashes, the folds file it trains on (and `extra` records such as lr_chosen)."""
        doc = {"config_hash": cfg.hash(), "train_hash": cfg.train_hash(), **({"folds_file": folds_file} if folds_file else {}),
               **(extra or {}), **cfg.model_dump(mode="json")}
        return write_yaml(self.config_yaml(exp), doc)
