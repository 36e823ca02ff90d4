"""comp.data.dataset: drop_last, class-balanced sampling, batches reproducible per seed/epoch and across workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comp.core.config import Config, load_config
from comp.data.augment import build_eval_transform
from comp.data.batch_augment import RawImages
from comp.data.cache import ImageStore, prepare_images
from comp.data.dataset import ImageDataset, class_weights, set_epoch
from comp.train.loaders import eval_loader, train_loader
from comp.data.tables import load_tables
from comp.core.errors import CompError
from comp.core.layout import Layout


@pytest.fixture(params=["torch", "albumentations"])
def tiny(tiny_ws, request):
    """(store, labels, cfg) for the tiny workspace: 36 training images cached at 36x36 (a 1.14 margin to crop from)
    for a 32 px input; the training augmentation on whole batches in torch, or per image in albumentations
    (augment.backend)."""
    cfg = load_config(tiny_ws, overrides=(f"augment.backend={request.param}", "image.cache_scale=1.14"))
    ws = Layout.at(tiny_ws)
    tables = load_tables(cfg, ws)
    return prepare_images(tables.train, cfg.image, cfg.augment, ws), tables.train["y"].to_numpy(), cfg


def with_train(cfg: Config, **train) -> Config:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})


def rendered(images) -> torch.Tensor:
    """A loader's images as the model gets them (RawImages: rendered on the CPU, as to_device does on a device)."""
    return images.render("cpu") if isinstance(images, RawImages) else images


def epoch_batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    set_epoch(loader, epoch)
    return [(rendered(x), y) for x, y in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))


def memory_store(n: int) -> ImageStore:
    return ImageStore(array=np.zeros((n, 4, 4, 3), np.uint8))


def test_drop_last_keeps_batches_full(tiny):
    store, y, cfg = tiny
    loader = train_loader(with_train(cfg, batch_size=8), store, np.arange(30), y, seed=0)
    batches = epoch_batches(loader, 0)
    assert len(batches) == 3 and all(x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 for x, _ in batches)
    seen = torch.cat([b for _, b in batches])
    assert set(seen.tolist()) <= set(y[:30].tolist())


def test_batch_larger_than_data_is_an_error(tiny):
    store, y, cfg = tiny
    with pytest.raises(CompError, match="batch_size=64 is larger than the 10 training samples"):
        train_loader(with_train(cfg, batch_size=64), store, np.arange(10), y, seed=0)


@pytest.mark.parametrize("how,low,high", [("balanced", 0.42, 0.58), ("sqrt", 0.16, 0.36)])
def test_sampler_balances_imbalanced_classes(how, low, high):
    labels = np.array([0] * 900 + [1] * 100)
    cfg = Config.model_validate({"train": {"sampler": how, "sample_ratio": 2.0, "batch_size": 8}})
    loader = train_loader(cfg, memory_store(1000), np.arange(1000), labels, seed=3, transform=None)
    draws = [pos for pos, _ in loader.sampler]
    assert len(draws) == 2000  # round(sample_ratio * n)
    share = np.mean(labels[draws] == 1)  # sqrt: 1/sqrt(100) / (1/sqrt(100) + 9/sqrt(900)) = 0.25
    assert low < share < high


def test_class_weights_values():
    w = class_weights(np.array([5, 5, 5, 5, 7]), "balanced")
    assert np.allclose(w, [0.25] * 4 + [1.0])
    assert np.allclose(class_weights(np.array([1, 1, 1, 1, 2]), "sqrt"), [0.5] * 4 + [1.0])


def test_auto_batch_size_buys_small_sets_more_steps_and_keeps_large_ones_at_64(caplog):
    from comp.data.dataset import AUTO_MIN_STEPS, auto_batch_size

    assert auto_batch_size(1_200, 10) == 16  # 750 steps at 16: the smallest, short of the goal
    assert auto_batch_size(3_200, 10) == 32 and 10 * (3_200 // 32) >= AUTO_MIN_STEPS > 10 * (3_200 // 64)
    assert auto_batch_size(6_400, 10) == 64  # 1,000 steps at 64
    assert auto_batch_size(6_400, 10, grad_accum=2) == 32  # the steps that count are optimizer steps
    assert auto_batch_size(5, 3) == 5  # never more than the samples of an epoch
    # fine-tuning starts near a solution: batch 32 at the least, 64 from 300 steps on
    assert auto_batch_size(1_200, 4, finetune=True) == 32 and auto_batch_size(2_000, 10, finetune=True) == 64
    cfg = Config.model_validate({"model": {"pretrained": False}, "train": {"epochs": 4}})
    assert cfg.train.batch_size == "auto"
    with caplog.at_level("INFO", logger="comp.data.dataset"):
        loader = train_loader(cfg, memory_store(10_000), np.arange(9_000), None, seed=0)
    assert loader.batch_size == auto_batch_size(9_000, 4) == 32  # 4 x 140 steps at 64 fall short of 1,000
    assert "train.batch_size auto: 32 (9000 samples an epoch x 4 epochs: 1124 optimizer steps" in caplog.text
    assert eval_loader(cfg, memory_store(10), np.arange(10)).batch_size == 128  # evaluation keeps no gradients
    tuned = Config.model_validate({"model": {"pretrained": False, "pretrained_path": "w.pth"}, "train": {"epochs": 4}})
    assert train_loader(tuned, memory_store(2_000), np.arange(1_200), None, seed=0).batch_size == 32


def test_explicit_sampler_weights_and_their_validation():
    cfg = Config.model_validate({"train": {"batch_size": 2}})
    weights = np.zeros(10)
    weights[3] = 1.0
    loader = train_loader(cfg, memory_store(10), np.arange(10), None, seed=0, sampler_weights=weights)
    assert {pos for pos, _ in loader.sampler} == {3}
    with pytest.raises(CompError, match="sampler weights must be 10 finite non-negative"):
        train_loader(cfg, memory_store(10), np.arange(10), None, seed=0, sampler_weights=-weights)


def test_same_seed_same_batches_and_resume_at_an_epoch(tiny):
    store, y, cfg = tiny
    a = train_loader(cfg, store, np.arange(36), y, seed=5)
    b = train_loader(cfg, store, np.arange(36), y, seed=5)
    a0, a1 = epoch_batches(a, 0), epoch_batches(a, 1)
    assert same(a0, epoch_batches(b, 0))
    assert same(a1, epoch_batches(train_loader(cfg, store, np.arange(36), y, seed=5), 1))  # resumed run
    assert not same(a0, epoch_batches(train_loader(cfg, store, np.arange(36), y, seed=6), 0))


def by_sample(batches) -> dict[int, torch.Tensor]:
    """Row id (passed as the label) -> its augmented image."""
    return {int(i): x for xs, ids in batches for x, i in zip(xs, ids)}


def test_each_epoch_augments_differently(tiny):
    store, _, cfg = tiny
    ids = np.arange(36)  # labels = row ids, to follow each image across epochs
    loader = train_loader(cfg, store, ids, ids, seed=1)
    e0, e1 = by_sample(epoch_batches(loader, 0)), by_sample(epoch_batches(loader, 1))
    common = sorted(set(e0) & set(e1))
    assert len(common) > 20
    assert sum(not torch.equal(e0[i], e1[i]) for i in common) > 0.8 * len(common)
    again = by_sample([(rendered(x), i) for x, i in loader])  # no set_epoch: the next epoch still differs
    assert sum(not torch.equal(e1[i], again[i]) for i in set(e1) & set(again)) > 0.8 * len(common)


def test_two_workers_give_the_same_batches_as_none(tiny):
    store, y, cfg = tiny
    serial = train_loader(cfg, store, np.arange(36), y, seed=2)
    parallel = train_loader(with_train(cfg, num_workers=2), store, np.arange(36), y, seed=2)
    for epoch in (0, 1):
        assert same(epoch_batches(serial, epoch), epoch_batches(parallel, epoch))


def test_eval_loader_keeps_order_and_every_row(tiny):
    store, y, cfg = tiny
    order = np.array([5, 3, 30, 0, 17, 9, 11])
    loader = eval_loader(cfg, store, order, batch_size=3, labels=np.arange(36))
    xs, ids = zip(*loader)
    assert torch.cat(ids).tolist() == order.tolist()  # no shuffle, no drop_last
    assert torch.cat(xs).shape == (7, 3, 32, 32)
    transform = build_eval_transform(cfg.image, cfg.augment, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    direct = transform(image=store[30])["image"]
    assert torch.equal(torch.cat(xs)[2], direct)  # the one eval pipeline, test_resnet's norm
    unlabelled = eval_loader(cfg, store, order)
    assert torch.cat([b for _, b in unlabelled]).tolist() == [-1] * 7


def test_labels_per_store_row_or_per_index():
    store = memory_store(6)
    y = np.array([10, 11, 12, 13, 14, 15])
    per_row = ImageDataset(store, np.array([4, 1]), y, None)
    per_index = ImageDataset(store, np.array([4, 1]), np.array([14, 11]), None)
    assert [per_row[i][1] for i in range(2)] == [per_index[i][1] for i in range(2)] == [14, 11]
    assert per_row[0][0].shape == (3, 4, 4)
    with pytest.raises(CompError, match="labels has 3 entries; expected one per store row"):
        ImageDataset(store, np.array([4, 1]), np.array([1, 2, 3]), None)


def test_datasets_share_no_state():
    mutable = [k for k, v in vars(ImageDataset).items() if isinstance(v, (list, dict, set))]
    assert not mutable
    a = ImageDataset(memory_store(3), np.array([0, 1]), None, None)
    b = ImageDataset(memory_store(3), np.array([2]), None, None)
    assert len(a) == 2 and len(b) == 1


def test_ranks_draw_disjoint_equal_shares_of_each_epoch():
    cfg = Config.model_validate({"train": {"batch_size": 2}})
    draws = []
    for rank in range(3):
        loader = train_loader(cfg, memory_store(20), np.arange(20), None, seed=4, rank=rank, world_size=3)
        set_epoch(loader, 2)
        draws.append([pos for pos, _ in loader.sampler])
    assert [len(d) for d in draws] == [6, 6, 6]
    assert len(set().union(*map(set, draws))) == 18  # disjoint
    with pytest.raises(CompError, match="rank must be in"):
        train_loader(cfg, memory_store(20), np.arange(20), None, seed=4, rank=3, world_size=3)


def test_batched_fetch_equals_item_by_item(tiny):
    """__getitems__ (one tensor written per batch) must give exactly what __getitem__ + stacking gives."""
    store, y, cfg = tiny
    loader = train_loader(cfg, store, np.arange(36), y, seed=9)
    set_epoch(loader, 3)
    draws = list(loader.sampler)[:8]
    set_epoch(loader, 3)
    images, labels = next(iter(loader))
    images = rendered(images)
    dataset = loader.dataset
    one_by_one = torch.stack([dataset[d][0] for d in draws])
    assert torch.equal(images, one_by_one) and images.is_contiguous()
    assert labels.tolist() == [int(y[p]) for p, _ in draws]
    plain = ImageDataset(store, np.arange(4), None, None).__getitems__([0, 1])  # no fused tail: per item
    assert isinstance(plain, list) and plain[0][0].shape == (3, 36, 36)


def test_cli_fold_train_through_every_data_option(make_ws, tmp_path):
    """`comp fold-train` end to end with local weights (other head size), an explicit transform list,
    a balanced sampler, MixUp/CutMix and no cache: the optional paths of this pipeline, via the CLI."""
    import yaml
    from typer.testing import CliRunner

    from comp.cli import app
    from comp.model.factory import build_model
    from comp.core.config import ModelConfig

    weights = tmp_path / "backbone.safetensors"
    from safetensors.torch import save_file

    save_file(build_model(ModelConfig(name="test_resnet", pretrained=False), 7).state_dict(), str(weights))
    experiment = {
        "model": {"name": "test_resnet", "pretrained": True, "pretrained_path": str(weights)},
        "image": {"size": 32, "cache": False},
        "augment": {"transforms": [{"RandomResizedCrop": {"size": [32, 32], "scale": [0.6, 1.0]}},
                                   {"HorizontalFlip": {"p": 0.5}}], "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
        "train": {"epochs": 1, "batch_size": 8, "lr": 3.0e-3, "warmup_epochs": 0, "num_workers": 0,
                  "sampler": "balanced", "early_stopping": None, "seed": 7},
    }
    root = make_ws(experiment=experiment)
    result = CliRunner().invoke(app, ["fold-train", "-w", str(root), "--k", "2"])
    assert result.exit_code == 0, result.output
    oof = (root / "experiments" / "baseline" / "oof.csv").read_text().splitlines()
    assert oof[0] == "id,fold,label,p_c0,p_c1,p_c2" and len(oof) == 1 + 36
    saved = yaml.safe_load((root / "experiments" / "baseline" / "config.yaml").read_text())
    assert saved["augment"]["transforms"][0]["RandomResizedCrop"]["size"] == [32, 32]


@pytest.mark.timeout(120)
def test_workers_do_not_deadlock_after_the_parent_used_opencv_threads():
    """Regression: touching OpenCV's thread pool in a forked worker hung forever once the parent had used it."""
    import cv2

    big = np.zeros((1500, 1500, 3), np.uint8)
    for _ in range(3):
        cv2.resize(big, (1200, 1200))  # starts OpenCV's thread pool in this (parent) process
    store = ImageStore(array=np.zeros((24, 36, 36, 3), np.uint8))
    cfg = Config.model_validate({"model": {"name": "test_resnet"}, "image": {"size": 32},
                                 "train": {"batch_size": 8, "num_workers": 2}})
    loader = train_loader(cfg, store, np.arange(24), np.arange(24) % 2, seed=0)
    assert sum(len(x) for x, _ in loader) == 24
