"""comp.data.augment: presets and explicit lists give the input shape; bad lists give named errors; MixUp."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from albumentations.pytorch import ToTensorV2

from comp.core.config import Config
from comp.data.augment import build_eval_transform, build_mixup, build_train_transform
from comp.data.cache import cache_hw
from comp.core.errors import CompError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def train_pipeline(cfg: Config, mean=MEAN, std=STD, **kw):
    """comp.data.augment.build_train_transform from a whole config's image, augment and train.seed/device."""
    return build_train_transform(cfg.image, cfg.augment, mean, std, seed=cfg.train.seed, device=cfg.train.device, **kw)


def eval_pipeline(cfg: Config, mean=MEAN, std=STD):
    return build_eval_transform(cfg.image, cfg.augment, mean, std)


def mixup_of(cfg: Config, n_classes: int):
    return build_mixup(cfg.augment, n_classes, batch_size=cfg.train.batch_size,
                       label_smoothing=cfg.train.label_smoothing, seed=cfg.train.seed)


def config(size=(24, 32), **augment) -> Config:
    return Config.model_validate({"image": {"size": list(size)}, "augment": augment,
                                  "train": {"batch_size": 8}})


def cached_image(cfg: Config, seed: int = 0) -> np.ndarray:
    h, w = cache_hw(cfg.image, cfg.augment)
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset", ["auto", "none", "light", "medium", "heavy"])
@pytest.mark.parametrize("size", [(24, 32), (32, 24), (40, 40), (128, 160)])
def test_each_preset_gives_the_input_shape(preset, size):
    cfg = config(size, preset=preset)
    for build in (train_pipeline, eval_pipeline):
        out = build(cfg)(image=cached_image(cfg))["image"]
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert tuple(out.shape) == (3, *size)


def test_eval_pipeline_is_deterministic_centre_crop_and_normalised():
    cfg = config((24, 32), preset="light")
    img = cached_image(cfg)
    t = eval_pipeline(cfg)
    a, b = t(image=img)["image"], t(image=img)["image"]
    assert torch.equal(a, b)
    h, w = cache_hw(cfg.image, cfg.augment)
    top, left = (h - 24) // 2, (w - 32) // 2
    expected = (img[top:top + 24, left:left + 32].astype(np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(a.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_train_augmentation_varies_and_is_seeded():
    cfg = config(preset="medium")
    img = cached_image(cfg)
    t1, t2 = train_pipeline(cfg), train_pipeline(cfg)
    outs1 = [t1(image=img)["image"] for _ in range(4)]
    outs2 = [t2(image=img)["image"] for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(outs1, outs2))  # same seed, same stream
    assert not torch.equal(outs1[0], outs1[1])


def test_explicit_list_replaces_the_preset():
    cfg = config(preset="heavy", transforms=[{"HorizontalFlip": {"p": 1.0}}, {"Affine": {"rotate": [-10, 10]}},
                                            {"OneOf": {"transforms": [{"Blur": None}, {"GaussNoise": {}}], "p": 0.5}}])
    t = train_pipeline(cfg)
    names = [type(s).__name__ for s in t.transforms]
    assert names == ["HorizontalFlip", "Affine", "OneOf", "Resize", "NormalizeToTensor"]
    assert isinstance(t.transforms[-1], ToTensorV2)
    assert cache_hw(cfg.image, cfg.augment) == (24, 32)  # no crop in the list: cached at input size, same scale as eval
    img = cached_image(cfg)
    assert tuple(t(image=img)["image"].shape) == (3, 24, 32)


def test_explicit_flip_really_flips():
    cfg = config(transforms=[{"HorizontalFlip": {"p": 1.0}}])
    img = cached_image(cfg)
    flipped = train_pipeline(cfg)(image=img)["image"]
    plain = eval_pipeline(cfg)(image=img)["image"]
    assert torch.allclose(flipped, plain.flip(-1))


def test_explicit_crop_keeps_room_for_it():
    cfg = config(transforms=[{"RandomCrop": {"height": 24, "width": 32}}])
    assert cache_hw(cfg.image, cfg.augment) == (27, 36)
    out = train_pipeline(cfg)(image=cached_image(cfg))["image"]
    assert tuple(out.shape) == (3, 24, 32)


def test_unknown_transform_suggests_close_names():
    cfg = config(transforms=[{"HorizontalFlip": {}}, {"HorizontalFlipp": {"p": 0.5}}])
    with pytest.raises(CompError, match=r"augment.transforms\[1\]: 'HorizontalFlipp' is not an albumentations "
                                        r"transform; did you mean HorizontalFlip"):
        train_pipeline(cfg)


def test_unknown_argument_names_transform_and_valid_arguments():
    cfg = config(transforms=[{"Affine": {"rotat": [-10, 10]}}])
    with pytest.raises(CompError, match=r"augment.transforms\[0\]: Affine has no argument 'rotat'; "
                                        r"valid arguments: scale, .*rotate"):
        train_pipeline(cfg)


def test_invalid_argument_value_names_the_argument():
    cfg = config(transforms=[{"Affine": {"rotate": "a lot"}}])
    with pytest.raises(CompError, match=r"Affine rejected argument 'rotate'.*valid arguments: .*rotate"):
        train_pipeline(cfg)


@pytest.mark.parametrize("spec", [[{"HorizontalFlip": {}, "Blur": {}}], [{"Blur": [3, 5]}],
                                  [{"OneOf": {"p": 1.0}}]])
def test_malformed_entries_rejected(spec):
    with pytest.raises(CompError, match=r"augment.transforms\[0\]"):
        train_pipeline(config(transforms=spec))


def test_mixup_off_by_default_and_soft_targets_when_on():
    assert mixup_of(config(), 3) is None
    cfg = Config.model_validate({"augment": {"mixup_alpha": 0.4, "cutmix_alpha": 1.0},
                                 "train": {"batch_size": 4, "label_smoothing": 0.1}})
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 1])
    outs = []
    for _ in range(2):
        state = np.random.get_state()
        mix = mixup_of(cfg, 3)
        xm, ym = mix(x.clone(), y.clone())
        outs.append((xm, ym))
        assert np.array_equal(np.random.get_state()[1], state[1])  # global numpy RNG untouched
    assert ym.shape == (4, 3) and torch.allclose(ym.sum(1), torch.ones(4))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])  # seeded


def test_mixup_needs_even_batch():
    cfg = Config.model_validate({"augment": {"mixup_alpha": 0.2}, "train": {"batch_size": 7}})
    with pytest.raises(CompError, match="even train.batch_size, got 7"):
        mixup_of(cfg, 3)


def test_fused_normalise_matches_albumentations():
    import albumentations as A

    from comp.data.augment import NormalizeToTensor

    img = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ref = A.Compose([A.Normalize(mean=MEAN, std=STD), ToTensorV2()])(image=img)["image"]
    out = NormalizeToTensor(MEAN, STD)(image=img)["image"]
    assert out.shape == (3, 20, 30) and out.is_contiguous() and torch.allclose(out, ref, atol=1e-5)


def test_normalise_in_an_explicit_list_is_refused():
    cfg = config(transforms=[{"HorizontalFlip": {}}, {"Normalize": {"mean": [0.5, 0.5, 0.5]}}])
    with pytest.raises(CompError, match=r"transforms\[1\]: Normalize is added at the end of every pipeline already"):
        train_pipeline(cfg)


# ---------------------------------------------------------------- presets sized to the image, auto's flip


def square_image(cfg: Config) -> np.ndarray:
    """A white square covering the middle half of a black cached-size image."""
    h, w = cache_hw(cfg.image, cfg.augment)
    img = np.zeros((h, w, 3), np.uint8)
    img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    return img


@pytest.mark.parametrize("preset", ["auto", "light", "medium"])
def test_small_images_keep_the_whole_object_at_the_eval_scale(preset):
    """At 32 px no view zooms in: the square's area stays within the jitter (scale 0.9-1.1) of the eval view's."""
    cfg = config((32, 32), preset=preset)
    img = square_image(cfg)
    bright = lambda out: float((out > 0).float().mean())  # noqa: E731 - share of white pixels (normalised > 0)
    eval_area = bright(eval_pipeline(cfg)(image=img)["image"])
    t = train_pipeline(cfg)
    areas = [bright(t(image=img)["image"]) for _ in range(40)]
    assert 0.2 < eval_area < 0.35
    assert min(areas) > 0.75 * eval_area and max(areas) < 1.3 * eval_area  # RandomResizedCrop(0.5) zooms up to 2x


def geometry_of(t) -> tuple[str, bool]:
    """(geometry kind, flips) of a train pipeline, albumentations or torch (BatchGeometry)."""
    if hasattr(t, "kind"):
        return t.kind, t.flip
    names = [type(s).__name__ for s in t.transforms]
    kind = "resized_crop" if names[0] == "RandomResizedCrop" else "jitter" if names[0] == "Affine" else names[0]
    return kind, "HorizontalFlip" in names


@pytest.mark.parametrize("backend", ["albumentations", "torch"])
def test_large_images_still_get_random_resized_crops(backend):
    cfg = config((128, 128), preset="light", backend=backend)
    assert geometry_of(train_pipeline(cfg)) == ("resized_crop", True)
    small = train_pipeline(config((64, 64), preset="light", backend=backend))
    assert geometry_of(small) == ("jitter", True)  # named presets keep their flip


def sided(label: int, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """Mirror-sensitive classes: a bright bar on the left (0) or the right (1) half, plus noise."""
    img = rng.normal(60, 20, (size, size, 3))
    img[:, : size // 3] += 150 if label == 0 else 0
    img[:, -size // 3:] += 150 if label == 1 else 0
    return img.clip(0, 255).astype(np.uint8)


def coloured(label: int, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """Mirror-proof classes: a colour with a blob anywhere (classes differ by colour, not by side)."""
    img = np.full((size, size, 3), (200, 60, 60) if label == 0 else (60, 60, 200), np.float64)
    y, x = rng.integers(0, size - 6, 2)
    img[y: y + 6, x: x + 6] = 255
    return (img + rng.normal(0, 20, img.shape)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("backend", ["albumentations", "torch"])
@pytest.mark.parametrize("draw, flips", [(sided, False), (coloured, True)])
def test_auto_flips_only_mirror_symmetric_data(draw, flips, backend, caplog):
    from comp.data.augment import flip_symmetry

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    images = np.stack([draw(int(c), rng) for c in labels])
    score = flip_symmetry(images, labels)
    assert (score > 0.9) if flips else (score < 0.3)
    cfg = config((24, 24), preset="auto", backend=backend)
    with caplog.at_level("INFO", logger="comp.data.augment"):
        t = train_pipeline(cfg, images=images, labels=labels)
    assert geometry_of(t) == ("jitter", flips)
    assert t.auto["flip"] is flips and t.auto["flip_symmetry"] == round(score, 3)
    assert f"flip {'on' if flips else 'off'}" in caplog.text  # the decision is in the run's output


def test_auto_without_data_or_signal_does_not_flip():
    from comp.data.augment import flip_symmetry

    cfg = config((24, 24), preset="auto")
    assert train_pipeline(cfg).auto == {"preset": "auto", "geometry": "jitter", "flip": False,
                                                          "flip_symmetry": None}
    noise = np.random.default_rng(1).integers(0, 256, (100, 24, 24, 3), dtype=np.uint8)
    assert flip_symmetry(noise, np.arange(100) % 2) is None  # labels unrelated to the pixels: nothing to judge by


@pytest.mark.parametrize("backend", ["albumentations", "torch"])
def test_hflip_forces_the_presets_flip_either_way(backend, caplog):
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    images = np.stack([sided(int(c), rng) for c in labels])  # the probe would say: no flip
    with caplog.at_level("INFO", logger="comp.data.augment"):
        t = train_pipeline(config((24, 24), preset="auto", backend=backend, hflip=True), images=images, labels=labels)
    assert geometry_of(t) == ("jitter", True) and t.auto["flip"] is True
    assert "flip on (augment.hflip)" in caplog.text
    off = train_pipeline(config((24, 24), preset="light", backend=backend, hflip=False))
    assert geometry_of(off) == ("jitter", False)  # light flips unless told not to


@pytest.mark.parametrize("augment, where", [({"preset": "none", "hflip": True}, "augment.preset none"),
                                            ({"transforms": [{"Blur": {}}], "hflip": False}, "transforms list")])
def test_hflip_is_refused_where_no_preset_draws_the_flip(augment, where):
    with pytest.raises(Exception, match=f"augment.hflip applies to the presets .*{where}"):
        Config.model_validate({"augment": augment})
