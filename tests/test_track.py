"""Experiment trackers: one fold-train tracked by TensorBoard, MLflow and W&B (offline), each read back."""

from __future__ import annotations

import glob
import importlib.util
import json
import struct
from pathlib import Path

import pytest

import comp
from comp.errors import CompError


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
    acc = EventAccumulator(str(root / "experiments" / "baseline" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"fold0/train_loss", "fold0/val_loss", "fold0/metric", "fold0/lr", "fold1/metric", "cv/mean", "cv/oof"} <= tags
    assert [e.step for e in acc.Scalars("fold1/val_loss")] == [1, 2]
    assert acc.Scalars("cv/mean")[0].value == pytest.approx(scores.attrs["mean"], abs=1e-6)
    assert "config" in "".join(acc.Tags()["tensors"])


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
