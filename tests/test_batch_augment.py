"""comp.data.batch_augment: the presets' geometry on whole batches in torch (augment.backend torch) draws the same
views as the albumentations presets, per sample, from the sample's seed alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comp.core.config import Config
from comp.core.errors import CompError
from comp.data.augment import build_eval_transform, build_train_transform
from comp.data.batch_augment import BatchGeometry, RawImages
from comp.data.cache import cache_hw

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def train_pipeline(cfg: Config, mean=MEAN, std=STD, **kw):
    """comp.data.augment.build_train_transform from a whole config's image, augment and train.seed/device."""
    return build_train_transform(cfg.image, cfg.augment, mean, std, seed=cfg.train.seed, device=cfg.train.device, **kw)


def eval_pipeline(cfg: Config, mean=MEAN, std=STD):
    return build_eval_transform(cfg.image, cfg.augment, mean, std)


def config(size, **augment) -> Config:
    return Config.model_validate({"image": {"size": list(size)}, "augment": augment, "train": {"batch_size": 8}})


def blob(hw: tuple[int, int], at: tuple[int, int], r: int = 2) -> np.ndarray:
    """A dark image with one bright square at `at` (row, col)."""
    img = np.full((*hw, 3), 20, np.uint8)
    img[at[0] - r: at[0] + r + 1, at[1] - r: at[1] + r + 1] = 250
    return img


def centroid(x: torch.Tensor) -> tuple[float, float]:
    """(row, col) of the brightness-weighted centre of a normalised (C, h, w) view, from the view's centre."""
    m = x.mean(0) - x.mean(0).min()
    m = m * (m > 0.5 * m.max())
    h, w = m.shape
    rows, cols = torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2
    return float((m.sum(1) * rows).sum() / m.sum()), float((m.sum(0) * cols).sum() / m.sum())


def views(t, img: np.ndarray, n: int) -> np.ndarray:
    return np.array([centroid(t(image=img)["image"]) for _ in range(n)])


@pytest.mark.parametrize("size, preset", [((32, 32), "light"), ((128, 128), "light"), ((40, 56), "light")])
def test_torch_views_match_albumentations_views(size, preset):
    """The same preset through both backends moves an off-centre blob alike: mean and spread of where it lands
    (jitter under 128 px, random resized crop above; flips included) agree within sampling error."""
    by = {}
    for backend in ("albumentations", "torch"):
        cfg = config(size, preset=preset, backend=backend)
        hw = cache_hw(cfg.image, cfg.augment)
        img = blob(hw, (hw[0] // 2 - hw[0] // 6, hw[1] // 2 + hw[1] // 5), r=max(1, hw[0] // 24))
        by[backend] = views(train_pipeline(cfg), img, 300)
    a, t = by["albumentations"], by["torch"]
    h = size[0]
    # the blob's mean position: flips put it at +-col, so its mean col is near 0 in both, its row where it was
    assert abs(a[:, 0].mean() - t[:, 0].mean()) < 0.06 * h
    assert abs(np.abs(a[:, 1]).mean() - np.abs(t[:, 1]).mean()) < 0.06 * h
    # the spread the geometry adds (jitter shift/rotation or crop scale) is the same size
    assert 0.75 < t[:, 0].std() / a[:, 0].std() < 1.33
    assert (t[:, 1] > 0).mean() == pytest.approx(0.5, abs=0.1)  # half of them mirrored


def test_a_sample_view_depends_on_its_seed_alone():
    """Whatever batch a sample lands in, the same seed gives the same bytes; another seed another view."""
    g = BatchGeometry("jitter", in_hw=(36, 36), out_hw=(32, 32), flip=True, mean=MEAN, std=STD)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 36, 36, 3), dtype=np.uint8))
    together = g.render(images, torch.from_numpy(g.draws([11, 12, 13])))
    alone = g.render(images[2:], torch.from_numpy(g.draws([13])))
    assert torch.equal(together[2], alone[0])
    other = g.render(images[2:], torch.from_numpy(g.draws([14])))
    assert not torch.equal(alone, other)
    assert np.array_equal(g.draws([13]), g.draws([13]))


def test_centre_views_are_the_image_or_its_mirror_and_equal_the_eval_pipeline():
    """preset none on torch: the eval pipeline's view exactly (no margin, nothing moved), half of them mirrored."""
    cfg = config((24, 32), preset="none", backend="torch")
    img = np.random.default_rng(1).integers(0, 256, (*cache_hw(cfg.image, cfg.augment), 3), dtype=np.uint8)
    expected = eval_pipeline(cfg)(image=img)["image"]
    plain = train_pipeline(cfg)
    assert (plain.kind, plain.flip) == ("centre", False)
    torch.testing.assert_close(plain(image=img)["image"], expected, atol=1e-4, rtol=0)
    g = BatchGeometry("centre", in_hw=(24, 32), out_hw=(24, 32), flip=True, mean=MEAN, std=STD)
    out = g.render(torch.from_numpy(img)[None].expand(40, -1, -1, -1), torch.from_numpy(g.draws(list(range(40)))))
    mirrored = [torch.allclose(o, expected.flip(-1), atol=1e-4) for o in out]
    assert all(m or torch.allclose(o, expected, atol=1e-4) for m, o in zip(mirrored, out))
    assert 8 < sum(mirrored) < 32


@pytest.mark.parametrize("kind, in_hw, out_hw", [("jitter", (36, 36), (32, 32)), ("resized_crop", (146, 146), (128, 128)),
                                                 ("resized_crop", (73, 100), (64, 88))])
def test_crops_stay_inside_the_cached_image(kind, in_hw, out_hw):
    """Without rotation or zoom the jitter only shifts within the cache margin, and a resized crop never samples
    outside the image; a resized crop covers 50-100% of it (the preset's area)."""
    g = BatchGeometry(kind, in_hw=in_hw, out_hw=out_hw, flip=True, mean=MEAN, std=STD, scale=(1.0, 1.0), rotate=0.0)
    theta = torch.from_numpy(g.draws(list(range(200))))
    grid = F.affine_grid(theta, [200, 3, *out_hw], align_corners=False)
    H, W = in_hw
    # sample points are pixel centres: inside means within half a pixel of the image's outer edge
    assert grid[..., 0].abs().max() <= 1 - 1 / W + 1e-5 and grid[..., 1].abs().max() <= 1 - 1 / H + 1e-5
    if kind == "resized_crop":
        area = (theta[:, 0, 0].abs() * theta[:, 1, 1].abs()).numpy()  # crop area / image area
        assert area.min() >= 0.5 - 1e-4 and area.max() <= 1 + 1e-4 and area.std() > 0.05


def test_backend_torch_refuses_what_it_cannot_render_and_auto_falls_back():
    with pytest.raises(CompError, match="augment.backend=torch .* not augment.preset='medium'.*augment.backend: albumentations"):
        train_pipeline(config((32, 32), preset="medium", backend="torch"))
    for cfg in (config((32, 32), preset="heavy"), config((32, 32), transforms=[{"HorizontalFlip": {"p": 0.5}}])):
        assert hasattr(train_pipeline(cfg), "transforms")  # albumentations, per image
    assert isinstance(train_pipeline(config((32, 32))), BatchGeometry)  # the default: torch


def test_auto_backend_renders_in_torch_on_a_gpu_or_small_inputs(monkeypatch):
    """auto: torch on a GPU whatever the size; on a CPU only where it is the faster (inputs up to 64 px)."""
    import comp.data.workers as workers

    assert isinstance(train_pipeline(config((64, 48))), BatchGeometry)
    assert hasattr(train_pipeline(config((96, 96))), "transforms")
    monkeypatch.setattr(workers, "uses_gpu", lambda device: True)
    big = train_pipeline(config((224, 224)))
    assert isinstance(big, BatchGeometry) and big.kind == "resized_crop"
    assert hasattr(train_pipeline(config((224, 224), preset="medium")), "transforms")


def test_raw_batches_render_to_the_shape_they_announce():
    g = BatchGeometry("resized_crop", in_hw=(73, 73), out_hw=(64, 64), flip=True, mean=MEAN, std=STD)
    raw = RawImages(torch.zeros(5, 73, 73, 3, dtype=torch.uint8), torch.from_numpy(g.draws(range(5))), g)
    out = raw.render("cpu")
    assert out.shape == raw.shape == (5, 3, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, -2.0))  # black: (0 - 0.5) / 0.25


def test_jitter_without_rotation_or_zoom_is_a_whole_pixel_crop():
    """The shift lands on whole pixels (RandomCrop's offsets): with scale 1 and no rotation each view is an exact crop
    of the cached image, as sharp as the evaluation view, and every offset within the margin occurs."""
    g = BatchGeometry("jitter", in_hw=(12, 13), out_hw=(8, 8), flip=False, mean=(0.0, 0.0, 0.0),
                      std=(1 / 255, 1 / 255, 1 / 255), scale=(1.0, 1.0), rotate=0.0)
    img = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (12, 13, 3), dtype=np.uint8))
    out = g.render(img[None].expand(300, -1, -1, -1), torch.from_numpy(g.draws(list(range(300)))))
    crops = {(y, x): img[y: y + 8, x: x + 8].permute(2, 0, 1).float() for y in range(5) for x in range(6)}
    found = set()
    for view in out:
        hits = [k for k, c in crops.items() if torch.allclose(view, c, atol=1e-3)]
        assert len(hits) == 1
        found.add(hits[0])
    assert found == set(crops)
