"""Fit one fold: epochs, AMP, EMA, early stopping on the competition metric, checkpoints that resume.

fit_fold reads the training images (through the decoded-image cache) and writes
out_dir/{best.pt, last.pt, history.csv}. It holds no global state: every random draw comes
from seed = train.seed + fold, and the caller's RNG state is restored afterwards. Under torchrun
(comp.run.distributed) every rank runs the same loop on its shard of the draws and of the validation
rows; validation logits are gathered, and rank 0 alone writes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from comp.run import distributed
from comp.model.checkpoint import CheckpointWriter, seeded_rng
from comp.core.config import Config
from comp.data.cache import prepare_images
from comp.data.batch_augment import RawImages
from comp.data.dataset import set_epoch
from comp.data.tables import Tables
from comp.core.errors import CompError
from comp.model.losses import validation_loss
from comp.core.metrics import Metric, get_metric
from comp.core.tasks import Task
from comp.core.progress import SILENT, Progress
from comp.run.device import autocast
from comp.train.loaders import eval_loader, train_loader
from comp.train.parts import Parts, build_parts, epoch_seed
from comp.train.targets import RowTargets
from comp.core.layout import FoldFiles, Layout, write_csv

from comp.train.fold_state import (  # noqa: F401 - finished_result, FoldResult: the engine's results, re-exported
    Candidate, FitState, FoldCheckpoints, FoldResult, checkpoint_base, finished_result, history_frame, matching_last, resume,
    save_best, save_epoch_weights, save_last, start_swa_lr)

from comp.train.job import FoldJob  # noqa: F401 - fit_fold's argument, re-exported

log = logging.getLogger("comp.train.engine")

UNUSED = -2  # fold_of of a row no fold trains or validates on (a pseudo row another fold keeps)
TRAIN_ONLY = -1  # fold_of of a row every fold trains on and none validates on (a pseudo-labelled test row)

class NonFiniteLoss(CompError):
    """The training loss became NaN or infinite; the last finished epoch's last.pt is kept."""


# ---------------------------------------------------------------- data


def split_indices(fold_of: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of one fold, checked non-empty."""
    fold_of = np.asarray(fold_of)
    folds = sorted(np.unique(fold_of).tolist())
    if fold not in folds:
        raise CompError(f"fold {fold} does not exist; the folds are {folds}")
    if fold < 0:
        raise CompError(f"fold {fold} does not exist; the folds are {[f for f in folds if f >= 0]}")
    val_idx = np.flatnonzero(fold_of == fold)
    train_idx = np.flatnonzero((fold_of != fold) & (fold_of != UNUSED))  # TRAIN_ONLY rows train, never validate
    if len(train_idx) == 0:
        raise CompError(f"fold {fold} leaves no training rows; use 2 or more folds")
    return train_idx, val_idx


def build_loaders(cfg: Config, tables: Tables, train_idx: np.ndarray, val_idx: np.ndarray, *,
                  ws: Layout, seed: int, progress: Progress,
                  targets: RowTargets | None = None) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled or sampled, drop_last) and validation loader (in val_idx order).

    Under DDP each rank gets its share of every epoch's draws and validates rows val_idx[rank::world].
    """
    store = prepare_images(tables.train, cfg.image, cfg.augment, ws, progress=progress)
    y = np.asarray(tables.targets)
    options = {}
    if targets is not None:  # the loader yields row numbers; RowTargets.loss looks their targets up
        from comp.data.dataset import class_weights

        y = np.arange(len(tables.train))
        if cfg.train.sampler is not None:
            options["sampler_weights"] = class_weights(targets.y[train_idx], cfg.train.sampler)
    if cfg.train.sampler is not None and tables.task.kind != "multiclass":
        options["sampler_weights"] = task_sampler_weights(cfg, tables, train_idx)
    train = train_loader(cfg, store, train_idx, y[train_idx], seed=seed, rank=distributed.rank(),
                         world_size=distributed.world_size(), **options)
    return train, eval_loader(cfg, store, distributed.shard(val_idx))


def task_sampler_weights(cfg: Config, tables: Tables, train_idx: np.ndarray) -> np.ndarray:
    """train.sampler for binary, regression (target bins) and multitask (combined label): weights per training row."""
    from comp.data.dataset import class_weights

    if tables.task.kind == "multilabel":
        raise CompError(f"train.sampler={cfg.train.sampler!r} balances classes, and task multilabel has none per image; "
                        "unset train.sampler (use train.pos_weight: auto or train.loss: asl for rare tags)")
    return class_weights(tables.train["y"].to_numpy()[train_idx], cfg.train.sampler)


# ---------------------------------------------------------------- one epoch


def to_device(images: torch.Tensor | RawImages, parts: Parts) -> torch.Tensor:
    """A batch on the training device (RawImages: the uint8 images travel and are augmented there)."""
    if isinstance(images, RawImages):
        images = images.render(parts.device)
    else:
        images = images.to(parts.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if parts.channels_last else images


def optimizer_step(parts: Parts, state: FitState, clip: float | None) -> None:
    """Unscale, clip, step, schedule, update EMA."""
    if clip is not None:
        parts.scaler.unscale_(parts.optimizer)
        nn.utils.clip_grad_norm_(parts.model.parameters(), clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    (parts.swa_scheduler or parts.scheduler).step()  # SWA with its own lr replaces the schedule from its start
    state.step += 1
    if parts.ema is not None:
        parts.ema.update(parts.model, step=state.step)


def check_finite(total: torch.Tensor, count: int, *, epoch: int, step: int, lr: float) -> float:
    """Mean loss so far; NonFiniteLoss when it is NaN/inf."""
    value = total.item() / max(count, 1)
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"training loss became {value} in epoch {epoch + 1} by batch {step + 1} (lr {lr:.3g}); "
            "last.pt keeps the last finished epoch. Lower train.lr, set train.clip_grad (e.g. 1.0) "
            "or use train.amp=bf16/off, then rerun under a new experiment name or with --force"
        )
    return value


def train_one_epoch(parts: Parts, loader: DataLoader, state: FitState, *, grad_accum: int, clip_grad: float | None,
                    epoch: int, progress: Progress, label: str, size: tuple[int, int] | None = None,
                    targets: RowTargets | None = None) -> float:
    """One pass over the training loader, stepping every `grad_accum` batches; returns the mean training loss.

    size: train at this (h, w) (image.schedule), each batch resized from the pipeline's image.size.
    targets: the loader yields row numbers, and the loss is RowTargets.loss (soft pseudo labels, distillation).
    """
    model, accum, n = parts.forward_model, grad_accum, len(loader)
    sync_every = 1 if parts.device.type == "cpu" else 25  # .item() stalls a GPU pipeline: check now and then
    total, count = torch.zeros((), device=parts.device), 0
    parts.model.train()
    parts.optimizer.zero_grad(set_to_none=True)
    for i, (images, target) in enumerate(progress.track(loader, total=n, description=label)):
        lr = parts.optimizer.param_groups[0]["lr"]  # the lr this batch trains with
        images, target = to_device(images, parts), target.to(parts.device, non_blocking=True)
        if size is not None and tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        if parts.mixup is not None:
            images, target = parts.mixup(images, target)
        with autocast(parts.device, parts.amp_dtype):
            logits = model(images)
        loss = parts.loss(logits.float(), target) if targets is None else targets.loss(parts.loss, logits.float(), target)
        parts.scaler.scale(loss / accum).backward()
        total += loss.detach()
        count += 1
        if (i + 1) % accum == 0 or i + 1 == n:
            optimizer_step(parts, state, clip_grad)
        if (i + 1) % sync_every == 0 or i + 1 == n:
            # under DDP every rank checks the mean over ranks, so all stop at the same batch (none waits forever)
            progress.note(loss=check_finite(distributed.mean_tensor(total), count, epoch=epoch, step=i, lr=lr), lr=lr)
    return distributed.mean_tensor(total).item() / max(count, 1)


# ---------------------------------------------------------------- validation


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, parts: Parts) -> torch.Tensor:
    """(N, C) float32 CPU logits over the loader, in its order (the one place that gathers predictions)."""
    model.eval()
    out = []
    for images, _ in loader:
        with autocast(parts.device, parts.amp_dtype):
            logits = model(to_device(images, parts))
        out.append(logits.float().cpu())
    return torch.cat(out)


def validate(parts: Parts, loader: DataLoader, y_val: np.ndarray, metric: Metric, *, epoch: int,
             task: Task | None = None) -> list[Candidate]:
    """Validate the raw weights, and their EMA when enabled, each as a candidate for best.pt.

    Under DDP the loader holds this rank's rows; the logits of all ranks are gathered back by position.
    """
    raw_forward = parts.forward_model if parts.eval_model is None else parts.eval_model
    modules = [("raw", parts.model, raw_forward)]
    if parts.ema is not None:
        modules.append(("ema", parts.ema.module, parts.ema.module))
    if parts.swa is not None and epoch >= parts.swa_start:
        modules.append(("swa", parts.swa.module, parts.swa.module))
    task = task or Task("multiclass", ())
    target = torch.as_tensor(np.asarray(y_val))
    candidates = []
    for name, module, forward in modules:
        distributed.broadcast_buffers(module)
        logits = distributed.gather_rows(predict_logits(forward, loader, parts), len(y_val))
        if not torch.isfinite(logits).all():
            raise NonFiniteLoss(
                f"the {name} model predicts NaN/inf after epoch {epoch + 1}; lower train.lr or set "
                "train.clip_grad, then rerun with --force (last.pt keeps the last good epoch)"
            )
        probs = task.activate(logits).numpy().astype(np.float32)
        val_loss = validation_loss(task, logits, target)
        candidates.append(Candidate(name, module, probs, val_loss, metric(y_val, probs)))
    return candidates


def is_better(score: float, val_loss: float, state: FitState, metric: Metric) -> bool:
    """Better than the best validation score so far (or the same with a lower validation loss)."""
    if math.isnan(state.top_score):
        return True
    return metric.better(score, state.top_score) or (score == state.top_score and val_loss < state.top_val_loss)


def kept_candidate(candidates: list[Candidate], metric: Metric, mode: str) -> Candidate:
    """The weights an epoch offers as the fold's checkpoint: mode best picks raw/EMA/SWA by their score on the fold;
    modes last and nested pick without looking at the fold (the average when there is one: SWA, else EMA, else the
    raw weights)."""
    return pick(candidates, metric) if mode == "best" else candidates[-1]


def pick(candidates: list[Candidate], metric: Metric) -> Candidate:
    """The best candidate of an epoch (metric, then val loss)."""
    best = candidates[0]
    for c in candidates[1:]:
        if metric.better(c.score, best.score) or (c.score == best.score and c.val_loss < best.val_loss):
            best = c
    return best


# ---------------------------------------------------------------- the fit


def fit_fold(job: FoldJob, *, progress: Progress = SILENT, on_epoch: Callable[[int, dict], None] | None = None,
             make_loaders: Callable[..., tuple[DataLoader, DataLoader]] | None = None) -> FoldResult:
    """Train job.fold's training rows, validate on its own; write out_dir/{best.pt,last.pt,history.csv}.

    Resumes from last.pt when it matches cfg.train_hash(); returns at once when the fold finished.

    Args:
        job: the fold (FoldJob).
        on_epoch: on_epoch(epoch, {"score", "val_loss", "improved", and the history row: epoch from 1,
            train_loss, lr, ...}) after each epoch's checkpoints are snapshotted (see FoldCheckpoints: they are on
            disk before fit_fold returns or raises); what it raises (e.g. optuna.TrialPruned) propagates.
        make_loaders: builds the (train, validation) loaders with build_loaders' arguments (default build_loaders);
            tuning passes one that reuses a previous trial's loaders when their data settings are the same.

    Examples:
        >>> result = fit_fold(FoldJob(cfg, tables, fold_of, 0, ws.fold_dir("baseline", 0), ws))
        >>> result.score, result.best_epoch
    """
    cfg, tables, fold_of, fold, ws, targets = job.cfg, job.tables, job.fold_of, job.fold, job.ws, job.targets
    resumable, checkpoints = job.resumable, job.checkpoints
    out_dir = Path(job.out_dir)
    done = finished_result(out_dir, cfg, fold)
    if done is not None:
        log.info("fold %d already finished (best epoch %d, score %.4f); skipping", fold, done.best_epoch + 1, done.score)
        return done
    train_idx, val_idx = split_indices(fold_of, fold)
    seed = cfg.train.seed + fold
    with seeded_rng(seed):
        if targets is not None and parts_mix(cfg):
            raise CompError("augment.mixup_alpha/cutmix_alpha cannot be combined with soft pseudo labels or "
                            "train.distill (each row's own target is looked up); set them to 0")
        loaders = (make_loaders or build_loaders)(cfg, tables, train_idx, val_idx, ws=ws, seed=seed, progress=progress,
                                                  targets=targets)
        task = tables.task.for_config(cfg)
        if task.kind == "multiclass":
            counts = np.bincount(np.asarray(tables.targets)[train_idx], minlength=tables.n_classes)
            parts = build_parts(cfg.model, cfg.train, cfg.augment, counts, len(loaders[0]), seed=seed)
        else:
            parts = build_parts(cfg.model, cfg.train, cfg.augment, np.ones(task.n_outputs), len(loaders[0]), seed=seed,
                                task=task, targets=np.asarray(tables.targets)[train_idx])
        state = FitState()
        ckpt = matching_last(out_dir, cfg, fold)
        if ckpt is not None and ckpt["finished"]:  # finished, but best.pt is missing or unreadable
            log.warning("fold %d: %s is missing or unreadable; training the fold again", fold, FoldFiles(out_dir).best)
        elif ckpt is not None:
            resume(parts, state, ckpt)
            log.info("fold %d: resuming from epoch %d", fold, state.epoch + 1)
        writer = CheckpointWriter() if checkpoints else None  # writes while the next epoch trains
        sink = FoldCheckpoints(writer, cfg.train.checkpoint_seconds if resumable else math.inf) if writer else None
        try:
            run_epochs(cfg, tables, fold, out_dir, parts, state, loaders, val_idx,
                       progress=progress, on_epoch=on_epoch, resumable=resumable, targets=targets, sink=sink,
                       checkpoints=checkpoints)
        except BaseException:
            stop_writing(sink, writer)  # a stopped fold still leaves its last finished epoch on disk
            raise
        close_writer(writer)  # the fold's checkpoints are on disk before its result is returned
    distributed.barrier()  # rank 0 has written best.pt and last.pt
    result = memory_result(tables, fold, state, val_idx)
    if result is None:  # read back from the files
        result = finished_result(out_dir, cfg, fold)
    if result is None:
        raise CompError(f"fold {fold} finished but {FoldFiles(out_dir).best} cannot be read back; check the disk and rerun")
    return result


def stop_writing(sink: FoldCheckpoints | None, writer: CheckpointWriter | None) -> None:
    """A fold stopped by an exception: write the held checkpoints of its last finished epoch, then wait."""
    try:
        if sink is not None:
            sink.flush()
    except Exception as exc:  # noqa: BLE001 - the error that stopped the fold is the one to report
        log.warning("could not write the last checkpoints while the fold was stopping: %s", exc)
    close_writer(writer, failing=True)


def close_writer(writer: CheckpointWriter | None, *, failing: bool = False) -> None:
    """Wait for the fold's checkpoint writes; when the fold is `failing` already, a write error is logged, not raised."""
    if writer is None:
        return
    if not failing:
        writer.close()
        return
    try:
        writer.close()
    except Exception as exc:  # noqa: BLE001 - the error that stopped the fold is the one to report
        log.warning("a checkpoint write failed while the fold was stopping: %s", exc)


def memory_result(tables: Tables, fold: int, state: FitState, val_idx: np.ndarray) -> FoldResult | None:
    """A finished fold's result from memory (what finished_result reads back from best.pt and last.pt), or None when
    the best epoch was trained before a resume (its probabilities are then only in best.pt)."""
    if not state.finished or state.best_probs is None:
        return None
    history = history_frame(state.history)
    return FoldResult(fold=fold, best_epoch=int(state.best_epoch), score=float(state.best_score),
                      val_loss=float(state.best_val_loss), minutes=float(history["seconds"].sum()) / 60,
                      val_ids=tables.train["id"].astype(str).to_numpy()[val_idx].tolist(),
                      val_probs=state.best_probs, history=history,
                      epoch_probs=np.stack(state.epoch_probs) if len(state.epoch_probs) == len(history) else None)


def run_epochs(cfg: Config, tables: Tables, fold: int, out_dir: Path, parts: Parts, state: FitState,
               loaders: tuple[DataLoader, DataLoader], val_idx: np.ndarray, *, progress: Progress,
               on_epoch: Callable[[int, dict], None] | None, resumable: bool = True,
               targets: RowTargets | None = None, sink: FoldCheckpoints | None = None,
               checkpoints: bool = True) -> None:
    """The epoch loop: train, validate, keep the best, write history and last.pt, stop early.

    sink: holds each epoch's best.pt and last.pt and writes them in the background (FoldCheckpoints); None writes
    them here. checkpoints: False writes neither (see fit_fold).
    """
    task = tables.task.for_config(cfg)
    metric, epochs = get_metric(cfg.metric, task), cfg.train.epochs
    train_loader, val_loader = loaders
    y_val = np.asarray(tables.targets)[val_idx]
    val_ids = tables.train["id"].astype(str).to_numpy()[val_idx].tolist()
    patience = cfg.train.early_stopping
    for epoch in progress.track(range(state.epoch, epochs), total=epochs - state.epoch, description=f"fold {fold}"):
        start = time.perf_counter()
        set_epoch(train_loader, epoch)
        if parts.mixup is not None:  # per-epoch seed: a resumed fit draws what an uninterrupted one would
            parts.mixup.reseed(epoch_seed(cfg.train.seed + fold, epoch))
        if parts.swa is not None and epoch >= parts.swa_start and cfg.train.swa.lr is not None \
                and parts.swa_scheduler is None:
            start_swa_lr(parts)
        lr, stepped = parts.optimizer.param_groups[0]["lr"], step_lr(parts.optimizer)  # at the start; the last step's
        label = f"fold {fold} epoch {epoch + 1}/{epochs}"
        size = cfg.image.size_at(epoch) if cfg.image.schedule else None
        train_loss = train_one_epoch(parts, train_loader, state, grad_accum=cfg.train.grad_accum,
                                     clip_grad=cfg.train.clip_grad, epoch=epoch, progress=progress, label=label,
                                     size=size, targets=targets)
        if parts.swa is not None and epoch >= parts.swa_start:
            update_swa(parts, train_loader, epoch)
        candidates = validate(parts, val_loader, y_val, metric, epoch=epoch, task=task)
        best = kept_candidate(candidates, metric, cfg.train.checkpoint)
        base = checkpoint_base(cfg, tables, fold, epoch)
        improved = is_better(best.score, best.val_loss, state, metric)
        keep = improved or cfg.train.checkpoint != "best"  # last, nested: every epoch replaces best.pt, the final stays
        if keep and distributed.is_main() and checkpoints:
            save_best(out_dir, base, best, val_ids, sink=sink)
        if keep:
            state.best_score, state.best_val_loss, state.best_epoch = best.score, best.val_loss, epoch
            state.best_probs = best.probs
        if improved:
            state.top_score, state.top_val_loss, state.top_epoch, state.bad_epochs = best.score, best.val_loss, epoch, 0
        else:
            state.bad_epochs += 1
        state.epoch_probs.append(best.probs)
        if cfg.train.checkpoint == "nested" and checkpoints and distributed.is_main():
            save_epoch_weights(out_dir, epoch, best)
        state.history.append(history_row(epoch, train_loss, candidates, lr, time.perf_counter() - start))
        state.epoch = epoch + 1
        state.finished = state.epoch >= epochs or (patience is not None and state.bad_epochs >= patience)
        if distributed.is_main():  # under DDP the other ranks hold the same state and write nothing
            write_csv(FoldFiles(out_dir).history, history_frame(state.history))
            if checkpoints and (resumable or state.finished):
                save_last(out_dir, base, parts, state, sink=sink)
            if sink is not None:
                sink.epoch_end(state.finished)
        progress.note(**{"val_loss": best.val_loss, metric.name: best.score})
        progress.log(epoch_line(fold, epoch, epochs, state.history[-1], metric.name, improved,
                                lr=stepped.value, best=(state.top_score, state.top_epoch),
                                images=len(train_loader) * (train_loader.batch_size or 1) * distributed.world_size()))
        if on_epoch is not None:
            on_epoch(epoch, {**state.history[-1], "score": best.score, "val_loss": best.val_loss, "improved": improved})
        if state.finished:
            break


def parts_mix(cfg: Config) -> bool:
    return cfg.augment.mixup_alpha > 0 or cfg.augment.cutmix_alpha > 0


@torch.no_grad()
def update_swa(parts: Parts, train_loader: DataLoader, epoch: int) -> None:
    """Average this epoch's weights into the SWA model, then recompute its BatchNorm statistics over the training
    loader (averaged weights need their own; torch's update_bn), so the SWA candidate validates as it would predict."""
    from torch.optim.swa_utils import update_bn

    parts.swa.update_parameters(parts.model)
    set_epoch(train_loader, epoch)  # the epoch's own draws again: nothing else's RNG is advanced
    update_bn(((to_device(images, parts), None) for images, _ in train_loader), parts.swa, device=parts.device)


def history_row(epoch: int, train_loss: float, candidates: list[Candidate], lr: float, seconds: float) -> dict[str, float]:
    raw = candidates[0]
    row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": raw.val_loss, "metric": raw.score,
           "lr": lr, "seconds": seconds}
    for c in candidates[1:]:
        row[f"{c.weights}_val_loss"], row[f"{c.weights}_metric"] = c.val_loss, c.score
    return row


def epoch_line(fold: int, epoch: int, epochs: int, row: dict[str, float], metric: str, improved: bool, *,
               lr: float | None = None, best: tuple[float, int] | None = None, images: int | None = None) -> str:
    """The console's line for a finished epoch.

    lr: the lr the epoch's last optimizer step used (what the bar showed last), default the row's (the epoch's first).
    best: (score, epoch counted from 0) of the fold's best so far. images: the images trained on (for img/s).
    """
    from comp.core.output import clock  # comp's one time format (4.2s, 58s, 1m02s)

    ema = f"  ema {metric} {row['ema_metric']:.4f}" if "ema_metric" in row else ""
    ema += f"  swa {metric} {row['swa_metric']:.4f}" if "swa_metric" in row else ""
    best_text = f"  best {best[0]:.4f} @ epoch {best[1] + 1}" if best is not None and best[1] >= 0 else ""
    speed = f"  {images / row['seconds']:.0f} img/s" if images and row["seconds"] > 0 else ""
    return (f"fold {fold} epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}  {metric} {row['metric']:.4f}{ema}{best_text}  "
            f"lr {row['lr'] if lr is None else lr:.3g}{speed}  {clock(row['seconds'])}{'  (new best)' if improved else ''}")


class StepLr:
    """The lr the optimizer's latest step used (a step pre-hook): what an epoch's last batch trained with."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.value = optimizer.param_groups[0]["lr"]
        optimizer.register_step_pre_hook(self._seen)

    def _seen(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.value = optimizer.param_groups[0]["lr"]


def step_lr(optimizer: torch.optim.Optimizer) -> StepLr:
    """The optimizer's StepLr, hooked on first use (once per optimizer, however many epochs ask)."""
    watch = getattr(optimizer, "_comp_step_lr", None)
    if watch is None:
        watch = StepLr(optimizer)
        optimizer._comp_step_lr = watch  # type: ignore[attr-defined]
    return watch