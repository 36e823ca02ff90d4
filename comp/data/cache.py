"""Decode, crop and resize every image once into a memory-mapped uint8 cache shared by epochs, folds and processes.

The cache is one `.npy` file of shape (N, H', W', 3) under `ws.cache_dir/images/`, named by a
hash of the image files (path in the workspace, size, mtime) and the preprocessing settings, so it is reused
until a file or a setting changes. H', W' is the network input enlarged by
`image.cache_scale` (room for random crops) when the augmentation crops, else the input size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from filelock import FileLock  # a dependency of torch

from comp.core.config import AugmentConfig, ImageConfig, default_cache_scale
from comp.data.images import key_path, read_rgb  # key_path: the image caches' one path key
from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout, atomic_path

log = logging.getLogger("comp.data.cache")

CACHE_VERSION = 1
BBOX = ("bx0", "by0", "bx1", "by1")
STALE_TMP_SECONDS = 24 * 3600


def needs_margin(augment: AugmentConfig) -> bool:
    """Whether the training augmentation crops, so cached images keep room around the input.

    Presets other than `none` crop; an explicit augment.transforms list crops when it names a
    *Crop* transform (else train and eval would see the image at different scales).
    """
    if augment.transforms:
        return _names_crop(augment.transforms)
    return augment.preset != "none"


def _names_crop(node: object) -> bool:
    if isinstance(node, dict):
        return any("crop" in str(k).lower() or _names_crop(v) for k, v in node.items())
    if isinstance(node, (list, tuple)):
        return any(_names_crop(v) for v in node)
    return False


def cache_hw(image: ImageConfig, augment: AugmentConfig) -> tuple[int, int]:
    """(H', W') of cached images: image.hw, scaled by image.cache_scale when the augmentation crops."""
    scale = default_cache_scale(image, augment) if image.cache_scale is None else image.cache_scale
    if scale < 1.0:
        raise CompError(f"image.cache_scale must be 1.0 or more, got {scale}; cached images cannot be smaller than the input")
    h, w = image.hw
    if h < 1 or w < 1:
        raise CompError(f"image.size must be positive, got {image.size}")
    if not needs_margin(augment):
        scale = 1.0
    return round(h * scale), round(w * scale)


def crop_box(img: np.ndarray, box: np.ndarray | None, margin: float, *, fractional: bool = False) -> np.ndarray:
    """The box (x0, y0, x1, y1) grown by `margin` x its size on each side, clipped to the image.

    Boxes are in pixels, or in fractions of the image size when `fractional`. A missing (NaN),
    empty or outside box keeps the whole image.
    """
    if box is None or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        return img
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (float(v) * s for v, s in zip(box, (w, h, w, h) if fractional else (1, 1, 1, 1)))
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    xa, xb = int(np.clip(np.floor(x0 - mx), 0, w)), int(np.clip(np.ceil(x1 + mx), 0, w))
    ya, yb = int(np.clip(np.floor(y0 - my), 0, h)), int(np.clip(np.ceil(y1 + my), 0, h))
    if xb - xa < 2 or yb - ya < 2:  # a box outside the image: keep the whole image
        return img
    return img[ya:yb, xa:xb]


def resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) -> (hw[0], hw[1], 3); area averaging when shrinking (no aliasing), cubic when enlarging."""
    if img.shape[:2] == tuple(hw):
        return np.ascontiguousarray(img)
    shrink = img.shape[0] >= hw[0] and img.shape[1] >= hw[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(img, (hw[1], hw[0]), interpolation=interp)


def load_image(
    path: str, box: np.ndarray | None, *, hw: tuple[int, int], margin: float, fractional: bool = False,
    reader: Callable[[str], np.ndarray] | None = None,
) -> np.ndarray:
    """One image decoded to RGB (by `reader`), cropped to its box and resized: what the cache stores."""
    try:
        img = (reader or read_rgb)(path)  # looked up at call time (tests count decodes)
    except (OSError, ValueError, SyntaxError) as exc:
        raise CompError(f"could not decode {path} ({type(exc).__name__}: {exc}); replace the file or drop its row") from exc
    return resize(crop_box(img, box, margin, fractional=fractional), hw)


class ImageStore:
    """Decoded, cropped, resized uint8 RGB images, indexable: a memory-mapped cache or decode-on-the-fly."""

    def __init__(
        self,
        *,
        array_path: Path | None = None,
        array: np.ndarray | None = None,
        paths: list[str] | None = None,
        boxes: np.ndarray | None = None,
        hw: tuple[int, int] | None = None,
        margin: float = 0.0,
        fractional: bool = False,
    ) -> None:
        if sum(x is not None for x in (array_path, array, paths)) != 1:
            raise ValueError("ImageStore needs exactly one of array_path, array, paths")
        if paths is not None and hw is None:
            raise ValueError("ImageStore(paths=...) needs hw")
        self.array_path = None if array_path is None else Path(array_path)
        self.paths = paths
        self.boxes = boxes
        self.margin = margin
        self.fractional = fractional
        self._array = array
        self._hw = hw

    def _data(self) -> np.ndarray:
        if self._array is None:  # opened lazily, so each DataLoader worker maps the file itself
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.array_path is not None:
            state["_array"] = None  # spawned workers reopen the memmap instead of copying it
        return state

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self._data())

    @property
    def hw(self) -> tuple[int, int]:
        """(H', W') of every image."""
        return tuple(self._hw) if self.paths is not None else tuple(self._data().shape[1:3])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), H', W', 3) uint8: the images of `rows`, gathered in one copy from the cache."""
        if self.paths is None:
            return np.asarray(np.take(self._data(), np.asarray(rows, dtype=np.int64), axis=0))  # ndarray, not memmap
        return np.stack([self[int(i)] for i in rows])

    def __getitem__(self, i: int) -> np.ndarray:
        if self.paths is None:
            return np.array(self._data()[i])  # a private writable copy; the memmap stays read-only
        box = None if self.boxes is None else self.boxes[i]
        return load_image(self.paths[i], box, hw=self._hw, margin=self.margin, fractional=self.fractional)


def frame_boxes(frame: pd.DataFrame) -> np.ndarray | None:
    """(N, 4) float boxes from the canonical bx0..by1 columns, or None when the frame has none."""
    if not all(c in frame.columns for c in BBOX):
        return None
    return frame[list(BBOX)].to_numpy(dtype=np.float64)


def fraction_boxes(boxes: np.ndarray | None) -> bool:
    """Whether every box lies within [0, 1]: then boxes are fractions of the image size, not pixels."""
    if boxes is None:
        return False
    finite = boxes[np.isfinite(boxes).all(axis=1)]
    return len(finite) > 0 and float(finite.max()) <= 1.0 and float(finite.min()) >= 0.0


def cache_key(paths: list[str], boxes: np.ndarray | None, *, hw: tuple[int, int], margin: float,
              root: Path | None = None) -> str:
    """A hash of the files (path, size, mtime) and every setting that changes the cached pixels.

    Paths under `root` (the workspace) enter the key relative to it, so a copied or moved workspace (files copied
    with their times: cp -a, rsync -a, tar) finds its cache instead of rebuilding it; a path outside stays absolute.
    """
    digest = hashlib.sha256(f"v{CACHE_VERSION}|hw={hw}|margin={margin}|n={len(paths)}".encode())
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise CompError(f"image {path} cannot be read ({exc}); check data.image_root in comp.yaml") from exc
        digest.update(f"|{key_path(path, root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    if boxes is not None:
        digest.update(np.ascontiguousarray(boxes, dtype=np.float64).tobytes())
    return digest.hexdigest()[:20]


def prepare_images(frame: pd.DataFrame, image: ImageConfig, augment: AugmentConfig, ws: Layout, *,
                   progress: Progress = SILENT, reader: Callable[[str], np.ndarray] | None = None) -> ImageStore:
    """An ImageStore for the rows of `frame` (columns path, optional bx0..by1), built once and cached on disk.

    image: size, cache_scale, bbox_margin and whether to cache at all; augment: whether training crops (then the
    cached images keep a margin, see cache_hw).
    `reader` decodes a file when the cache is built (comp.data.checked checks each image in that same decode).
    """
    paths = frame["path"].astype(str).tolist()
    boxes = frame_boxes(frame)
    hw = cache_hw(image, augment)
    margin = image.bbox_margin if boxes is not None else 0.0
    fractional = fraction_boxes(boxes)
    if fractional:
        log.info("bbox columns all lie within [0, 1]: reading them as fractions of the image size")
    if not image.cache:
        return ImageStore(paths=paths, boxes=boxes, hw=hw, margin=margin, fractional=fractional)
    if not paths:
        return ImageStore(array=np.zeros((0, *hw, 3), np.uint8))
    target = ws.image_cache(cache_key(paths, boxes, hw=hw, margin=margin, root=ws.root))
    if not _valid(target, len(paths), hw):
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):  # parallel fold processes build it once
            if not _valid(target, len(paths), hw):
                _sweep_stale(target.parent)
                check_space(target.parent, len(paths) * hw[0] * hw[1] * 3)
                build_cache(target, paths, boxes, hw=hw, margin=margin, fractional=fractional, progress=progress,
                            reader=reader)
    else:
        log.debug("reusing image cache %s", target)
    return ImageStore(array_path=target)


def check_space(folder: Path, n_bytes: int) -> None:
    """Refuse to start a cache that cannot fit on its disk (with 5% to spare)."""
    free = shutil.disk_usage(folder).free
    if n_bytes * 1.05 > free:
        raise CompError(
            f"the image cache needs {n_bytes / 2**30:.1f} GiB but {folder} has {free / 2**30:.1f} GiB free; "
            "free disk space, lower image.size or image.cache_scale, or set image.cache=false to decode on the fly"
        )


def _valid(path: Path, n: int, hw: tuple[int, int]) -> bool:
    """Whether `path` is a finished cache of the expected shape (a damaged file is rebuilt)."""
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.shape == (n, *hw, 3) and arr.dtype == np.uint8


def _sweep_stale(folder: Path) -> None:
    """Remove temporary files that killed builds left behind (older than a day: no build is that slow)."""
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
        except OSError:
            pass


def build_cache(
    target: Path,
    paths: list[str],
    boxes: np.ndarray | None,
    *,
    hw: tuple[int, int],
    margin: float,
    fractional: bool = False,
    progress: Progress = SILENT,
    n_workers: int | None = None,
    reader: Callable[[str], np.ndarray] | None = None,
) -> Path:
    """Decode all images in threads into a temporary .npy memmap, then rename it to `target`."""
    workers = n_workers or min(8, (os.cpu_count() or 2) * 2)

    def one(i: int) -> np.ndarray:
        box = None if boxes is None else boxes[i]
        return load_image(paths[i], box, hw=hw, margin=margin, fractional=fractional, reader=reader)

    start = time.perf_counter()
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *hw, 3))
        pool = ThreadPoolExecutor(workers)
        try:
            images = pool.map(one, range(len(paths)))
            for i, img in enumerate(progress.track(images, total=len(paths), description="caching images")):
                out[i] = img
        finally:
            pool.shutdown(cancel_futures=True)  # on an error, stop decoding the rest
        out.flush()
        del out
    log.info("cached %d images at %dx%d in %.1fs: %s", len(paths), hw[0], hw[1], time.perf_counter() - start, target)
    return target
