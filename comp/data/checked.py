"""Tables whose images are checked in the same decode that builds the image cache: each file is decoded once.

`load_tables(check_images=True)` decodes every image to find corrupt files, and the first cache
build decodes them all again. Here the cache build's reader records each file's check facts
(comp.data.images.check_images' columns, kept in .cache/image_check.json) as it decodes; a valid
cache proves its files decode, so a warm run decodes nothing.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import pandas as pd

from comp.core.config import AugmentConfig, Config, ImageConfig
from comp.data.cache import prepare_images
from comp.data.images import inspect_rgb, record_checks
from comp.data.tables import Tables, check_exist, check_files, load_tables
from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout

log = logging.getLogger("comp.data.checked")


def load_checked_tables(cfg: Config, ws: Layout, *, progress: Progress = SILENT) -> Tables:
    """load_tables with every image checked; with image.cache on, the check is the cache build's own decode."""
    if not cfg.image.cache:
        return load_tables(cfg, ws, progress=progress)
    tables = load_tables(cfg, ws, check_images=False, progress=progress)
    for frame, name in image_frames(tables):
        check_and_cache(frame, cfg.image, cfg.augment, ws, name, progress=progress)
    return tables


def image_frames(tables: Tables) -> list[tuple[pd.DataFrame, str]]:
    """(frame, the CSV it came from) for every table whose images are checked and cached: train, then test."""
    return [(tables.train, "train.csv")] + ([(tables.test, "test.csv")] if tables.test is not None else [])


def check_and_cache(frame: pd.DataFrame, image: ImageConfig, augment: AugmentConfig, ws: Layout, name: str, *,
                    progress: Progress = SILENT) -> None:
    """Build (or reuse) the image cache of `frame`, checking each image in the decode; bad files: check_files' error."""
    check_exist(frame, name)
    facts: dict[str, dict] = {}
    try:
        prepare_images(frame, image, augment, ws, progress=progress, reader=functools.partial(_checked_read, facts))
    except CompError:
        check_files(frame, ws, name, progress)  # names every file that does not decode, as the plain check does
        raise
    record_checks(ws.image_check_json, facts)


def _checked_read(facts: dict[str, dict], path: str) -> np.ndarray:
    """read_rgb that notes check_images' facts about the file (called from the cache build's threads)."""
    try:
        info, rgb = inspect_rgb(path)
    except Exception as exc:  # any decoder error means "corrupt"; check_files then names them all
        raise CompError(f"could not decode {path} ({type(exc).__name__}: {exc})") from exc
    facts[path] = info
    return rgb
