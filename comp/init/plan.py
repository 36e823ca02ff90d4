"""What every `comp init` form shares: the plan it returns, the checks before writing, the atomic writes.

A form (csv, folders, mask) only reads the user's data and returns a `Plan`; `write_plan`
validates the plan in memory with the same checks `load_tables` runs, refuses to overwrite
without `force`, then writes generated tables, experiments/baseline.yaml and comp.yaml (last,
so a comp.yaml on disk always means the rest is complete).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from PIL import Image

from comp.core.config import Config, build_config, load_config
from comp.data.tables import (Tables, canonical, check_ids, label_column_keys, load_tables, read_any_delimiter,
                               require_columns, task_targets)
from comp.core.errors import CompError
from comp.core.layout import Layout, write_csv, write_text

log = logging.getLogger("comp.init")

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
N_EXAMPLES = 3


@dataclass(frozen=True)
class Guess:
    """How one column role was decided: the column, why, and the other candidates."""

    role: str  # id | image | label | group
    column: str | None
    how: str
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """Files or rows left out for one reason, with a few examples."""

    reason: str
    count: int
    examples: tuple[str, ...]

    def __str__(self) -> str:
        return f"skipped {self.count} {self.reason}, e.g. {', '.join(self.examples)}"


@dataclass(frozen=True)
class Correction:
    """One label fix applied from a corrections file."""

    person: str
    column: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Plan:
    """A workspace to write: comp.yaml's mapping, the train/test tables it points at, and what was decided."""

    comp: dict[str, Any]
    train: pd.DataFrame  # as it is (or will be) on disk at data.train_csv
    test: pd.DataFrame | None
    generated: tuple[str, ...] = ()  # which of "train", "test" this plan writes (the others are the user's)
    sources: tuple[Path, ...] = ()  # the user's input files: never overwritten, even with force
    guesses: tuple[Guess, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    corrections: tuple[Correction, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Written:
    """What write_plan did: files written, files kept, and the workspace as comp loads it."""

    written: tuple[Path, ...]
    kept: tuple[Path, ...]
    config: Config
    tables: Tables


@dataclass
class SkipLog:
    """Collects skipped items by reason while scanning (internal; frozen into Skipped at the end)."""

    items: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, item: str) -> None:
        self.items[reason].append(item)

    def freeze(self) -> tuple[Skipped, ...]:
        return tuple(Skipped(r, len(v), tuple(v[:N_EXAMPLES])) for r, v in self.items.items() if v)


def is_hidden(path: Path, root: Path) -> bool:
    """Dot files and folders (.DS_Store, macOS `._*` forks, .ipynb_checkpoints) and __MACOSX below root."""
    parts = path.relative_to(root).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def scan_images(folder: Path, skips: SkipLog, *, recursive: bool = True) -> list[Path]:
    """Image files under folder (sorted), logging hidden and non-image files into skips."""
    found = []
    entries = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(entries):
        if is_hidden(path, folder):
            if not path.is_dir():
                skips.add("hidden files", str(path.relative_to(folder)))
        elif path.is_file():
            if path.suffix.lower() in IMAGE_EXTS:
                found.append(path)
            else:
                skips.add("files that are not images", str(path.relative_to(folder)))
    return found


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise CompError(f"{what} {path} is not a folder; {'it is a file' if path.is_file() else 'it does not exist'}"
                        "; check the path (see `comp init --help` for the expected layout)")
    return path


def rel_to(ws: Layout, path: Path) -> str:
    """A path as comp.yaml should hold it: relative to the workspace when inside it, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(ws.root).as_posix() or "."
    except ValueError:
        return str(path)


def output(ws: Layout, given: str | None, which: str, inputs: tuple[Path | None, ...] = ()) -> str:
    """Where a generated table goes: as given, else data/<which>.csv (data/<which>_comp.csv if that is an input)."""
    if given:
        return given
    taken = {os.path.abspath(p) for p in inputs if p is not None}
    default = f"data/{which}.csv"
    return default if os.path.abspath(ws.path(default)) not in taken else f"data/{which}_comp.csv"


# ---------------------------------------------------------------- the default experiment


def suggest_size(paths: list[str], *, target: int = 224, n_probe: int = 16) -> int | list[int]:
    """Input size from a few images' median shape: short side ~target (or the image's, if smaller), x32."""
    step = max(1, len(paths) // n_probe)
    shapes = []
    for p in paths[::step][:n_probe]:
        try:
            with Image.open(p) as img:
                shapes.append((img.height, img.width))
        except OSError:
            continue
    if not shapes:
        return target
    h, w = (sorted(s[i] for s in shapes)[len(shapes) // 2] for i in (0, 1))
    short = max(32, min(target, 32 * round(min(h, w) / 32)))
    hh, ww = (max(32, 32 * round(short * v / min(h, w) / 32)) for v in (h, w))
    return hh if hh == ww else [hh, ww]


def baseline_experiment(size: int | list[int]) -> dict[str, Any]:
    """A sensible first experiment: a small pretrained CNN, augmentation sized to the images (flips only when the
    training images are flip-symmetric), cosine schedule."""
    return {
        "model": {"name": "resnet34", "pretrained": True},
        "image": {"size": size},
        "augment": {"preset": "auto"},
        "train": {"epochs": 10, "batch_size": "auto", "scheduler": "cosine", "warmup_epochs": 1,
                  "checkpoint": "last", "seed": 42},  # the last epoch of the schedule: a CV chosen on nothing
        "tta": {"transforms": "none"},  # `comp predict --tta auto` chooses one on out-of-fold predictions
    }


BASELINE_HEADER = (
    "# The first experiment, written by `comp init`: edit freely, or copy to experiments/<name>.yaml.\n"
    "# Keys you may set: model, image, augment, train, tta, tune (see comp.core.config).\n"
    "# train.lr unset: 1e-3 fine-tuning pretrained weights, 3e-3 from scratch. train.batch_size auto: fine-tuning the\n"
    "# larger of 64/32 that gives the run 300 optimizer steps, from scratch the largest of 64/32/16 that gives 1,000.\n"
)


# ---------------------------------------------------------------- checks and writes


def check_frame(frame: pd.DataFrame, cfg: Config, ws: Layout, *, labelled: bool) -> pd.DataFrame:
    """The checks load_tables runs, on an in-memory table: columns, unique ids, labels (targets of the task), files."""
    d = cfg.data
    name = "train table" if labelled else "test table"
    cols = {"data.id_col": d.id_col, "data.image_col": d.image_col}
    if labelled:
        cols |= {**label_column_keys(d, cfg.task), "data.group_col": d.group_col}
    require_columns(frame, cols, name)
    check_ids(frame[d.id_col].astype(str), name)
    out = canonical(frame, d, cfg.task, ws, labelled=labelled)
    missing = [p for p in out["path"] if not Path(p).is_file()]
    if missing:
        raise CompError(f"{len(missing)} of {len(out)} images in the {name} do not exist, e.g. {missing[:N_EXAMPLES]}; "
                        "check the image root (--image-root) and the image column (--image-col)")
    if labelled:
        task_targets(out, frame.reset_index(drop=True), d, cfg.task)  # refuses targets the task cannot read
    return out


def targets(plan: Plan, ws: Layout) -> dict[str, Path]:
    """Files the plan writes, by what they are."""
    data = plan.comp.get("data", {})
    out = {"comp.yaml": ws.comp_yaml}
    for which in plan.generated:
        out[f"{which} table"] = ws.path(data[f"{which}_csv"])
    return out


def guard(plan: Plan, ws: Layout, *, force: bool) -> None:
    """Refuse to overwrite without force, and to overwrite the user's own inputs at all."""
    sources = {Path(os.path.abspath(s)) for s in plan.sources}
    for what, path in targets(plan, ws).items():
        if Path(os.path.abspath(path)) in sources:
            raise CompError(f"the {what} would overwrite your input {path}; choose another output "
                            f"(--out-{what.split()[0]}) so the original stays as it is")
        if path.exists() and not force:
            raise CompError(f"{path} exists; comp init never overwrites it without --force "
                            "(rerun with --force to replace it, or choose another --workspace)")


def write_plan(ws: Layout, plan: Plan, *, force: bool = False) -> Written:
    """Validate the plan, then write its tables, experiments/baseline.yaml (when absent) and comp.yaml."""
    cfg = build_config(plan.comp, source="comp.yaml: ")
    train = check_frame(plan.train, cfg, ws, labelled=True)
    if plan.test is not None:
        check_frame(plan.test, cfg, ws, labelled=False)
    guard(plan, ws, force=force)
    written, kept = [], []
    paths = targets(plan, ws)
    for which in plan.generated:
        frame = plan.train if which == "train" else plan.test
        written.append(write_csv(paths[f"{which} table"], frame, float_format=None))
    exp = ws.experiment_yaml("baseline")
    if exp.exists():
        kept.append(exp)
    else:
        doc = baseline_experiment(suggest_size(train["path"].tolist()))
        written.append(write_text(exp, BASELINE_HEADER + yaml.safe_dump(doc, sort_keys=False)))
    written.append(write_text(ws.comp_yaml, "# Written by `comp init`; the README of comp lists every key.\n"
                              + yaml.safe_dump(plan.comp, sort_keys=False)))
    cfg = load_config(ws.root)
    tables = load_tables(cfg, ws, check_images=False)
    log.debug("wrote %s", ", ".join(str(p) for p in written))
    return Written(written=tuple(written), kept=tuple(kept), config=cfg, tables=tables)


# ---------------------------------------------------------------- submission format


def submission_from_sample(path: Path, ws: Layout, classes: list[str], *,
                           task: str = "multiclass") -> tuple[dict[str, Any], pd.DataFrame]:
    """comp.yaml's submission section from a sample submission (id first; one target, or one column per class).

    By task: multiclass and multitask label | probabilities; multilabel tags (one column of tags) | probabilities
    (a column per tag); binary prob (numbers) | label (the labels themselves); regression value.
    """
    if not Path(path).is_file():
        raise CompError(f"sample submission {path} does not exist; pass an existing CSV with --sample")
    sample = read_any_delimiter(Path(path), dtype=str, keep_default_na=False)  # `;`-separated samples too
    cols = [str(c) for c in sample.columns]
    if len(cols) < 2:
        raise CompError(f"sample submission {path} has columns {cols}; it needs an id column and a target column")
    one = {"multilabel": "tags", "binary": "prob", "regression": "value"}.get(task, "label")
    if len(cols) > 2 and classes and set(map(str, classes)) <= set(cols[1:]) and task != "regression":
        kind, target = "probabilities", cols[1]
    elif len(cols) == 2:
        kind, target = one, cols[1]
        if task == "binary" and set(sample[target].astype(str)) <= set(map(str, classes)) and \
                not all(_is_probability(v) for v in sample[target]):
            kind = "label"  # the sample holds the labels themselves
    else:
        raise CompError(f"sample submission {path} has columns {cols}: neither id + one target nor id + one column "
                        f"per class ({', '.join(map(str, classes[:6]))}...); pass a sample in the competition's format")
    if task == "binary" and kind == "probabilities":
        raise CompError(f"sample submission {path} has a column per class ({cols[1:]}); a binary task submits one "
                        "column (the positive probability, or the label)")
    sub = {"id_col": cols[0], "target_col": target, "kind": kind, "sample_csv": rel_to(ws, path)}
    return sub, sample


def _is_probability(value: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return 0.0 <= number <= 1.0 and not value.strip() in ("0", "1")
