"""Experiment trackers for fold-train: TensorBoard, MLflow, W&B (`track: [...]` in an experiment, or --track).

Each receives the resolved config, per-fold per-epoch metrics (train/val loss, the metric, learning
rate), the CV and OOF scores, and report.html as an artifact. TensorBoard writes event files under
experiments/<exp>/tb/; MLflow logs to MLFLOW_TRACKING_URI or, by default, a SQLite store in the
workspace's mlruns/ (artifacts beside it); W&B runs offline unless you have logged in (or set
WANDB_MODE). Packages are imported only when a tracker is used: pip install 'comp[track]'.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import netrc
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from comp.core.errors import CompError
from comp.core.progress import Progress
from comp.core.layout import Layout

log = logging.getLogger("comp.train.track")
T = TypeVar("T")

TRACKERS = ("tensorboard", "mlflow", "wandb")
EPOCH_KEYS = {"train_loss": "train_loss", "val_loss": "val_loss", "score": "metric", "lr": "lr"}


def parse_track(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'tensorboard,mlflow' or a list -> a checked tuple of tracker names."""
    if text is None:
        return ()
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise CompError(f"unknown tracker {bad[0]!r}: use {', '.join(TRACKERS)} (e.g. --track tensorboard,mlflow)")
    return tuple(dict.fromkeys(names))


def check_installed(names: Sequence[str]) -> None:
    """A tracker whose package is missing is an error naming the extra to install."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise CompError(f"track: {name} is not installed; pip install 'comp[track]' (or pip install {name}), "
                            f"or remove {name} from track")


class Tracker:
    """What every tracker receives; this base ignores it all."""

    def start(self, config: dict[str, Any], config_hash: str) -> None:
        """The resolved config, once."""

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        """One fold's epoch (numbered from 1): train_loss, val_loss, metric, lr."""

    def train_step(self, fold: int, step: int, loss: float, lr: float) -> None:
        """One optimizer step of a fold: the epoch's running training loss and the lr (TensorBoard only)."""

    def finish(self, scores: dict, report: Path | None) -> None:
        """CV/OOF scores and report.html."""

    def close(self, ok: bool = True) -> None:
        """Flush and end the run."""


class TensorBoardTracker(Tracker):
    """One TensorBoard run per fold (tb/fold0, tb/fold1, ...) with the same tags, so the folds overlay; the run's own
    events in tb/ itself: the config, its HParams with CV/OOF, the scores and the report's figures.

    Tags per fold: train_loss, val_loss, the metric's own name (macro_f1, rmse, ...) and lr by epoch;
    step/train_loss (the epoch's running mean) and step/lr by optimizer step when the run is watched (Trackers.watch).
    """

    def __init__(self, ws: Layout, exp: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.SummaryWriter = SummaryWriter
        self.dir = ws.tb_dir(exp)
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.folds: dict[int, Any] = {}
        self.metric, self.hparams = "metric", {}
        log.info("TensorBoard: tensorboard --logdir %s", self.dir)

    def fold_writer(self, fold: int) -> Any:
        if fold not in self.folds:
            self.folds[fold] = self.SummaryWriter(log_dir=str(self.dir / f"fold{fold}"))
        return self.folds[fold]

    def start(self, config: dict[str, Any], config_hash: str) -> None:
        import yaml

        self.metric = str(config.get("metric") or "metric")
        self.hparams = {**hparam_values(config), "config_hash": config_hash}
        self.writer.add_text("config", f"hash {config_hash}\n\n    " +
                             yaml.safe_dump(config, sort_keys=False).replace("\n", "\n    "))

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        writer = self.fold_writer(fold)
        for key, value in metrics.items():
            writer.add_scalar(self.metric if key == "metric" else key, value, epoch)

    def train_step(self, fold: int, step: int, loss: float, lr: float) -> None:
        writer = self.fold_writer(fold)
        writer.add_scalar("step/train_loss", loss, step)
        writer.add_scalar("step/lr", lr, step)

    def finish(self, scores: dict, report: Path | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        summary = summary_metrics(scores)
        for key, value in summary.items():
            self.writer.add_scalar(key, value, 0)
        for summary_pb in hparams(self.hparams, {k: v for k, v in summary.items() if k in HPARAM_METRICS}):
            self.writer.file_writer.add_summary(summary_pb)
        if report is not None:
            self.writer.add_text("report", f"report: {report.name} (experiments folder)")
            for tag, image in report_images(report):
                self.writer.add_image(f"report/{tag}", image, 0, dataformats="HWC")

    def close(self, ok: bool = True) -> None:
        for writer in [self.writer, *self.folds.values()]:
            writer.close()


HPARAM_METRICS = ("cv/mean", "cv/std", "cv/oof")


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config as TensorBoard's HParams takes it: numbers, text and flags (anything else as text)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flatten(config).items()}


_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


def report_images(report: Path) -> list[tuple[str, Any]]:
    """(tag, HxWx3 uint8 array) for each PNG figure embedded in report.html, tagged by its alt text."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    out, seen = [], set()
    for data, alt in _IMG.findall(report.read_text(encoding="utf-8")):
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", html.unescape(alt)).strip("_") or "figure"
        while tag in seen:
            tag += "_"
        seen.add(tag)
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            out.append((tag, np.asarray(img.convert("RGB"))))
    return out


class MlflowTracker(Tracker):
    """One MLflow run per fold-train, in the MLflow experiment named after the comp experiment."""

    def __init__(self, ws: Layout, exp: str) -> None:
        from mlflow.tracking import MlflowClient

        quiet_mlflow()  # after the import: importing mlflow sets its logger to INFO

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            store = ws.mlruns_dir
            store.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(exp)
        exp_id = found.experiment_id if found else self.client.create_experiment(exp, artifact_location=artifacts)
        self.run_id = self.client.create_run(exp_id, run_name=f"{exp} fold-train", tags={"comp.experiment": exp}).info.run_id

    def start(self, config: dict[str, Any], config_hash: str) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:500]) for k, v in flatten(config).items()] + [Param("config_hash", config_hash)]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_dict(self.run_id, config, "config.yaml")

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, f"fold{fold}/{key}", value, step=epoch)

    def finish(self, scores: dict, report: Path | None) -> None:
        for key, value in summary_metrics(scores).items():
            self.client.log_metric(self.run_id, key.replace("/", "_"), value)
        if report is not None and report.is_file():
            self.client.log_artifact(self.run_id, str(report))

    def close(self, ok: bool = True) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


def quiet_mlflow() -> None:
    """MLflow and the database migrations it runs (alembic) log INFO lines to the console ("Creating initial
    tables", "Context impl SQLiteImpl", ...): keep their warnings and errors only."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def wandb_logged_in() -> bool:
    """An API key in WANDB_API_KEY or ~/.netrc (W&B's own login); no network call."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    """A W&B run: offline (files under WANDB_DIR or experiments/<exp>/) unless logged in or WANDB_MODE says otherwise."""

    def __init__(self, ws: Layout, exp: str) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        folder = Path(os.environ.get("WANDB_DIR") or ws.exp_dir(exp))
        folder.mkdir(parents=True, exist_ok=True)
        self.wandb, self.exp, self.step = wandb, exp, 0
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or f"comp-{ws.root.name}", name=exp,
                              mode=mode, dir=str(folder), job_type="fold-train", reinit="create_new")
        log.info("W&B run %s (%s)", self.run.id, mode)

    def start(self, config: dict[str, Any], config_hash: str) -> None:
        self.run.config.update({**config, "config_hash": config_hash}, allow_val_change=True)

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        self.step += 1
        self.run.log({"fold": fold, "epoch": epoch, **{f"fold{fold}/{k}": v for k, v in metrics.items()}}, step=self.step)

    def finish(self, scores: dict, report: Path | None) -> None:
        self.run.summary.update(summary_metrics(scores))
        if report is not None and report.is_file():
            artifact = self.wandb.Artifact(f"{self.exp}-report", type="report")
            artifact.add_file(str(report))
            self.run.log_artifact(artifact)

    def close(self, ok: bool = True) -> None:
        self.run.finish(exit_code=0 if ok else 1)


CLASSES = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker, "wandb": WandbTracker}


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def summary_metrics(scores: dict) -> dict[str, float]:
    """cv/mean, cv/std, cv/oof and cv/fold<i> from scores.json (present values only)."""
    out = {f"cv/{k}": float(scores[k]) for k in ("mean", "std", "oof") if scores.get(k) is not None}
    out.update({f"cv/fold{f}": float(s) for f, s in (scores.get("folds") or {}).items()})
    return out


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The tracked numbers of one epoch's history row."""
    return {name: float(row[key]) for key, name in EPOCH_KEYS.items() if key in row and row[key] == row[key]}


class Trackers:
    """All trackers of a run; folds not seen live (already trained, or in --devices children) are replayed."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers, self.live_folds = trackers, set()

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def watch(self, progress: Progress) -> Progress:
        """`progress`, also handing each training step to the trackers that take steps (TensorBoard)."""
        if any(isinstance(t, TensorBoardTracker) for t in self.trackers):
            return StepWatch(progress, self)
        return progress

    def on_step(self, fold: int, step: int, loss: float, lr: float) -> None:
        for t in self.trackers:
            t.train_step(fold, step, loss, lr)

    def on_epoch(self, fold: int, epoch: int, row: dict[str, Any]) -> None:
        """fold_train's on_epoch: row['epoch'] counts from 1."""
        self.live_folds.add(fold)
        for t in self.trackers:
            t.epoch(fold, int(row.get("epoch", epoch + 1)), epoch_metrics(row))

    def finish(self, ws: Layout, exp: str, scores: dict) -> None:
        """Replay the history.csv of folds not seen live, then the scores and report.html."""
        import pandas as pd

        for fold in sorted(int(f) for f in (scores.get("folds") or {})):
            history = ws.fold_files(exp, fold).history
            if fold in self.live_folds or not history.is_file():
                continue
            for row in pd.read_csv(history).to_dict(orient="records"):
                for t in self.trackers:
                    t.epoch(fold, int(row["epoch"]), epoch_metrics({**row, "score": row.get("metric")}))
        report = ws.report_html(exp)
        for t in self.trackers:
            t.finish(scores, report if report.is_file() else None)


class StepWatch(Progress):
    """A display that also hands the trackers each training step: a note with loss and lr inside a
    'fold N epoch E/T' bar is step (E-1)*T + batch of fold N (the same number after a resume)."""

    def __init__(self, inner: Progress, trackers: "Trackers") -> None:
        self.inner, self.trackers = inner, trackers
        self.at: tuple[int, int] | None = None  # (fold, step) of the batch being trained

    def track(self, iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        match = _EPOCH_BAR.match(description)
        if match is None or not total:
            yield from self.inner.track(iterable, total=total, description=description)
            return
        fold, first = int(match.group(1)), (int(match.group(2)) - 1) * total
        for i, item in enumerate(self.inner.track(iterable, total=total, description=description)):
            self.at = (fold, first + i + 1)
            yield item
        self.at = None

    def note(self, **fields: Any) -> None:
        self.inner.note(**fields)
        if self.at is not None and "loss" in fields and "lr" in fields:
            self.trackers.on_step(*self.at, float(fields["loss"]), float(fields["lr"]))

    def log(self, message: str) -> None:
        self.inner.log(message)


_EPOCH_BAR = re.compile(r"fold (\d+) epoch (\d+)/\d+$")


@contextmanager
def open_trackers(names: Sequence[str], ws: Layout, exp: str, cfg: Any) -> Iterator[Trackers]:
    """Start the named trackers with the resolved config; close them (FAILED when the block raised)."""
    names = parse_track(list(names))
    check_installed(names)
    started: list[Tracker] = []
    ok = False
    try:
        for name in names:
            started.append(CLASSES[name](ws, exp))
            started[-1].start(cfg.model_dump(mode="json"), cfg.hash())
        yield Trackers(started)
        ok = True
    finally:
        for t in started:
            t.close(ok)
