"""The learning-rate range test (`comp lr-find`, `train.lr: auto`).

A fresh model, built exactly as fold-train builds it for the fold (the experiment's optimizer, loss,
augmentation, sampler and loader), trains on the fold's training rows while the learning rate grows
exponentially from `start` to `end`, one optimizer step per batch (the loader is cycled when it has
fewer batches than steps). The loss is smoothed exponentially with bias correction; the test stops
when the smoothed loss exceeds DIVERGE x its minimum, or a loss is not finite.

The suggested rate follows one rule, recorded with it (every rule's value is in lr_find.json):

- `steepest` (default): the rate where the smoothed loss falls fastest (per decade of lr) on its
  descent, from the last point at the starting plateau's level to the minimum;
- `min10`: the rate at the minimum of the smoothed loss, divided by 10.

The suggestions are read from the loss smoothed without lag (`centred`). Default `steepest` because it
landed closer to the best rate of a small grid (1e-4 .. 3e-2, 6 epochs on fold 0 of the demo digits,
`benchmarks/bench_lr_find.py`): finder / best = 1.68 (test_resnet, best 1e-2) and 2.68 (resnet10t from
scratch, best 3e-3), both within the goal's factor of 3, where `min10` gave 0.39 and 0.27 (the second
missed).

Resolving `train.lr: auto` (resolve_auto_lr): the weights depend on the number, so `train_hash` is the
hash of the config with the chosen number in place of `auto`, and config.yaml records that config
plus `lr_chosen`. A later run with `auto` takes the number from config.yaml when the rest of the config
is unchanged (its train_hash with that number matches), else from lr_find.json when that was run on the
same config (its `auto_hash`: the hash of the config with lr `auto`), and only otherwise runs the finder
on fold 0. So a resumed run never re-runs the finder, every fold trains with one value, and a changed
lr (a number instead of `auto`, or `auto` where a number was trained) changes train_hash and is refused
as any other config change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from comp.core.config import Config
from comp.core.errors import CompError
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout, read_json_record, write_csv, write_json

log = logging.getLogger("comp.train.lrfind")

START, END, STEPS = 1e-7, 10.0, 200
BETA = 0.98  # smoothing of the loss at most (long ramps); see ema_beta
DIVERGE = 4.0  # stop when the smoothed loss exceeds this many times its minimum
SKIP_START = 5  # steps ignored by the steepest-descent rule (the smoothing has not settled)
RULES = ("steepest", "min10")
DEFAULT_RULE = "steepest"


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    suggestions: dict[str, float]
    fold: int
    stopped: str  # diverged | non-finite | steps
    auto_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.lrs)

    def record(self) -> dict[str, Any]:
        """lr_find.json."""
        return {"suggestion": self.suggestion, "rule": self.rule, "suggestions": self.suggestions,
                "steps": self.steps, "fold": self.fold, "stopped": self.stopped, "auto_hash": self.auto_hash,
                "lr_range": [self.lrs[0], self.lrs[-1]] if self.lrs else None, **self.extra}


def with_lr(cfg: Config, lr: float | str) -> Config:
    """cfg with train.lr replaced (a number, or 'auto')."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": lr})})


def auto_hash(cfg: Config) -> str:
    """The train_hash of cfg with lr `auto`: identifies what a finder's result applies to."""
    return with_lr(cfg, "auto").train_hash()


# ---------------------------------------------------------------- suggestion rules


def smooth(losses: np.ndarray, beta: float = BETA) -> np.ndarray:
    """Exponential moving average with bias correction (the first values are not pulled towards 0)."""
    out, avg = np.empty(len(losses)), 0.0
    for i, value in enumerate(losses):
        avg = beta * avg + (1 - beta) * float(value)
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def centred(losses: np.ndarray, beta: float) -> np.ndarray:
    """The loss smoothed forwards and backwards (bias-corrected EMAs averaged): no lag along the ramp.

    The causal EMA that stops the test lags ~1/(1-beta) steps behind the loss, which would move every
    suggestion to higher rates; the suggestions are read from this curve instead.
    """
    losses = np.asarray(losses, dtype=np.float64)
    return (smooth(losses, beta) + smooth(losses[::-1], beta)[::-1]) / 2


def ema_beta(steps: int) -> float:
    """The loss's smoothing for a ramp of `steps`: a window of about 1/20 of the ramp (0.9 at 200 steps).

    A fixed 0.98 lags ~50 steps: at 100-200 steps that is 2-4 decades of lr, so the divergence would be
    seen long after it happened (or never) and the curve's minimum would sit at a far higher rate.
    """
    return float(min(BETA, max(0.5, 1 - 20 / max(steps, 1))))


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> dict[str, float]:
    """Every rule's suggested lr from the ramp (lrs increasing) and its smoothed loss (see `centred`)."""
    lrs, smoothed = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    if len(lrs) < 2:
        raise CompError(f"the learning-rate range test stopped after {len(lrs)} step(s): the loss diverged at once; "
                        "lower --start or check the data and loss")
    best = int(np.argmin(smoothed))
    out = {"min10": lrs[best] / 10}
    # the descent: from the last point before the minimum still at the starting plateau's level
    plateau = float(np.median(smoothed[: max(SKIP_START, len(smoothed) // 10)]))
    above = np.flatnonzero(smoothed[: best + 1] >= plateau)
    lo = max(min(SKIP_START, max(0, best - 1)), int(above[-1]) if len(above) else 0)
    if best - lo >= 2:
        slope = np.gradient(smoothed[lo: best + 1], np.log10(lrs[lo: best + 1]))
        out["steepest"] = lrs[lo + int(np.argmin(slope))]
    else:
        out["steepest"] = lrs[best]
    return {name: float(f"{lr:.3g}") for name, lr in out.items()}  # three significant digits, as printed


# ---------------------------------------------------------------- the range test


def check_options(*, start: float = START, end: float = END, steps: int = STEPS, rule: str = DEFAULT_RULE) -> None:
    if rule not in RULES:
        raise CompError(f"unknown lr-find rule {rule!r}; use one of: {', '.join(RULES)}")
    if not (0 < start < end) or not math.isfinite(end):
        raise CompError(f"lr-find needs 0 < start < end, got start {start}, end {end}")
    if steps < 10:
        raise CompError(f"lr-find needs 10 or more steps, got {steps}")


def lr_range_test(cfg: Config, tables: Any, fold_of: np.ndarray, fold: int = 0, *, ws: Layout,
                  start: float = START, end: float = END, steps: int = STEPS, rule: str = DEFAULT_RULE,
                  progress: Progress = SILENT) -> LRFindResult:
    """Run the range test on fold `fold`'s training rows; the caller's RNG state is unchanged afterwards."""
    import torch
    from torch import nn

    from comp.model.checkpoint import seeded_rng
    from comp.data.cache import prepare_images
    from comp.data.dataset import set_epoch
    from comp.run.device import autocast
    from comp.train.engine import split_indices, to_device
    from comp.train.loaders import train_loader
    from comp.train.parts import build_parts

    check_options(start=start, end=end, steps=steps, rule=rule)
    train_idx, _ = split_indices(fold_of, fold)
    seed = cfg.train.seed + fold
    run_cfg = with_lr(cfg, start)
    y = tables.train["y"].to_numpy()
    lrs, losses = [], []
    stopped = "steps"
    beta = ema_beta(steps)
    with seeded_rng(seed):
        store = prepare_images(tables.train, run_cfg.image, run_cfg.augment, ws, progress=progress)
        loader = train_loader(run_cfg, store, train_idx, y[train_idx], seed=seed)
        counts = np.bincount(y[train_idx], minlength=tables.n_classes)
        parts = build_parts(run_cfg.model, run_cfg.train, run_cfg.augment, counts, len(loader), seed=seed)
        parts.model.train()
        net = parts.forward_model if parts.eval_model is None else parts.eval_model  # never DDP: rank 0 runs alone
        factor = (end / start) ** (1 / (steps - 1))
        batches, epoch, best, avg = iter(()), 0, math.inf, 0.0
        for i in progress.track(range(steps), total=steps, description=f"lr-find fold {fold}"):
            try:
                images, target = next(batches)
            except StopIteration:  # cycle the loader: a new epoch's shuffle and augmentation
                set_epoch(loader, epoch)
                if parts.mixup is not None:
                    from comp.train.parts import epoch_seed

                    parts.mixup.reseed(epoch_seed(seed, epoch))
                epoch += 1
                batches = iter(loader)
                images, target = next(batches)
            lr = start * factor ** i
            for group in parts.optimizer.param_groups:
                group["lr"] = lr
            images, target = to_device(images, parts), target.to(parts.device)
            if parts.mixup is not None:
                images, target = parts.mixup(images, target)
            with autocast(parts.device, parts.amp_dtype):
                logits = net(images)
            loss = parts.loss(logits.float(), target)
            value = float(loss.detach())
            if not math.isfinite(value):
                stopped = "non-finite"
                break
            parts.optimizer.zero_grad(set_to_none=True)
            parts.scaler.scale(loss).backward()
            if cfg.train.clip_grad is not None:
                parts.scaler.unscale_(parts.optimizer)
                nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.train.clip_grad)
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            progress.note(lr=lr, loss=smoothed)
            best = min(best, smoothed)
            if smoothed > DIVERGE * best:
                stopped = "diverged"
                break
        del parts
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    smoothed_all = smooth(np.asarray(losses), beta)
    suggestions = suggest(np.asarray(lrs), centred(np.asarray(losses), beta))
    return LRFindResult(lrs=lrs, losses=losses, smoothed=smoothed_all.tolist(), suggestion=suggestions[rule], rule=rule,
                        suggestions=suggestions, fold=fold, stopped=stopped, auto_hash=auto_hash(cfg))


# ---------------------------------------------------------------- artifacts


def write_result(ws: Layout, exp: str, result: LRFindResult) -> None:
    """lr_find.csv (lr, loss, smoothed), the report's section (plot), then lr_find.json (the record, last)."""
    import pandas as pd

    write_csv(ws.lr_find_csv(exp), pd.DataFrame({"lr": result.lrs, "loss": result.losses, "smoothed": result.smoothed}),
              float_format="%.8g")
    lr_find_section(ws, exp, result)
    write_json(ws.lr_find_json(exp), result.record())


def lr_find_section(ws: Layout, exp: str, result: LRFindResult) -> None:
    """Loss vs lr (log x), every rule's suggestion marked, the chosen one solid."""
    import html

    from comp.report.page import add_section, img_html, plt, report_image, save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.lrs, result.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed loss")
    for name, lr in result.suggestions.items():
        chosen = name == result.rule
        ax.axvline(lr, color="C3" if chosen else "C2", ls="-" if chosen else "--", lw=1.2 if chosen else 0.8,
                   label=f"{name}: {lr:.2e}{' (suggested)' if chosen else ''}")
    ax.set_xscale("log")
    top = np.nanpercentile(result.smoothed, 95) if result.smoothed else 1.0
    ax.set_ylim(min(result.smoothed or [0.0]) * 0.9, max(top, min(result.smoothed or [1.0]) * 1.5))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test, fold {result.fold}")
    ax.legend(fontsize=8)
    path, src = report_image(ws, exp, "lr-find.png")
    save_figure(fig, path)
    body = (f"<p>suggested lr {result.suggestion:.2e} (rule {html.escape(result.rule)}); {result.steps} steps from "
            f"{result.lrs[0]:.1e} to {result.lrs[-1]:.1e} on fold {result.fold}'s training rows; stopped: "
            f"{html.escape(result.stopped)}</p>" + img_html(src, "loss vs learning rate"))
    add_section(ws, exp, "lr-find", "Learning-rate finder", body, order=15)


def read_record(ws: Layout, exp: str) -> dict | None:
    record = read_json_record(ws.lr_find_json(exp))
    return record if record is not None and isinstance(record.get("suggestion"), (int, float)) else None


def apply_lr(ws: Layout, exp: str, lr: float) -> None:
    """Write train.lr into experiments/<exp>.yaml (every other key kept; the file is created when missing).

    The file's text is edited in place when that provably changes only train.lr (comments and layout
    kept); otherwise it is rewritten from its parsed keys.
    """
    from comp.core.config import read_yaml
    from comp.core.layout import write_text, write_yaml

    path = ws.experiment_yaml(exp)
    doc = read_yaml(path) if path.is_file() else {}
    train = doc.get("train")
    if train is not None and not isinstance(train, dict):
        raise CompError(f"{path}: train must be a mapping of keys, got {train!r}; fix the file and rerun")
    value = float(f"{lr:.3g}")
    want = {**doc, "train": {**(train or {}), "lr": value}}
    edited = _edit_lr_text(path.read_text(), f"{value:.3g}", want) if path.is_file() else None
    if edited is not None:
        write_text(path, edited)
    else:
        write_yaml(path, want)


def _edit_lr_text(text: str, value: str, want: dict) -> str | None:
    """`text` with train.lr set to `value` by a textual edit, if the edit parses to exactly `want`; else None."""
    import re

    from comp.core.config import _float_fix, load_yaml

    def ok(candidate: str) -> bool:
        try:
            return _float_fix(load_yaml(candidate)) == want
        except Exception:  # a candidate edit that breaks the YAML is simply not used
            return False

    for match in re.finditer(r"(\blr:[ \t]*)([^,}\n#]*[^,}\n# \t])", text):  # an existing lr value
        candidate = text[: match.start(2)] + value + text[match.end(2):]
        if ok(candidate):
            return candidate
    flow = re.search(r"^train:[ \t]*\{", text, flags=re.M)
    if flow:
        candidate = text[: flow.end()] + f"lr: {value}, " + text[flow.end():]
        if ok(candidate):
            return candidate
    block = re.search(r"^train:[ \t]*(#.*)?\n([ \t]+)", text, flags=re.M)
    if block:
        candidate = text[: block.start(2)] + f"{block.group(2)}lr: {value}\n" + text[block.start(2):]
        if ok(candidate):
            return candidate
    candidate = text + ("" if text.endswith("\n") or not text else "\n") + f"train:\n  lr: {value}\n"  # no train yet
    return candidate if ok(candidate) else None


# ---------------------------------------------------------------- train.lr: auto


def find_lr(cfg: Config, ws: Layout, exp: str, *, fold: int = 0, progress: Progress = SILENT,
            data: tuple[Any, np.ndarray] | None = None, **options: Any) -> LRFindResult:
    """Run the range test on `fold` of `data` (tables, fold_of; the checked tables and folds are loaded when not
    given), write its artifacts."""
    check_options(**options)
    if data is None:
        from comp.data.checked import load_checked_tables
        from comp.data.folds import ensure_folds

        tables = load_checked_tables(cfg, ws, progress=progress)
        data = tables, ensure_folds(ws, tables, cfg).fold_of(tables.train)
    tables, fold_of = data
    result = lr_range_test(cfg, tables, fold_of, fold, ws=ws, progress=progress, **options)
    write_result(ws, exp, result)
    return result


def resolve_auto_lr(cfg: Config, ws: Layout, exp: str, *, trained: bool = True, progress: Progress = SILENT,
                    data: tuple[Any, np.ndarray] | None = None) -> Config:
    """cfg with `train.lr: auto` replaced by the chosen number (cfg itself when lr is a number).

    trained: the experiment's config.yaml (what its folds were trained with) is the first source, and a
    config.yaml of another config is refused before the finder runs; tune passes False. data: (tables, fold_of)
    already prepared by the caller (fold-train), else find_lr loads them.
    """
    if cfg.train.lr != "auto":
        return cfg
    from comp.run import distributed
    from comp.core.config import read_yaml
    from comp.core.replace import trained_any

    with distributed.main_first():  # under torchrun rank 0 runs the finder; the others read its record
        path = ws.config_yaml(exp)
        if trained and path.is_file() and trained_any(ws.exp_dir(exp)):  # a record no epoch trained under: none
            doc = read_yaml(path)
            chosen = doc.get("lr_chosen")
            if isinstance(chosen, (int, float)) and with_lr(cfg, float(chosen)).train_hash() == doc.get("train_hash"):
                log.info("train.lr auto: %.3g, chosen when %s was first trained (%s)", chosen, exp, path.name)
                return with_lr(cfg, float(chosen))
            was = (doc.get("train") or {}).get("lr")
            what = f"train.lr {was}" if chosen is None else "another config"
            raise CompError(f"experiment {exp!r} was trained with {what} (train_hash {doc.get('train_hash')}); "
                            f"train.lr auto would change it: use a new experiment name, or --force to start {exp!r} over")
        record = read_record(ws, exp)
        if record is not None and record.get("auto_hash") == cfg.train_hash():
            lr = float(record["suggestion"])
            log.info("train.lr auto: %.3g from %s (rule %s)", lr, ws.lr_find_json(exp), record.get("rule"))
            return with_lr(cfg, lr)
        if not distributed.is_main():
            raise CompError(f"rank {distributed.rank()}: {ws.lr_find_json(exp)} was not written by rank 0")
        progress.log(f"train.lr auto: running the learning-rate range test on fold 0 of {exp}")
        result = find_lr(cfg, ws, exp, fold=0, progress=progress, data=data)
        progress.log(f"train.lr auto: suggested lr {result.suggestion:.2e} (rule {result.rule}); "
                     f"every fold trains with it")
        return with_lr(cfg, result.suggestion)


def lr_chosen(ws: Layout, exp: str, cfg: Config) -> dict[str, float]:
    """{"lr_chosen": lr} when cfg's lr is the one lr_find.json chose for this config (config.yaml, scores.json)."""
    from comp.core.config import read_yaml

    lr = cfg.train.lr
    if lr == "auto":
        return {}
    path = ws.config_yaml(exp)
    doc = read_yaml(path) if path.is_file() else {}
    if doc.get("lr_chosen") == lr and doc.get("train_hash") == cfg.train_hash():
        return {"lr_chosen": float(lr)}  # chosen when the experiment was first trained
    record = read_record(ws, exp)
    if record is None or record.get("auto_hash") != auto_hash(cfg):
        return {}
    return {"lr_chosen": float(lr)} if float(record["suggestion"]) == float(lr) else {}


WHY = {"steepest": "the default: on the demo it landed within 3x of the best lr of a small grid, where min10 was "
                   "2.5-4x too low (benchmarks/bench_lr_find.py); --rule min10 for a more cautious lr",
       "min10": "asked for with --rule min10: the cautious one, a tenth of the lr at the loss's minimum"}


def rules_note(suggestions: dict[str, float], rule: str) -> str:
    """Which rule's lr `--apply` (and train.lr: auto) takes and why; how far apart the rules are when they disagree."""
    values = [v for v in suggestions.values() if v > 0]
    spread = max(values) / min(values) if values else 1.0
    gap = f"the rules disagree {spread:.0f}x; " if spread >= 3 else ""
    return f"{gap}--apply writes the {rule} lr ({WHY.get(rule, 'the rule asked for')})"
