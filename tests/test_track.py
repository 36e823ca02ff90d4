"""Experiment trackers: one fold-train tracked by TensorBoard, MLflow and W&B (offline), each read back."""

from __future__ import annotations

import glob
import importlib.util
import json
import struct
from pathlib import Path

import pytest

import comp
from comp.core.errors import CompError


def wandb_records(path: str) -> list:
    """The protobuf records of an offline W&B run file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, records, chunk = Path(path).read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
        elif kind == 0:
            break
    return records


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    import torch

    from conftest import build_workspace

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("track")
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_DIR", str(tmp / "wandb"))
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = build_workspace(tmp / "ws")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ws = comp.Workspace(root, progress=False)
        scores = ws.fold_train("baseline", overrides={"folds.k": 2, "track": ["tensorboard", "mlflow", "wandb"]})
    finally:
        torch.set_num_threads(threads)
    yield root, tmp, scores
    mp.undo()


def test_tensorboard_events(tracked) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _, scores = tracked
    tb = root / "experiments" / "baseline" / "tb"
    folds = {}
    for fold in (0, 1):  # one run per fold, the same tags in each, so TensorBoard overlays the folds
        folds[fold] = EventAccumulator(str(tb / f"fold{fold}"), size_guidance={"scalars": 0})
        folds[fold].Reload()
        assert {"train_loss", "val_loss", "macro_f1", "lr", "step/train_loss", "step/lr"} <= set(folds[fold].Tags()["scalars"])
    assert [e.step for e in folds[1].Scalars("val_loss")] == [1, 2]
    steps = [e.step for e in folds[0].Scalars("step/lr")]
    assert steps == sorted(steps) and len(steps) > 2 and steps[0] == 1  # per optimizer step, counted across epochs
    acc = EventAccumulator(str(tb), size_guidance={"images": 0})
    acc.Reload()
    assert acc.Scalars("cv/mean")[0].value == pytest.approx(scores.attrs["mean"], abs=1e-6)
    assert "config" in "".join(acc.Tags()["tensors"])
    assert any(t.startswith("report/") for t in acc.Tags()["images"])  # the report's figures
    plugins = acc.PluginTagToContent("hparams")  # HParams: the config beside CV/OOF
    assert plugins


def test_mlflow_run(tracked) -> None:
    from mlflow.tracking import MlflowClient

    root, _, scores = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("baseline").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == "test_resnet"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "fold0/val_loss")] == [1, 2]
    assert run.data.metrics["cv_oof"] == pytest.approx(scores.attrs["oof"], abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "config.yaml"} <= artifacts


def test_wandb_offline_run(tracked) -> None:
    _, tmp, scores = tracked
    files = glob.glob(str(tmp / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    records = wandb_records(files[0])
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    history = [{key(i): json.loads(i.value_json) for i in r.history.item} for r in records if r.HasField("history")]
    assert [h["epoch"] for h in history if h.get("fold") == 0] == [1, 2]
    assert all("fold0/val_loss" in h for h in history if h.get("fold") == 0)
    summary = {key(i): json.loads(i.value_json) for r in records if r.HasField("summary") for i in r.summary.update}
    assert summary["cv/mean"] == pytest.approx(scores.attrs["mean"], abs=1e-6)
    config = {i.key for r in records if r.HasField("config") for i in r.config.update}
    assert {"model", "train", "config_hash"} <= config
    assert any(r.HasField("artifact") and r.artifact.name == "baseline-report" for r in records)


def test_missing_tracker_names_the_extra(tiny_ws, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(CompError, match=r"wandb is not installed; pip install 'comp\[track\]'"):
        comp.Workspace(tiny_ws, progress=False).fold_train(overrides={"folds.k": 2}, track=["wandb"])


def test_tensorboard_prints_the_logdir_command(tiny_ws, caplog) -> None:
    from comp.train.track import TensorBoardTracker
    from comp.core.layout import Layout

    with caplog.at_level("INFO", logger="comp"):
        tracker = TensorBoardTracker(Layout.at(tiny_ws), "baseline")
        tracker.close()
    assert f"tensorboard --logdir {tiny_ws / 'experiments' / 'baseline' / 'tb'}" in caplog.text


def test_mlflow_logs_no_info_lines(tmp_path, capfd) -> None:
    import logging

    from comp.train.track import MlflowTracker

    class Paths:
        mlruns_dir = tmp_path / "mlruns"

    logging.basicConfig(level=logging.INFO, force=True)
    try:
        MlflowTracker(Paths(), "quiet").close()
    finally:
        logging.basicConfig(level=logging.WARNING, force=True)
    err = capfd.readouterr().err
    assert "INFO mlflow" not in err and "Creating initial" not in err and "alembic" not in err


def test_step_watch_numbers_steps_across_epochs_and_resumes() -> None:
    from comp.core.progress import Progress
    from comp.train.track import StepWatch

    seen = []

    class Record:
        def on_step(self, fold, step, loss, lr):
            seen.append((fold, step, loss, lr))

    watch = StepWatch(Progress(), Record())
    for epoch in (2, 3):  # a run resumed at epoch 2 numbers its steps as an uninterrupted one would
        for _ in watch.track(range(4), description=f"fold 1 epoch {epoch}/3"):
            watch.note(loss=0.5, lr=0.01)
        watch.note(val_loss=0.4)  # the epoch's end: not a step
    for _ in watch.track(range(2), description="folds"):
        watch.note(loss=1.0, lr=1.0)  # not inside an epoch bar
    assert [s[1] for s in seen] == [5, 6, 7, 8, 9, 10, 11, 12] and {s[0] for s in seen} == {1}
