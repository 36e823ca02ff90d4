"""Issue 16's behaviour (timings live in benchmarks/): auto workers, one decode per image, MIH, trial checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comp.core.config import load_config
from comp.core.layout import Layout


def test_auto_workers_follow_device_and_cores():
    from comp.data.workers import auto_workers, resolve_workers

    assert auto_workers(gpu=False, cores=1) == 0
    assert auto_workers(gpu=False, cores=2) == 0
    assert 1 <= auto_workers(gpu=False, cores=16) <= 4
    assert auto_workers(gpu=True, cores=2) == 1
    assert auto_workers(gpu=True, cores=16) == 15
    assert resolve_workers(3, "cpu") == 3
    assert resolve_workers("auto", "cpu") == auto_workers(gpu=False, cores=__import__("comp.data.workers").data.workers.usable_cores())


def test_auto_is_the_default_and_outside_train_hash(tiny_ws: Path):
    (tiny_ws / "experiments" / "baseline.yaml").write_text("model: {name: test_resnet, pretrained: false}\n")
    auto = load_config(tiny_ws)
    assert auto.train.num_workers == "auto"
    assert load_config(tiny_ws, overrides=["train.num_workers=0"]).train_hash() == auto.train_hash()


def test_mih_finds_exactly_the_pairs_of_the_dense_search():
    from comp.eda.duplicates import dense_hamming_pairs, hamming_pairs, mih_hamming_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=1500, dtype=np.uint64)
    flips = [np.uint64(1) << rng.integers(0, 64, 600).astype(np.uint64) for _ in range(3)]
    near = base[:600] ^ flips[0] ^ flips[1] ^ flips[2]  # up to 3 bits away
    h = np.concatenate([base, near, base[:40]])  # and 40 exact duplicates
    for t in (0, 2, 6, 11):
        for b in (None, h[1000:]):
            want, got = dense_hamming_pairs(h, b, threshold=t), mih_hamming_pairs(h, b, threshold=t)
            assert all(np.array_equal(x, y) for x, y in zip(want, got)), t
    assert len(hamming_pairs(h, threshold=6, block_cells=10)[0]) >= 640  # the dispatcher's MIH path finds them all


def test_mih_checks_skewed_buckets_in_blocks_and_finds_the_same_pairs(monkeypatch):
    """Hashes whose bits are mostly fixed (smooth photos) crowd a few substring buckets; the candidates are then checked
    in blocks of about `block`, never all at once, and the pairs equal the dense search's."""
    import comp.eda.duplicates as dup

    rng = np.random.default_rng(1)
    free = np.uint64(0)
    for k in rng.choice(64, 12, replace=False):  # 12 of 64 bits vary: every substring has few distinct values
        free |= np.uint64(1) << np.uint64(int(k))
    h = rng.integers(0, 2**63, size=3000, dtype=np.uint64) & free
    largest = []
    real = dup._ranges_to_pairs
    monkeypatch.setattr(dup, "_ranges_to_pairs", lambda lo, hi: largest.append(int((hi - lo).sum())) or real(lo, hi))
    want = dup.dense_hamming_pairs(h, threshold=4)
    for block in (64, 5_000, 10**9):
        largest.clear()
        got = dup.mih_hamming_pairs(h, threshold=4, block=block)
        assert all(np.array_equal(x, y) for x, y in zip(want, got)), block
        if block == 5_000:  # no step beyond the budget, except a single query's own bucket
            assert max(largest) <= block + 3000
    assert max(largest) > 100_000  # unblocked, one probe alone held far more candidates


def _decodes(monkeypatch) -> list[str]:
    import comp.data.images as images

    calls: list[str] = []
    real = images.Image.open

    def counting_open(path, *a, **k):
        calls.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(images.Image, "open", counting_open)
    return calls


def test_first_run_decodes_each_image_once_and_caches_the_same_pixels(tiny_ws: Path, monkeypatch):
    from comp.data.cache import prepare_images
    from comp.data.checked import load_checked_tables
    from comp.data.images import check_images

    cfg, ws = load_config(tiny_ws), Layout.at(tiny_ws)
    calls = _decodes(monkeypatch)
    tables = load_checked_tables(cfg, ws)
    n = len(tables.train) + len(tables.test)
    assert len(calls) == n and len(set(calls)) == n  # one open per image: the check is the cache build's decode
    checked = check_images(tables.train["path"].tolist(), ws.cache_dir / "image_check.json")
    assert checked["ok"].all() and (checked["width"] == 16).all()
    assert len(calls) == n  # the facts came from the cache build: check_images decoded nothing more
    load_checked_tables(cfg, ws)
    assert len(calls) == n  # warm: nothing decoded
    monkeypatch.undo()
    fresh = prepare_images(tables.train, cfg.image.model_copy(update={"cache": False}), cfg.augment, ws)
    cached = prepare_images(tables.train, cfg.image, cfg.augment, ws)
    assert all(np.array_equal(fresh[i], cached[i]) for i in range(len(tables.train)))


def test_a_corrupt_image_is_named_and_no_cache_is_left(tiny_ws: Path):
    from comp.data.checked import load_checked_tables
    from comp.core.errors import CompError

    (tiny_ws / "data" / "images" / "p000_1.png").write_bytes(b"not a png")
    (tiny_ws / "data" / "images" / "p101_2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CompError, match=r"2 images in train.csv could not be decoded.*p000_1.png"):
        load_checked_tables(load_config(tiny_ws), Layout.at(tiny_ws))
    assert not list((tiny_ws / ".cache" / "images").glob("*.npy"))


@pytest.mark.parametrize("resumable,writes", [(True, 2), (False, 1)])
def test_trials_write_last_pt_only_when_the_fold_ends(tiny_ws: Path, monkeypatch, resumable: bool, writes: int):
    import comp.train.engine as engine
    from comp.data.tables import load_tables
    from comp.data.folds import ensure_folds

    cfg, ws = load_config(tiny_ws, overrides=["folds.k=3"]), Layout.at(tiny_ws)
    tables = load_tables(cfg, ws)
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
    saved = []
    real = engine.save_last
    monkeypatch.setattr(engine, "save_last", lambda *a, **k: (saved.append(a[-1].epoch), real(*a, **k)))
    result = engine.fit_fold(engine.FoldJob(cfg, tables, fold_of, 0, tiny_ws / "out", ws=ws, resumable=resumable))
    assert len(saved) == writes and saved[-1] == cfg.train.epochs
    assert np.isfinite(result.score)


# ---------------------------------------------------------------- checkpoints written while training goes on


def _ckpt_setup(root: Path, *overrides: str):
    from comp.data.tables import load_tables
    from comp.data.folds import ensure_folds

    cfg, ws = load_config(root, overrides=["folds.k=3", *overrides]), Layout.at(root)
    tables = load_tables(cfg, ws)
    return cfg, ws, tables, ensure_folds(ws, tables, cfg).fold_of(tables.train)


def test_a_queued_checkpoint_is_a_snapshot_written_completely(tmp_path: Path):
    import torch

    from comp.model.checkpoint import CheckpointWriter, snapshot

    live = {"w": torch.arange(6.0), "history": [{"epoch": 1}], "step": (torch.ones(2), 3)}
    writer = CheckpointWriter()
    writer.submit(tmp_path / "last.pt", snapshot(live))
    live["w"].add_(100.0)  # training moves on while the file is written
    live["history"].append({"epoch": 2})
    live["step"][0].zero_()
    writer.close()
    doc = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.equal(doc["w"], torch.arange(6.0)) and doc["history"] == [{"epoch": 1}]
    assert torch.equal(doc["step"][0], torch.ones(2)) and doc["step"][1] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_a_failed_background_write_keeps_the_previous_file_and_is_raised(tmp_path: Path, monkeypatch):
    import torch

    import comp.model.checkpoint as checkpoint
    from comp.model.checkpoint import CheckpointWriter

    path = tmp_path / "last.pt"
    writer = CheckpointWriter()
    writer.submit(path, {"epoch": torch.tensor(1)})
    writer.wait()

    def half_then_fail(obj, f):  # a disk that fills up in the middle of the file
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", half_then_fail)
    writer.submit(path, {"epoch": torch.tensor(2)})
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert int(torch.load(path, weights_only=True)["epoch"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


KILLED_WRITER = r"""
import os, sys, time, torch
import comp.model.checkpoint as checkpoint
path = sys.argv[1]
writer = checkpoint.CheckpointWriter()
writer.submit(path, {"epoch": torch.tensor(1), "w": torch.zeros(1000)})
writer.wait()
real = torch.save
def slow_save(obj, f):
    with open(f, "wb") as fh:  # the start of the file is on disk, then the process is killed
        fh.write(b"PK\x03\x04" + b"x" * 4096)
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
checkpoint.torch.save = slow_save
writer.submit(path, {"epoch": torch.tensor(2), "w": torch.ones(1000)})
time.sleep(60)
"""


def test_a_kill_during_the_background_write_leaves_the_previous_last_pt_loadable(tmp_path: Path):
    import signal
    import subprocess
    import sys

    import torch

    from comp.model.checkpoint import load_checkpoint

    path = tmp_path / "last.pt"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    doc = load_checkpoint(path)
    assert doc is not None and int(doc["epoch"]) == 1 and torch.equal(doc["w"], torch.zeros(1000))
    assert [p.name for p in tmp_path.glob(".last.pt.*.tmp")]  # the half-written temporary, never renamed over it


def test_background_checkpoints_and_the_in_memory_result_match_what_is_read_back(tiny_ws: Path):
    import torch

    from comp.train.engine import FoldJob, finished_result, fit_fold
    from comp.core.layout import FoldFiles

    cfg, ws, tables, fold_of = _ckpt_setup(tiny_ws, "train.epochs=3")
    out = tiny_ws / "out"
    result = fit_fold(FoldJob(cfg, tables, fold_of, 1, out, ws=ws))
    read = finished_result(out, cfg, 1)  # what every later reader (aggregation, predict) sees
    assert read is not None and read.val_ids == result.val_ids and read.best_epoch == result.best_epoch
    assert read.score == result.score and read.val_loss == result.val_loss and read.minutes == result.minutes
    assert read.val_probs.dtype == result.val_probs.dtype and np.array_equal(read.val_probs, result.val_probs)
    pd.testing.assert_frame_equal(read.history, result.history)
    last = torch.load(FoldFiles(out).last, weights_only=True)
    assert last["finished"] and last["next_epoch"] == 3 and len(last["history"]) == 3
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_a_trial_writes_no_checkpoints_and_reused_loaders_give_the_fresh_result(tiny_ws: Path):
    from comp.train.engine import FoldJob, fit_fold
    from comp.tune.objective import LoaderCache

    cfg, ws, tables, fold_of = _ckpt_setup(tiny_ws)
    fresh = fit_fold(FoldJob(cfg, tables, fold_of, 0, tiny_ws / "fresh", ws=ws))
    cache = LoaderCache()
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": cfg.train.lr / 2})})
    fit_fold(FoldJob(other, tables, fold_of, 0, tiny_ws / "t0", ws=ws, checkpoints=False), make_loaders=cache)
    trial = fit_fold(FoldJob(cfg, tables, fold_of, 0, tiny_ws / "t1", ws=ws, checkpoints=False), make_loaders=cache)
    assert cache.hits == 1  # another lr: the same loaders
    assert not list((tiny_ws / "t1").glob("*.pt")) and not list((tiny_ws / "t0").glob("*.pt"))
    assert np.array_equal(trial.val_probs, fresh.val_probs) and trial.score == fresh.score
    assert trial.history.drop(columns="seconds").equals(fresh.history.drop(columns="seconds"))
    smaller = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": 4})})
    fit_fold(FoldJob(smaller, tables, fold_of, 0, tiny_ws / "t2", ws=ws, checkpoints=False), make_loaders=cache)
    assert cache.hits == 1  # another batch size: new loaders


def test_the_error_gallery_is_one_png_with_each_image_in_its_cell(tmp_path: Path):
    import io

    from PIL import Image

    from comp.report.sections import gallery_png

    paths = {}
    for name, colour in (("r", (255, 0, 0)), ("b", (0, 0, 255)), ("g", (0, 255, 0))):
        paths[name] = str(tmp_path / f"{name}.png")
        Image.new("RGB", (40, 20), colour).save(paths[name])
    rows = pd.DataFrame({"id": ["r", "b", "g"], "true": ["cat", "dog", "cat"], "predicted": ["dog", "cat", "dog"],
                         "p_predicted": [0.9, 0.8, 0.7], "fold": [0, 1, 2]})
    sheet = np.asarray(Image.open(io.BytesIO(gallery_png(rows, paths, cols=2))).convert("RGB"))
    h, w, _ = sheet.shape
    top, bottom = sheet[: h // 2], sheet[h // 2:]
    red, blue, green = ((sheet == c).all(axis=2) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0)))
    assert red[: h // 2, : w // 2].sum() > 500 and red[:, w // 2:].sum() == 0 and red[h // 2:].sum() == 0
    assert blue[: h // 2, w // 2:].sum() > 500 and blue[:, : w // 2].sum() == 0
    assert green[h // 2:, : w // 2].sum() > 500 and green[: h // 2].sum() == 0
    assert (top != 255).any(axis=2)[:30].any() and (bottom != 255).any()  # captions drawn above the thumbnails


# ---------------------------------------------------------------- when checkpoints reach the disk (train.checkpoint_seconds)


def _count_writes(monkeypatch) -> list[tuple[str, int]]:
    """(file name, epoch) of every checkpoint the writer thread writes, in order."""
    import torch

    import comp.model.checkpoint as checkpoint

    writes: list[tuple[str, int]] = []
    real = checkpoint.save_checkpoint

    def save(path, payload):
        writes.append((Path(path).name, int(payload["epoch"])))
        return real(path, payload)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    assert torch  # the payloads are torch checkpoints
    return writes


@pytest.mark.parametrize("seconds,epoch_seconds,expected", [
    (60, 0, [("best.pt", 2), ("last.pt", 2)]),  # short epochs: one write per fold, at its end
    (0, 0, [("best.pt", 0), ("last.pt", 0), ("best.pt", 1), ("last.pt", 1), ("best.pt", 2), ("last.pt", 2)]),
    (60, 61, [("best.pt", 0), ("last.pt", 0), ("best.pt", 1), ("last.pt", 1), ("best.pt", 2), ("last.pt", 2)]),
    (60, 35, [("best.pt", 1), ("last.pt", 1), ("best.pt", 2), ("last.pt", 2)]),  # 70 s after epoch 2
])
def test_checkpoints_reach_the_disk_every_checkpoint_seconds_and_at_the_end(tiny_ws: Path, monkeypatch, seconds: int,
                                                                             epoch_seconds: float, expected: list):
    """Each epoch is snapshotted; the files are written once train.checkpoint_seconds passed since the last write
    (the clock advanced epoch_seconds per epoch here), and always when the fold ends; best.pt before last.pt."""
    import comp.train.engine as engine

    writes = _count_writes(monkeypatch)
    clock = {"now": 1000.0}
    real_end = engine.FoldCheckpoints.epoch_end

    def epoch_end(self, finished):
        clock["now"] += epoch_seconds
        return real_end(self, finished)

    monkeypatch.setattr(engine.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(engine.FoldCheckpoints, "epoch_end", epoch_end)
    monkeypatch.setattr(engine, "is_better", lambda *a: True)  # every epoch improves: a best.pt each epoch
    cfg, ws, tables, fold_of = _ckpt_setup(tiny_ws, "train.epochs=3", f"train.checkpoint_seconds={seconds}")
    engine.fit_fold(engine.FoldJob(cfg, tables, fold_of, 0, tiny_ws / "out", ws=ws))
    assert writes == expected


def test_a_stopped_fold_writes_its_last_finished_epoch_and_resumes_from_it(tiny_ws: Path, monkeypatch):
    """Nothing was written yet (epochs shorter than train.checkpoint_seconds) when the fold is stopped after epoch 2
    (Ctrl-C, SIGTERM, an error): the held epoch-2 checkpoints are written on the way out, and the rerun trains
    only epoch 3 and ends where an uninterrupted fit does."""
    import comp.train.engine as engine

    cfg, ws, tables, fold_of = _ckpt_setup(tiny_ws, "train.epochs=3")
    whole = engine.fit_fold(engine.FoldJob(cfg, tables, fold_of, 0, tiny_ws / "whole", ws=ws))
    writes = _count_writes(monkeypatch)

    class Stop(KeyboardInterrupt):
        pass

    def stop_after_second(epoch: int, info: dict) -> None:
        if epoch == 1:
            assert writes == []  # held, not written yet
            raise Stop

    with pytest.raises(Stop):
        engine.fit_fold(engine.FoldJob(cfg, tables, fold_of, 0, tiny_ws / "cut", ws=ws), on_epoch=stop_after_second)
    assert [name for name, _ in writes][-1] == "last.pt" and writes[-1][1] == 1
    seen = []
    resumed = engine.fit_fold(engine.FoldJob(cfg, tables, fold_of, 0, tiny_ws / "cut", ws=ws), on_epoch=lambda e, i: seen.append(e))
    assert seen == [2]
    np.testing.assert_array_equal(resumed.val_probs, whole.val_probs)


def _slow_writes_and_lock_releases(monkeypatch, *, fail: str | None = None) -> list[tuple]:
    """Events in order: ("fit", fold) when fit_fold starts, ("written", fold, name, lock file present) when a
    checkpoint write (made 0.3 s slow) ends, ("released", fold), ("figure",) when a report figure is saved,
    ("scores",) when scores.json is written. fail: "fold0/last.pt" makes that write raise."""
    import threading
    import time

    import comp.model.checkpoint as checkpoint
    import comp.core.locks as locks
    import comp.train.fold_train as train

    events: list[tuple] = []
    guard = threading.Lock()

    def note(*event):
        with guard:
            events.append(event)

    real_save, real_release, real_fit = checkpoint.save_checkpoint, locks.release_fold, train.fit_fold
    real_figure, real_json = train.save_figure, train.write_json

    def save(path, payload):
        path = Path(path)
        time.sleep(0.3)
        if fail is not None and path.as_posix().endswith(fail):
            raise OSError(28, "No space left on device", str(path))
        real_save(path, payload)
        note("written", int(payload["fold"]), path.name, (path.parent / ".lock").exists())

    def release(fold_dir):
        note("released", int(Path(fold_dir).name.removeprefix("fold")))
        return real_release(fold_dir)

    def fit(job, **kwargs):
        note("fit", job.fold)
        return real_fit(job, **kwargs)

    def figure(*args, **kwargs):
        note("figure")
        return real_figure(*args, **kwargs)

    def write_json(path, doc):
        if Path(path).name == "scores.json":
            note("scores")
        return real_json(path, doc)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    monkeypatch.setattr(locks, "release_fold", release)
    monkeypatch.setattr(train, "fit_fold", fit)
    monkeypatch.setattr(train, "save_figure", figure)
    monkeypatch.setattr(train, "write_json", write_json)
    return events


def test_each_fold_s_checkpoints_are_on_disk_before_its_lock_goes_and_the_next_fold_starts(tiny_ws: Path, monkeypatch):
    """A fold's final best.pt and last.pt are whole on disk while it still holds its lock, before the next fold
    starts and before scores.json claims it; no lock is left, and the results aggregated from memory are the ones
    the files hold."""
    from comp.train.fold_train import aggregate_folds, fold_train, prepare_experiment

    events = _slow_writes_and_lock_releases(monkeypatch)
    cfg, ws = load_config(tiny_ws, overrides=["folds.k=3", "train.epochs=1"]), Layout.at(tiny_ws)
    scores = fold_train(cfg, ws, "baseline")
    assert sorted(scores["folds"]) == [0, 1, 2]
    for fold in range(3):
        written = [i for i, e in enumerate(events) if e[0] == "written" and e[1] == fold]
        assert [events[i][2] for i in written] == ["best.pt", "last.pt"], events
        assert all(events[i][3] for i in written), events  # the fold was still locked when each write ended
        assert events.index(("released", fold)) > written[-1], events
        if fold < 2:
            assert events.index(("fit", fold + 1)) > events.index(("released", fold)), events
    assert written[-1] < events.index(("scores",)), events
    assert not list(tiny_ws.glob("experiments/baseline/fold*/.lock"))
    from_memory = ws.oof_csv("baseline").read_bytes()
    aggregate_folds(cfg, ws, "baseline", *prepare_experiment(cfg, ws, "baseline"))
    assert ws.oof_csv("baseline").read_bytes() == from_memory


def test_ctrl_c_right_after_a_fold_lands_its_checkpoints_before_its_lock_goes(tiny_ws: Path, monkeypatch):
    """Ctrl-C just after fold 0's fit returned: its final files are on disk before fold 0's lock is released, and
    no lock is left."""
    from contextlib import contextmanager

    import comp.train.fold_train as train

    events = _slow_writes_and_lock_releases(monkeypatch)
    real_log = train.fold_log

    @contextmanager
    def interrupted(*args, **kwargs):
        with real_log(*args, **kwargs) as shown:
            yield shown
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fold_log", interrupted)
    cfg = load_config(tiny_ws, overrides=["folds.k=3", "train.epochs=1"])
    with pytest.raises(KeyboardInterrupt):
        train.fold_train(cfg, Layout.at(tiny_ws), "baseline")
    written = [i for i, e in enumerate(events) if e[0] == "written" and e[1] == 0]
    assert [events[i][2] for i in written] == ["best.pt", "last.pt"] and all(events[i][3] for i in written), events
    assert events.index(("released", 0)) > written[-1], events
    assert not list(tiny_ws.glob("experiments/baseline/fold*/.lock"))


@pytest.mark.parametrize("fold", [0, 2])
def test_a_failed_final_write_stops_fold_train_and_releases_every_lock(tiny_ws: Path, monkeypatch, fold: int):
    """A fold's last.pt cannot be written (disk full): fold_train raises that error, the fold is not taken as finished, no scores.json claims it, and no lock
    is left behind."""
    from comp.train.engine import finished_result
    from comp.train.fold_train import fold_train

    _slow_writes_and_lock_releases(monkeypatch, fail=f"fold{fold}/last.pt")
    cfg = load_config(tiny_ws, overrides=["folds.k=3", "train.epochs=2"])
    ws = Layout.at(tiny_ws)
    with pytest.raises(OSError, match="No space left"):
        fold_train(cfg, ws, "baseline")
    assert not list(tiny_ws.glob("experiments/baseline/fold*/.lock"))
    assert finished_result(ws.fold_dir("baseline", fold), cfg, fold) is None
    assert not ws.scores_json("baseline").exists() and not ws.oof_csv("baseline").exists()


def test_sigterm_stops_fold_train_with_its_last_epoch_on_disk_and_the_resume_command(tiny_ws: Path):
    """A preempted run (SIGTERM) in a fresh process: it stops like Ctrl-C (exit 130, the resume command printed),
    its last finished epoch is on disk although epochs are shorter than train.checkpoint_seconds, and the rerun
    resumes from there."""
    import os
    import signal
    import subprocess
    import sys

    import torch

    args = [sys.executable, "-m", "comp", "fold-train", "-w", str(tiny_ws), "--k", "3", "--folds", "0",
            "--set", "train.epochs=60", "--log-every", "0"]
    env = {**os.environ, "COLUMNS": "200"}
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if "epoch 3/60: train loss" in line:  # epoch 3's summary: it finished
            child.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + child.stdout.read()
    assert child.wait(timeout=120) == 130, out
    assert "resume with:" in out and "comp fold-train" in out
    last = torch.load(tiny_ws / "experiments" / "baseline" / "fold0" / "last.pt", weights_only=True)
    assert not last["finished"] and last["next_epoch"] >= 3
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming from epoch {last['next_epoch'] + 1}" in rerun.stdout + rerun.stderr
