"""Issue 16's behaviour (timings live in benchmarks/): auto workers, one decode per image, MIH, trial checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from comp.config import load_config
from comp.workspace import Workspace


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

    cfg, ws = load_config(tiny_ws), Workspace.at(tiny_ws)
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
    fresh = prepare_images(tables.train, cfg.model_copy(update={"image": cfg.image.model_copy(update={"cache": False})}),
                           ws)
    cached = prepare_images(tables.train, cfg, ws)
    assert all(np.array_equal(fresh[i], cached[i]) for i in range(len(tables.train)))


def test_a_corrupt_image_is_named_and_no_cache_is_left(tiny_ws: Path):
    from comp.data.checked import load_checked_tables
    from comp.errors import CompError

    (tiny_ws / "data" / "images" / "p000_1.png").write_bytes(b"not a png")
    (tiny_ws / "data" / "images" / "p101_2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CompError, match=r"2 images in train.csv could not be decoded.*p000_1.png"):
        load_checked_tables(load_config(tiny_ws), Workspace.at(tiny_ws))
    assert not list((tiny_ws / ".cache" / "images").glob("*.npy"))


@pytest.mark.parametrize("resumable,writes", [(True, 2), (False, 1)])
def test_trials_write_last_pt_only_when_the_fold_ends(tiny_ws: Path, monkeypatch, resumable: bool, writes: int):
    import comp.engine as engine
    from comp.data.tables import load_tables
    from comp.folds import ensure_folds

    cfg, ws = load_config(tiny_ws, overrides=["folds.k=3"]), Workspace.at(tiny_ws)
    tables = load_tables(cfg, ws)
    fold_of = ensure_folds(ws, tables, cfg).fold_of(tables.train)
    saved = []
    real = engine.save_last
    monkeypatch.setattr(engine, "save_last", lambda *a, **k: (saved.append(a[-1].epoch), real(*a, **k)))
    result = engine.fit_fold(cfg, tables, fold_of, 0, tiny_ws / "out", ws=ws, resumable=resumable)
    assert len(saved) == writes and saved[-1] == cfg.train.epochs
    assert np.isfinite(result.score)
