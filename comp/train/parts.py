"""What one fit trains with: model, loss, optimizer, per-step schedule, scaler, EMA and MixUp (`Parts`).

The engine (comp/train/engine.py) runs the epochs; this module only builds the objects it runs with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from comp.run import distributed
from comp.core.config import AugmentConfig, ModelConfig, TrainConfig
from comp.data.augment import SeededMixup, build_mixup
from comp.run.device import resolve_amp, resolve_device
from comp.core.errors import CompError
from comp.model.losses import build_loss, build_task_loss
from comp.model.factory import build_model

ONECYCLE_START = 1 / 25  # one-cycle starts at lr/25 (as torch's OneCycleLR) ...
ONECYCLE_END = 1 / 25e4  # ... and ends at lr/(25 * 1e4)
ONECYCLE_WARMUP = 0.3  # fraction of steps warming up when train.warmup_epochs is 0


def lr_scales(model: nn.Module, cfg: TrainConfig) -> dict[str, float]:
    """{parameter name: its multiple of train.lr}: 1 for the classifier head; train.backbone_lr_scale for the rest,
    times timm's layer-wise decay (train.layer_decay ** depth below the head) when set."""
    from comp.model.factory import classifier_prefixes

    head = classifier_prefixes(model)
    depth: dict[str, float] = {}
    if cfg.layer_decay is not None:
        from timm.optim import param_groups_layer_decay

        for group in param_groups_layer_decay(model, weight_decay=0.0, layer_decay=cfg.layer_decay):
            ids = {id(p) for p in group["params"]}
            depth.update({n: group["lr_scale"] for n, p in model.named_parameters() if id(p) in ids})
    return {name: 1.0 if head and name.startswith(head) else cfg.backbone_lr_scale * depth.get(name, 1.0)
            for name, _ in model.named_parameters()}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; biases and norm weights (1-d parameters) get no weight decay. Parameters are grouped by
    (head or backbone, decay, lr scale); each group's lr is train.lr x its scale (lr_scales), and "backbone" marks the
    groups train.freeze_epochs holds still."""
    from comp.model.factory import classifier_prefixes

    scales, head = lr_scales(model, cfg), classifier_prefixes(model)
    grouped: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}  # (backbone, no decay, scale) -> parameters
    for name, p in model.named_parameters():
        if p.requires_grad:
            grouped.setdefault((not (head and name.startswith(head)), p.ndim <= 1, scales[name]), []).append(p)
    # the head's decayed weights first: param_groups[0]["lr"] is the lr that logs and history.csv show
    groups = [{"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay, "lr": cfg.lr * scale,
               "backbone": backbone} for (backbone, no_decay, scale), params in sorted(grouped.items())]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int, start: int = 0) -> Callable[[int], float]:
    """step -> multiplier of the base lr for cfg.scheduler, with a linear warmup of cfg.warmup_epochs.

    start: the schedule begins at this step (0 before it): a frozen backbone's groups warm up when they thaw.
    """
    total = max(1, steps_per_epoch * cfg.epochs - start)
    warm = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.scheduler == "onecycle" and warm <= 0:
        warm = max(1, round(ONECYCLE_WARMUP * total))

    def cosine(t: float, start: float, end: float) -> float:
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))

    def factor(step: int) -> float:
        if step < start:
            return 0.0
        step -= start
        if cfg.scheduler == "onecycle":
            if step < warm:
                return cosine(step / warm, ONECYCLE_START, 1.0)
            return cosine((step - warm) / max(1, total - warm), 1.0, ONECYCLE_END)
        if step < warm:
            return (step + 1) / (warm + 1)
        if cfg.scheduler == "cosine":
            return cosine((step - warm) / max(1, total - warm), 1.0, 0.0)
        if cfg.scheduler == "step":
            return cfg.step_gamma ** ((step // steps_per_epoch) // max(1, cfg.step_size))
        return 1.0

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step schedule (its state_dict holds only numbers, so it loads with weights_only)."""
    frozen = min(round(cfg.freeze_epochs * steps_per_epoch), max(0, steps_per_epoch * cfg.epochs - 1))
    head, backbone = lr_factor(cfg, steps_per_epoch), lr_factor(cfg, steps_per_epoch, start=frozen)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [backbone if g.get("backbone") else head for g in optimizer.param_groups])


# ---------------------------------------------------------------- everything a fit trains with


@dataclass
class Parts:
    """The objects one fit trains with; `model` is the uncompiled module whose state dict is saved."""

    model: nn.Module
    forward_model: nn.Module  # torch.compile(model) when train.compile, else model
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    mixup: SeededMixup | None  # reseeded each epoch by the engine from (fold seed, epoch)
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    eval_model: nn.Module | None = None  # validation forward when forward_model is DDP-wrapped (no collectives)
    swa: nn.Module | None = None  # torch.optim.swa_utils.AveragedModel of `model` when train.swa is set
    swa_start: int = 0  # first 0-based epoch averaged into `swa` (and validated as a candidate)
    swa_lr: float | None = None  # train.swa.lr: a constant lr from swa_start on, via swa_scheduler (SWALR)
    swa_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # made by the engine when SWA starts


def swa_start_epoch(t: TrainConfig) -> int:
    """The first averaged epoch: train.swa.start of the epochs (0.75 of 8 -> epoch 6, the 7th), at most the last."""
    return min(t.epochs - 1, int(math.floor(t.swa.start * t.epochs))) if t.swa is not None else 0


def build_swa(model: nn.Module, t: TrainConfig) -> nn.Module | None:
    """An AveragedModel (equal weights per averaged epoch) of the model, when train.swa is set."""
    if t.swa is None:
        return None
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's random draws, from (fold seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def build_parts(model_cfg: ModelConfig, t: TrainConfig, augment: AugmentConfig, class_counts: np.ndarray,
                steps_per_epoch: int, *, seed: int, task=None,  # noqa: ANN001 - task: comp.core.tasks.Task
                targets: np.ndarray | None = None) -> Parts:
    """Model (random init from the current torch RNG), loss, optimizer, schedule, scaler, EMA, mixup, from the
    model, train and augment sections.

    A multiclass fit passes the training rows' class counts; another task kind passes its task (the model gets
    task.n_outputs outputs) and the training rows' targets (for train.pos_weight: auto).

    Examples:
        >>> cfg = build_config({"model": {"name": "test_resnet", "pretrained": False}})  # doctest: +SKIP
        >>> parts = build_parts(cfg.model, cfg.train, cfg.augment, np.array([50, 30, 20]), 100, seed=0)  # doctest: +SKIP
    """
    kind = "multiclass" if task is None else task.kind
    if kind != "multiclass" and (augment.mixup_alpha > 0 or augment.cutmix_alpha > 0):
        raise CompError(f"MixUp/CutMix mixes class labels; task {kind!r} does not support it here: set "
                        "augment.mixup_alpha and augment.cutmix_alpha to 0")
    n_outputs = len(class_counts) if task is None else task.n_outputs
    device = distributed.place(resolve_device(t.device))
    amp_dtype = resolve_amp(t.amp, device)
    channels_last = t.channels_last and device.type == "cuda"
    model = distributed.prepare_model(build_model(model_cfg, n_outputs), device, sync_bn=t.sync_bn).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mixup = build_mixup(augment, len(class_counts), batch_size=None if t.batch_size == "auto" else t.batch_size,
                        label_smoothing=t.label_smoothing, seed=epoch_seed(seed, 0))
    optimizer = build_optimizer(model, t)
    n_steps = math.ceil(steps_per_epoch / t.grad_accum)
    ema = ModelEmaV3(model, decay=t.ema_decay, use_warmup=True) if t.ema else None
    forward = torch.compile(model) if t.compile else model
    return Parts(
        model=model,
        forward_model=distributed.wrap(forward, device),
        loss=(build_loss(t, class_counts, mixup=mixup is not None) if kind == "multiclass"
              else build_task_loss(t, task, targets if targets is not None else np.zeros((0, n_outputs)))).to(device),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, t, n_steps),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        ema=ema,
        mixup=mixup,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        eval_model=forward if distributed.active() else None,
        swa=build_swa(model, t),
        swa_start=swa_start_epoch(t),
        swa_lr=t.swa.lr if t.swa is not None else None,
    )
