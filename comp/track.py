"""Experiment trackers for fold-train: TensorBoard, MLflow, W&B (`track: [...]` in an experiment, or --track).

Each receives the resolved config, per-fold per-epoch metrics (train/val loss, the metric, learning
rate), the CV and OOF scores, and report.html as an artifact. TensorBoard writes event files under
experiments/<exp>/tb/; MLflow logs to MLFLOW_TRACKING_URI or, by default, a SQLite store in the
workspace's mlruns/ (artifacts beside it); W&B runs offline unless you have logged in (or set
WANDB_MODE). Packages are imported only when a tracker is used: pip install 'comp[track]'.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from comp.errors import CompError
from comp.workspace import Workspace

log = logging.getLogger("comp.track")

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

    def finish(self, scores: dict, report: Path | None) -> None:
        """CV/OOF scores and report.html."""

    def close(self, ok: bool = True) -> None:
        """Flush and end the run."""


class TensorBoardTracker(Tracker):
    """Event files under experiments/<exp>/tb/ (read them with `tensorboard --logdir experiments/<exp>/tb`)."""

    def __init__(self, ws: Workspace, exp: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = ws.tb_dir(exp)
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def start(self, config: dict[str, Any], config_hash: str) -> None:
        import yaml

        self.writer.add_text("config", f"hash {config_hash}\n\n    " +
                             yaml.safe_dump(config, sort_keys=False).replace("\n", "\n    "))

    def epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"fold{fold}/{key}", value, epoch)

    def finish(self, scores: dict, report: Path | None) -> None:
        for key, value in summary_metrics(scores).items():
            self.writer.add_scalar(key, value, 0)
        if report is not None:
            self.writer.add_text("report", f"report: {report.name} (experiments folder)")

    def close(self, ok: bool = True) -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run per fold-train, in the MLflow experiment named after the comp experiment."""

    def __init__(self, ws: Workspace, exp: str) -> None:
        from mlflow.tracking import MlflowClient

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

    def __init__(self, ws: Workspace, exp: str) -> None:
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

    def on_epoch(self, fold: int, epoch: int, row: dict[str, Any]) -> None:
        """fold_train's on_epoch: row['epoch'] counts from 1."""
        self.live_folds.add(fold)
        for t in self.trackers:
            t.epoch(fold, int(row.get("epoch", epoch + 1)), epoch_metrics(row))

    def finish(self, ws: Workspace, exp: str, scores: dict) -> None:
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


@contextmanager
def open_trackers(names: Sequence[str], ws: Workspace, exp: str, cfg: Any) -> Iterator[Trackers]:
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
