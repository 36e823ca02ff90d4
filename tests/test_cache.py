"""comp.data.cache: decode of awkward files, bbox crop, a cache that is reused, invalidated and written atomically."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import comp.data.cache as cache
from comp.core.config import Config
from comp.data.cache import ImageStore, cache_hw, crop_box, prepare_images
from comp.core.errors import CompError
from comp.core.layout import Layout


def config(size=(24, 32), preset="none", cache_on=True, **image) -> Config:
    return Config.model_validate({"image": {"size": list(size), "cache": cache_on, **image},
                                  "augment": {"preset": preset}})


def write_awkward(folder: Path) -> list[Path]:
    """Grayscale, RGBA, palette, 16-bit, EXIF-rotated JPEG and plain RGB files, 40x30."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    files = {
        "gray.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((30, 40), 128, np.uint8)])),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "sixteen.png": Image.fromarray(rgb[..., 1].astype(np.uint16) * 257),
        "plain.jpg": Image.fromarray(rgb),
    }
    paths = []
    for name, img in files.items():
        img.save(folder / name)
        paths.append(folder / name)
    paths.append(write_exif_rotated(folder / "exif.jpg"))
    return paths


def write_exif_rotated(path: Path) -> Path:
    """A 40 wide x 20 tall JPEG, left half red, tagged 'rotate 90 clockwise' (orientation 6)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)
    return path


def frame_of(paths, boxes=None) -> pd.DataFrame:
    frame = pd.DataFrame({"path": [str(p) for p in paths]})
    if boxes is not None:
        frame[["bx0", "by0", "bx1", "by1"]] = np.asarray(boxes, dtype=float)
    return frame


def prepare(frame: pd.DataFrame, cfg: Config, ws: Layout, **options) -> ImageStore:
    """prepare_images with the image and augment sections of a whole config, as the stages call it."""
    return prepare_images(frame, cfg.image, cfg.augment, ws, **options)


@pytest.fixture
def ws(tmp_path) -> Layout:
    return Layout.at(tmp_path / "ws")


def cache_files(ws: Layout) -> list[str]:
    folder = ws.cache_dir / "images"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("cache_on", [True, False])
def test_awkward_files_decode_to_rgb_of_the_cached_size(tmp_path, ws, cache_on):
    paths = write_awkward(tmp_path / "img")
    store = prepare(frame_of(paths), config(cache_on=cache_on), ws)
    assert len(store) == len(paths)
    for i in range(len(store)):
        img = store[i]
        assert img.shape == (24, 32, 3) and img.dtype == np.uint8, paths[i]
    gray = store[0]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_cache_and_on_the_fly_give_the_same_pixels(tmp_path, ws):
    paths = write_awkward(tmp_path / "img")
    cfg = config(preset="light", cache_scale=1.14)
    cached = prepare(frame_of(paths), cfg, ws)
    live = prepare(frame_of(paths), config(preset="light", cache_on=False, cache_scale=1.14), ws)
    assert cached.hw == live.hw == cache_hw(cfg.image, cfg.augment) == (27, 36)  # 24x32 x 1.14: room for random crops
    for i in range(len(paths)):
        assert np.array_equal(cached[i], live[i])


def test_exif_rotation_is_applied(tmp_path, ws):
    path = write_exif_rotated(tmp_path / "exif.jpg")
    img = prepare(frame_of([path]), config(size=(40, 20)), ws)[0]  # rotated: 40 tall, 20 wide
    top, bottom = img[:18].reshape(-1, 3).mean(0), img[22:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[1] < 60  # the red left half became the top half
    assert bottom[0] < 60


def square_image(path: Path) -> Path:
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[20:30, 10:20] = 255  # white square: x 10..20, y 20..30
    Image.fromarray(arr).save(path)
    return path


def test_bbox_crop_with_margin(tmp_path, ws):
    path = square_image(tmp_path / "sq.png")
    box = [[10, 20, 20, 30]]
    tight = prepare(frame_of([path], box), config(size=(8, 8), bbox_margin=0.0), ws)[0]
    assert tight.min() == 255
    loose = prepare(frame_of([path], box), config(size=(20, 20), bbox_margin=0.5), ws)[0]
    assert loose[10, 10].min() == 255 and loose[0, 0].max() == 0  # box in the middle, margin black
    fractions = np.asarray(box, float) / 40
    frac = prepare(frame_of([path], fractions), config(size=(8, 8), bbox_margin=0.0), ws)[0]
    assert np.array_equal(frac, tight)


def test_missing_or_degenerate_box_keeps_whole_image():
    img = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    for box in (None, np.array([np.nan, 1, 2, 3]), np.array([5, 5, 5, 9]), np.array([50, 50, 60, 60])):
        assert crop_box(img, box, 0.1) is img
    assert crop_box(img, np.array([0, 0, 10, 20]), 0.0).shape == (20, 10, 3)
    assert crop_box(img, np.array([-5, -5, 100, 100]), 0.2).shape == (40, 40, 3)  # clipped to the image


def count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = cache.read_rgb

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(cache, "read_rgb", counting)
    return calls


def test_cache_is_reused_without_decoding(tmp_path, ws, monkeypatch):
    paths = write_awkward(tmp_path / "img")
    calls = count_decodes(monkeypatch)
    first = prepare(frame_of(paths), config(), ws)
    assert len(calls) == len(paths)
    second = prepare(frame_of(paths), config(), ws)
    assert len(calls) == len(paths)  # no decode the second time
    assert second.array_path == first.array_path
    assert all(np.array_equal(first[i], second[i]) for i in range(len(paths)))


def test_cache_invalidated_by_mtime_size_margin_and_row_order(tmp_path, ws, monkeypatch):
    paths = write_awkward(tmp_path / "img")
    frame = frame_of(paths)
    key0 = prepare(frame, config(), ws).array_path
    calls = count_decodes(monkeypatch)
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    key1 = prepare(frame, config(), ws).array_path
    assert key1 != key0 and len(calls) == len(paths)
    key2 = prepare(frame, config(size=(24, 24)), ws).array_path
    key3 = prepare(frame.iloc[::-1], config(size=(24, 24)), ws).array_path
    assert len({key0, key1, key2, key3}) == 4
    boxed = frame_of(paths, [[0, 0, 20, 20]] * len(paths))
    key4 = prepare(boxed, config(bbox_margin=0.1), ws).array_path
    key5 = prepare(boxed, config(bbox_margin=0.2), ws).array_path
    assert len({key0, key1, key2, key3, key4, key5}) == 6


def test_no_temp_files_and_a_failed_build_leaves_no_cache(tmp_path, ws, monkeypatch):
    paths = write_awkward(tmp_path / "img")
    prepare(frame_of(paths), config(), ws)
    assert [n for n in cache_files(ws) if n.endswith(".npy")] and not [n for n in cache_files(ws) if n.endswith(".tmp")]
    calls = count_decodes(monkeypatch)
    real = cache.read_rgb

    def dying(path):
        if len(calls) > 3:
            raise OSError("disk on fire")
        return real(path)

    monkeypatch.setattr(cache, "read_rgb", dying)
    before = cache_files(ws)
    with pytest.raises(CompError, match="could not decode .*disk on fire"):
        prepare(frame_of(paths), config(size=(16, 16)), ws)
    after = [n for n in cache_files(ws) if not n.endswith(".lock")]
    assert after == [n for n in before if not n.endswith(".lock")]


def test_damaged_cache_file_is_rebuilt(tmp_path, ws):
    paths = write_awkward(tmp_path / "img")
    store = prepare(frame_of(paths), config(), ws)
    good = store[3].copy()
    store.array_path.write_bytes(store.array_path.read_bytes()[:200])  # truncated
    again = prepare(frame_of(paths), config(), ws)
    assert np.array_equal(again[3], good)


def test_store_pickles_without_pixels_and_returns_writable_copies(tmp_path, ws):
    paths = write_awkward(tmp_path / "img")
    store = prepare(frame_of(paths), config(size=(64, 64)), ws)
    _ = store[0]  # opens the memmap
    blob = pickle.dumps(store)
    assert len(blob) < 2000  # workers reopen the file; pixels are not copied through pickle
    clone = pickle.loads(blob)
    img = clone[1]
    assert img.flags.writeable and np.array_equal(img, store[1])
    raw = np.load(store.array_path, mmap_mode="r")
    assert not raw.flags.writeable


def test_corrupt_or_missing_file_errors_name_it(tmp_path, ws):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(CompError, match=r"could not decode .*bad.png"):
        prepare(frame_of([bad]), config(), ws)
    with pytest.raises(CompError, match=r"image .*gone.png cannot be read"):
        prepare(frame_of([tmp_path / "gone.png"]), config(), ws)


def test_bad_cache_scale_rejected():
    with pytest.raises(CompError, match="cache_scale must be 1.0 or more, got 0.5"):
        light = config(preset="light", cache_scale=0.5)
        cache_hw(light.image, light.augment)


def test_empty_frame_and_in_memory_store(ws):
    empty = prepare(frame_of([]), config(), ws)
    assert len(empty) == 0 and empty.hw == (24, 32)
    mem = ImageStore(array=np.zeros((2, 5, 6, 3), np.uint8))
    assert len(mem) == 2 and mem.hw == (5, 6)


def test_cache_that_cannot_fit_is_refused(tmp_path, ws, monkeypatch):
    paths = write_awkward(tmp_path / "img")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(CompError, match=r"image cache needs .* GiB free; free disk space, .*image.cache=false"):
        prepare(frame_of(paths), config(), ws)


def test_same_inputs_give_byte_identical_caches(tmp_path):
    paths = write_awkward(tmp_path / "img")
    a = prepare(frame_of(paths), config(preset="light"), Layout.at(tmp_path / "a"))
    b = prepare(frame_of(paths), config(preset="light"), Layout.at(tmp_path / "b"))
    assert a.array_path.name == b.array_path.name
    assert a.array_path.read_bytes() == b.array_path.read_bytes()


def test_build_reports_progress_once_per_image(tmp_path, ws):
    from comp.core.progress import Progress

    class Recorder(Progress):
        def __init__(self):
            self.seen: list[tuple[int | None, str, int]] = []

        def track(self, iterable, total=None, description=""):
            n = 0
            for item in iterable:
                n += 1
                yield item
            self.seen.append((total, description, n))

    paths = write_awkward(tmp_path / "img")
    rec = Recorder()
    prepare(frame_of(paths), config(), ws, progress=rec)
    prepare(frame_of(paths), config(), ws, progress=rec)  # reused: no bar
    assert rec.seen == [(len(paths), "caching images", len(paths))]


def test_concurrent_builders_decode_once(tmp_path, ws, monkeypatch):
    """Two fold processes (here threads) asking for the same cache at once: one builds, the other waits and reuses."""
    from concurrent.futures import ThreadPoolExecutor

    paths = write_awkward(tmp_path / "img")
    calls = count_decodes(monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        stores = list(pool.map(lambda _: prepare(frame_of(paths), config(), ws), range(2)))
    assert len(calls) == len(paths)
    assert stores[0].array_path == stores[1].array_path


def test_a_copied_workspace_reuses_its_cache(tmp_path, monkeypatch):
    """The key holds each image's path in the workspace, not the machine's absolute path: a workspace copied with
    its files' times (cp -a, rsync -a) decodes nothing; an image outside the workspace keeps its absolute path."""
    import shutil

    first = Layout.at(tmp_path / "a")
    paths = write_awkward(first.root / "data")
    built = prepare(frame_of(paths), config(), first).array_path
    shutil.copytree(first.root, tmp_path / "b")  # copy2: times kept
    copy = Layout.at(tmp_path / "b")
    calls = count_decodes(monkeypatch)
    reused = prepare(frame_of([copy.root / "data" / p.name for p in paths]), config(), copy).array_path
    assert not calls and reused.name == built.name and reused.parent == copy.cache_dir / "images"
    assert cache.key_path(str(copy.root / "data" / "x.png"), copy.root) == "data/x.png"
    assert cache.key_path(str(tmp_path / "x.png"), copy.root) == str(tmp_path / "x.png")


def _rss_anon() -> int:
    """This process's private resident memory in bytes (file pages of a memory map are not in it)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RssAnon from Linux /proc")
def test_an_epoch_over_the_cache_keeps_the_decoded_images_on_disk(tmp_path, ws):
    """The loaders read the memory-mapped cache image by image: an epoch over it adds far less private memory
    than the decoded dataset holds (were the pixels loaded into RAM, the growth would be the whole cache)."""
    from comp.train.loaders import train_loader

    folder = tmp_path / "img"
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for i in range(100):
        files.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(files[-1], compress_level=0)
    paths = files * 12  # 1200 rows: each file read into the cache 12 times
    cfg = Config.model_validate({"image": {"size": 96}, "augment": {"preset": "none"},
                                 "train": {"batch_size": 16, "num_workers": 0}, "model": {"name": "test_resnet"}})
    store = prepare(frame_of(paths), cfg, ws)
    cache_bytes = store.array_path.stat().st_size  # 1200 x 96 x 96 x 3 = 33 MB
    loader = train_loader(cfg, store, np.arange(len(paths)), np.zeros(len(paths), dtype=int), seed=0)
    batches = iter(loader)
    next(batches)  # allocator and transform warmed up
    before = _rss_anon()
    n_seen = 16 + sum(len(x) for x, _ in batches)
    grown = _rss_anon() - before
    assert n_seen == len(paths) and isinstance(loader.dataset.store._data(), np.memmap)
    assert grown < cache_bytes / 3, f"an epoch added {grown / 2**20:.1f} MiB of private memory for a {cache_bytes / 2**20:.0f} MiB cache"


def test_a_copied_workspace_reuses_its_image_checks(tmp_path, monkeypatch):
    """.cache/image_check.json is keyed on paths in the workspace: a copy with its files' times (cp -a, rsync -a)
    opens no image to check it again, and the facts it returns name the copy's files."""
    import json
    import shutil

    import comp.data.images as images
    from conftest import build_workspace

    first = Layout.at(build_workspace(tmp_path / "a"))
    paths = sorted(str(p) for p in (first.root / "data" / "images").glob("*.png"))
    images.check_images(paths, first.image_check_json)
    keys = set(json.loads(first.image_check_json.read_text())["files"])
    assert keys == {f"data/images/{Path(p).name}" for p in paths}  # no machine path in the file
    shutil.copytree(first.root, tmp_path / "b")  # copy2: times kept
    copy = Layout.at(tmp_path / "b")
    opened: list[str] = []
    real = images.Image.open
    monkeypatch.setattr(images.Image, "open", lambda path, *a, **k: (opened.append(str(path)), real(path, *a, **k))[1])
    moved = [str(copy.root / Path(p).relative_to(first.root)) for p in paths]
    facts = images.check_images(moved, copy.image_check_json)
    assert opened == [] and facts["path"].tolist() == moved and facts["ok"].all()
    os.utime(moved[0], ns=(0, 0))  # a changed file (its time) is checked again, alone
    images.check_images(moved, copy.image_check_json)
    assert opened == [moved[0]]


@pytest.mark.parametrize("size, scale, keeps_edges", [(32, None, True), (32, 1.14, False), (128, None, False)])
def test_evaluation_of_small_inputs_sees_the_whole_frame(tmp_path, ws, size, scale, keeps_edges):
    """Unset, image.cache_scale leaves small inputs no margin, so the evaluation view keeps the image's edges (where
    an object filling the frame has its outline); from 128 px up the ImageNet margin and its centre crop stay."""
    from comp.data.augment import build_eval_transform

    folder = tmp_path / "img"
    folder.mkdir()
    pixels = np.zeros((8 * size // 5, 8 * size // 5, 3), dtype=np.uint8)  # a dark image with a white outer ring
    ring = max(2, size // 16)
    pixels[:ring], pixels[-ring:], pixels[:, :ring], pixels[:, -ring:] = 255, 255, 255, 255
    Image.fromarray(pixels).save(folder / "ring.png")
    image = {"size": size} if scale is None else {"size": size, "cache_scale": scale}
    cfg = Config.model_validate({"image": image, "augment": {"preset": "auto"}})
    assert cfg.image.cache_scale == (scale or (1.0 if size < 128 else 1.14))  # config.yaml records the number
    store = prepare(frame_of([folder / "ring.png"]), cfg, ws)
    view = build_eval_transform(cfg.image, cfg.augment, (0.0,) * 3, (1.0,) * 3)(image=store[0])["image"]
    assert tuple(view.shape) == (3, size, size)
    edges = float(np.asarray(view)[:, [0, -1], :].mean())  # the top and bottom rows the model sees (0-1 scale)
    assert (edges > 0.5) == keeps_edges, f"edge brightness {edges:.2f} at size {size}, cache_scale {cfg.image.cache_scale}"
