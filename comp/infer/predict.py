"""Test-set (and re-predicted OOF) probabilities from fold checkpoints, with ttach test-time augmentation.

Views are ttach transforms; each view is one batched forward; logits become probabilities
(softmax) BEFORE views are merged, because a geometric mean or sharpening of raw logits gives
NaN or flipped signs. Inference uses the training config recorded beside the checkpoints
(experiments/<exp>/config.yaml), so the eval pipeline is the one the model was trained with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import ttach as tta
from torch import nn

from comp.model.checkpoint import read_best
from comp.core.config import Config, TTAConfig, build_config, read_yaml
from comp.data.tables import read_csv
from comp.data.folds import check_trained_on
from comp.core.locks import short_lock
from comp.infer.predictions import (checkpoint_stamps, commit_predictions, oof_source_for, prediction_record, prob_columns,
                              probs_frame, stale_reason)
from comp.core.errors import CompError, did_you_mean
from comp.core.tasks import Task
from comp.run.device import autocast, resolve_amp, resolve_device
from comp.core.progress import SILENT, Progress
from comp.train.seeds import checkpoint_hashes, split_key
from comp.core.layout import Layout

log = logging.getLogger("comp.infer.predict")

TTA_NAMES = ("none", "hflip", "vflip", "flip", "d4", "multiscale", "five_crop", "ten_crop")
MULTISCALE = (0.875, 1.125)  # extra scales beside 1.0
CROP = 0.875  # five/ten crop: fraction of the image each crop keeps


def build_tta(name: str, *, size: tuple[int, int]) -> tta.Compose:
    """ttach views by name (its aliases); `size` is the (h, w) of the images the views see."""
    h, w = size
    crop = (max(1, int(h * CROP)), max(1, int(w * CROP)))
    factories = {
        "none": lambda: tta.Compose([]),
        "hflip": tta.aliases.hflip_transform,
        "vflip": tta.aliases.vlip_transform,
        "flip": tta.aliases.flip_transform,
        "d4": tta.aliases.d4_transform,
        "multiscale": lambda: tta.aliases.multiscale_transform(list(MULTISCALE), interpolation="bilinear"),
        "five_crop": lambda: tta.aliases.five_crop_transform(*crop),
        "ten_crop": lambda: tta.aliases.ten_crop_transform(*crop),
    }
    if name not in factories:
        raise CompError(f"unknown TTA {name!r}{did_you_mean(name, TTA_NAMES)}; use one of: {', '.join(TTA_NAMES)}")
    return factories[name]()


def predict_tta(
    model: nn.Module,
    loader: Any,
    *,
    tta: str = "hflip",
    merge: str = "mean",
    device: torch.device | str = "cpu",
    amp: str = "auto",
    progress: Progress = SILENT,
) -> np.ndarray:
    """(N, C) probabilities: per view softmax, merged by mean or geometric mean; rows in loader order."""
    return predict_tta_models({0: model}, loader, tta=tta, merge=merge, device=device, amp=amp, progress=progress)[0]


@torch.inference_mode()
def predict_tta_models(
    models: dict[Any, nn.Module],
    loader: Any,
    *,
    tta: str = "hflip",
    merge: str = "mean",
    device: torch.device | str = "cpu",
    amp: str = "auto",
    progress: Progress = SILENT,
    views_out: dict[Any, list[np.ndarray]] | None = None,
    task: Task | None = None,
) -> dict[Any, np.ndarray]:
    """predict_tta for several models in one pass: each batch is read, copied and augmented once for all of them.

    task: how logits become the table's values (comp/core/tasks.py; default multiclass softmax); views are merged
    by mean (any task) or geometric mean (multiclass only).

    views_out, when given, receives each model's probabilities of every single view ((N, C) per view, in
    the order of `view_names`): what each view alone would score.
    """
    if merge not in ("mean", "gmean"):
        raise CompError(f"unknown TTA merge {merge!r}; use mean or gmean")
    task = task or Task("multiclass", ())
    if merge == "gmean" and task.kind != "multiclass":
        raise CompError(f"tta.merge gmean renormalises softmax probabilities; task {task.kind!r} merges views by "
                        "mean: set tta.merge: mean")
    device = torch.device(device)
    amp_dtype = resolve_amp(amp, device)  # the precision training and validation used
    for model in models.values():
        model.eval().to(device)
    views, out = None, {key: [] for key in models}
    per_view: list[list[list[torch.Tensor]]] | None = [[] for _ in models] if views_out is not None else None
    for images, *_ in progress.track(loader, description=f"predict ({tta}, {len(models)} models)"):
        images = images.to(device, non_blocking=True)
        views = views or list(build_tta(tta, size=tuple(images.shape[-2:])))
        merged = _merge_views_models(list(models.values()), images, views, merge=merge, device=device,
                                     amp_dtype=amp_dtype, per_view=per_view, activate=task.activate)
        for key, probs in zip(models, merged):
            out[key].append(probs.cpu())
    if not all(out.values()):
        raise CompError("nothing to predict: the loader yielded no batches")
    if views_out is not None:
        for key, batches in zip(models, per_view):  # batches: per batch, one (B, C) tensor per view
            views_out[key] = [task.normalise(torch.cat(list(view)).double().numpy()) for view in zip(*batches)]
    return {key: task.normalise(torch.cat(parts).double().numpy()) for key, parts in out.items()}


def view_names(tta: str, *, size: tuple[int, int] = (32, 32)) -> list[str]:
    """A readable name per view of a TTA, in the order its views are applied (e.g. 'HorizontalFlip=True')."""
    compose = build_tta(tta, size=size)
    names = []
    for params in compose.aug_transform_parameters:
        parts = [f"{type(t).__name__}={p}" for t, p in zip(compose.aug_transforms, params)]
        names.append(", ".join(parts) or "identity")
    return names


def _merge_views_models(models: list[nn.Module], images: torch.Tensor, views: list, *, merge: str,
                        device: torch.device, amp_dtype: torch.dtype | None,
                        per_view: list[list[list[torch.Tensor]]] | None = None,
                        activate: Any = None) -> list[torch.Tensor]:
    """Each model's merged probabilities for one batch; every view is made once and fed to all models.

    per_view, when given, gets per model one more batch entry: that batch's probabilities of each view.
    """
    acc: list[torch.Tensor | None] = [None] * len(models)
    if per_view is not None:
        for batches in per_view:
            batches.append([])
    for view in views:
        viewed = view.augment_image(images).contiguous()  # rot90 views are strided; conv wants dense
        for m, model in enumerate(models):
            with autocast(device, amp_dtype):
                logits = model(viewed)
            logits = logits.float()  # (B, C), in float32 whatever the autocast dtype
            probs = torch.softmax(logits, dim=1) if activate is None else activate(logits)
            if per_view is not None:
                per_view[m][-1].append(probs.cpu())
            term = probs if merge == "mean" else torch.log(probs.clamp_min(1e-7))
            acc[m] = term if acc[m] is None else acc[m] + term
    merged = [a / len(views) for a in acc]
    return merged if merge == "mean" else [torch.softmax(a, dim=1) for a in merged]  # exp(mean log p), renormalised


# ---------------------------------------------------------------- an experiment's folds


def training_config(ws: Layout, exp: str, cfg: Config, *, tta_name: str | None = None) -> tuple[Config, str]:
    """(the config the folds were trained with, its train_hash), with only tta and device taken from `cfg`."""
    path = ws.config_yaml(exp)
    if not path.is_file():
        raise CompError(f"{path} does not exist: experiment {exp!r} has not been trained; run `comp fold-train -e {exp}`")
    doc = read_yaml(path)
    recorded = doc.pop("train_hash", None)
    doc.pop("config_hash", None)
    doc.pop("folds_file", None)
    doc.pop("lr_chosen", None)  # train.lr: auto's number, already in train.lr
    trained = build_config(doc, source=f"{path}: ")
    if recorded != trained.train_hash():
        log.warning("%s: recorded train_hash %s differs from its content's %s", path, recorded, trained.train_hash())
    if cfg.train_hash() != trained.train_hash():
        log.info("%s: using the training config recorded with the checkpoints, not the current one", exp)
    tta_cfg = TTAConfig(transforms=tta_name or cfg.tta.transforms, merge=cfg.tta.merge)
    build_tta(tta_cfg.transforms, size=(32, 32))  # fail early on an unknown name
    train = trained.train.model_copy(update={"device": cfg.train.device, "amp": cfg.train.amp})
    return trained.model_copy(update={"tta": tta_cfg, "train": train}), str(recorded)


def predict_experiment(
    cfg: Config,
    ws: Layout,
    exp: str,
    *,
    tta: str | None = None,
    oof: bool = False,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Read fold{i}/best.pt; write fold{i}/test.csv, test.csv (fold mean), [oof_tta.csv], then predict.json.

    Args:
        cfg: the current config: only its tta (unless `tta` is given), train.device and train.amp are used;
            everything else comes from the config recorded with the checkpoints.
        ws, exp: the workspace and the experiment.
        tta: a TTA name (none, hflip, flip, d4, ...) overriding tta.transforms.
        oof: also re-predict each fold's validation rows with the same TTA (oof_tta.csv), so blends can be
            fitted and scored on OOF made exactly as the test predictions.

    All predictions are computed first, then written under the experiment's lock with predict.json last,
    recording the sha256 of each file: a kill at any moment leaves either the old unit or the new one.
    """
    from comp.data.tables import load_tables  # the data stack is only needed when predicting

    trained, train_hash = training_config(ws, exp, cfg, tta_name=tta)
    ckpts = ws.model_checkpoints(exp)  # one per fold, or one per (fold, seed) with train.seeds
    if not ckpts:
        raise CompError(f"no fold checkpoints under {ws.exp_dir(exp)}; run `comp fold-train -e {exp}` first")
    tables = load_tables(trained, ws, check_images=False, progress=progress)  # the image cache names bad files
    if tables.test is None:
        raise CompError("data.test_csv is not set in comp.yaml; there is nothing to predict")
    have = sorted({split_key(key)[0] for key in ckpts})
    if len(have) < trained.folds.k:
        log.warning("%s: only folds %s of %d have checkpoints; predicting with those", exp, have, trained.folds.k)
    stamps = checkpoint_stamps(ckpts)
    hashes = checkpoint_hashes(ws, exp, list(ckpts), train_hash)  # a seed's run carries its seed's config hash
    models = {key: load_fold_model(path, trained, tables.classes, train_hash=hashes[key]) for key, path in ckpts.items()}
    device = resolve_device(trained.train.device)
    out, views = predict_tables(ws, exp, trained, tables, models, device=device, oof=oof, progress=progress)
    summary = {"tta": trained.tta.transforms, "merge": trained.tta.merge, "folds": list(ckpts),
               "train_hash": train_hash, "checkpoints": stamps, "test_rows": len(tables.test),
               "oof_tta": ws.oof_tta_csv(exp).name if oof else None, "oof_view_scores": views or None}
    with short_lock(ws.exp_lock(exp), f"writing the predictions of {exp}"):
        return commit_predictions(ws, exp, out, summary)


def predict_tables(ws: Layout, exp: str, cfg: Config, tables: Any, models: dict[int, nn.Module], *,
                   device: torch.device, oof: bool, progress: Progress) -> tuple[dict[Path, pd.DataFrame], dict[str, float]]:
    """({path: table} of every prediction file: per-fold and mean test probabilities, [OOF re-predicted]),
    and with `oof` the OOF score of each TTA view alone."""
    test_ids = tables.test["id"].astype(str).tolist()
    loader = _loader(tables.test, np.arange(len(tables.test)), cfg, ws, progress)
    out, per_fold = {}, []
    all_probs = predict_tta_models(models, loader, tta=cfg.tta.transforms, merge=cfg.tta.merge, device=device,
                                   amp=cfg.train.amp, progress=progress,  # one pass over the test images
                                   task=tables.task.for_config(cfg))
    for fold, probs in seed_means(all_probs).items():  # fold{i}/test.csv: the mean of the fold's seeds
        out[ws.test_probs_csv(exp, fold)] = probs_frame(test_ids, probs, tables.classes)
        per_fold.append(probs)
    out[ws.test_probs_csv(exp)] = probs_frame(test_ids, np.mean(per_fold, axis=0), tables.classes)
    views: dict[str, float] = {}
    if oof:
        out[ws.oof_tta_csv(exp)], views = predict_oof(ws, exp, cfg, tables, models, device=device, progress=progress)
    return out, views


def seed_means(probs: dict[Any, np.ndarray]) -> dict[int, np.ndarray]:
    """{fold: probabilities} from {checkpoint key: probabilities}: a fold's seeds averaged (one seed: itself)."""
    folds: dict[int, list[np.ndarray]] = {}
    for key, p in probs.items():
        folds.setdefault(split_key(key)[0], []).append(p)
    return {fold: np.mean(ps, axis=0) for fold, ps in sorted(folds.items())}


def load_fold_model(path: Path, cfg: Config, classes: tuple, *, train_hash: str) -> nn.Module:
    """A fold's best weights in a freshly built model; refuses checkpoints of another config or class set."""
    from comp.model.factory import build_model

    fold_dir = path.parent if path.parent.name.startswith("fold") else path.parent.parent  # fold{i}/[seed{s}/]best.pt
    fold, exp = fold_dir.name.removeprefix("fold"), fold_dir.parent.name
    ckpt = read_best(path, retrain=f"comp fold-train -e {exp} --fold {fold}")
    if ckpt.base.train_hash != train_hash:
        raise CompError(f"{path} was trained with config {ckpt.base.train_hash} but {fold_dir.parent / 'config.yaml'} "
                        f"records {train_hash}; rerun `comp fold-train` (--force) so checkpoints and config agree")
    names = [str(c) for c in classes]
    if list(ckpt.base.classes) != names:
        have = [str(c) for c in ckpt.base.classes]
        extra, missing = sorted(set(have) - set(names)), sorted(set(names) - set(have))
        differ = f"extra classes {extra[:5]}, missing classes {missing[:5]}" if extra or missing else "in another order"
        raise CompError(f"{path} predicts other classes than train.csv ({differ}); the data changed since training: "
                        f"retrain with `comp fold-train -e {exp} --force`")
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_path": None})  # weights come from ckpt
    model = build_model(model_cfg, len(names))
    model.load_state_dict(ckpt.model)
    return model.eval()


def predict_oof(ws: Layout, exp: str, cfg: Config, tables: Any, models: dict[int, nn.Module], *, device: torch.device,
                progress: Progress) -> tuple[pd.DataFrame, dict[str, float]]:
    """Each fold's validation rows (from oof.csv) re-predicted with the TTA used on test (the oof_tta.csv table),
    and the OOF score of each TTA view alone (what each view adds or costs)."""
    check_trained_on(ws, exp, tables.train)
    path = ws.oof_csv(exp)
    if not path.is_file():
        raise CompError(f"{path} does not exist; finish `comp fold-train -e {exp}` before --oof")
    plain = read_csv(path, "OOF table", text=("id", "label"), fix=f"rerun `comp fold-train -e {exp}`")
    row_of = pd.Series(np.arange(len(tables.train)), index=tables.train["id"].astype(str))
    missing = set(plain["id"]) - set(row_of.index)
    if missing:
        raise CompError(f"{path} has ids not in train.csv (e.g. {sorted(missing)[:3]}); retrain the experiment")
    cols = prob_columns(tables.classes)
    out = plain[["id", "fold", "label"]].copy()
    out[cols] = np.nan
    names = view_names(cfg.tta.transforms, size=cfg.image.hw)
    views = np.full((len(names), len(out), len(cols)), np.nan)
    for fold in sorted({split_key(key)[0] for key in models}):
        group = {key: model for key, model in models.items() if split_key(key)[0] == fold}  # the fold's seeds
        mask = (plain["fold"] == fold).to_numpy()
        if mask.any():
            loader = _loader(tables.train, row_of.loc[plain["id"][mask]].to_numpy(), cfg, ws, progress)
            per_view: dict[Any, list[np.ndarray]] = {}
            probs = predict_tta_models(group, loader, tta=cfg.tta.transforms, merge=cfg.tta.merge,
                                       device=device, amp=cfg.train.amp, progress=progress,
                                       views_out=per_view, task=tables.task.for_config(cfg))
            out.loc[mask, cols] = np.mean(list(probs.values()), axis=0)
            views[:, mask] = np.mean([np.stack(per_view[key]) for key in group], axis=0)
    done = out[cols].notna().all(axis=1).to_numpy()
    return out[done].reset_index(drop=True), view_scores(names, views[:, done], out["id"][done], tables, cfg)


def view_scores(names: list[str], views: np.ndarray, ids: pd.Series, tables: Any, cfg: Config) -> dict[str, float]:
    """The competition metric of each single TTA view's OOF probabilities ((V, N, C) -> {view name: score})."""
    from comp.core.metrics import get_metric

    from comp.data.tables import targets_by_id

    metric = get_metric(cfg.metric, tables.task)
    y = targets_by_id(tables, ids)
    return {name: float(metric(y, probs)) for name, probs in zip(names, views)}


def _loader(frame: pd.DataFrame, indices: np.ndarray, cfg: Config, ws: Layout, progress: Progress) -> Any:
    """The eval loader (THE eval pipeline, the one validation used) over `indices` of `frame`."""
    from comp.data.cache import prepare_images
    from comp.train.loaders import eval_loader

    store = prepare_images(frame, cfg.image, cfg.augment, ws, progress=progress)
    return eval_loader(cfg, store, np.asarray(indices))


# ---------------------------------------------------------------- members of a blend


def member_config(ws: Layout, exp: str, overrides: Sequence[str] = ()) -> Config:
    """A member's current config (its TTA, device); a trained experiment whose YAML is gone falls back to comp.yaml."""
    from comp.core.config import load_config

    has_yaml = ws.experiment_yaml(exp).is_file()
    return load_config(ws.root, exp if has_yaml else "baseline", tuple(overrides))


def choose_tta(record: dict | None, tta: str | None, cfg: Config) -> tuple[TTAConfig, str]:
    """The TTA a member is blended with, and why: --tta, else the one its predictions on disk used, else tta.transforms."""
    if tta is not None:
        return TTAConfig(transforms=tta, merge=cfg.tta.merge), "--tta"
    if record is not None and record.get("tta"):
        return TTAConfig(transforms=record["tta"], merge=record.get("merge", "mean")), "recorded in predict.json"
    return cfg.tta, "the experiment's tta.transforms"


def prepare_members(ws: Layout, members: Sequence[str], *, tta: str | None = None, oof_source: str = "auto",
                    overrides: Sequence[str] = (), progress: Progress = SILENT) -> dict[str, str]:
    """Make each member's test (and matching OOF) predictions current; {member: what was used and why}.

    A member is predicted again only when its predictions are missing, interrupted, made from other
    checkpoints, or made with another TTA than the one chosen (--tta, else the recorded one).
    """
    done = {}
    for exp in members:
        cfg = member_config(ws, exp, overrides)
        record = prediction_record(ws, exp)
        chosen, why = choose_tta(record, tta, cfg)
        need_oof = oof_source_for(chosen.transforms, oof_source, exp) == "tta"
        reason = stale_reason(record, tta=chosen.transforms, merge=chosen.merge, oof=need_oof,
                              ckpts=ws.model_checkpoints(exp))
        if reason is None:
            done[exp] = f"TTA {chosen.transforms} ({why}): predictions on disk are current"
            continue
        progress.log(f"{exp}: predicting with TTA {chosen.transforms} ({why}){' and its OOF rows' if need_oof else ''}, "
                     f"because {reason}")
        predict_experiment(cfg.model_copy(update={"tta": chosen}), ws, exp, oof=need_oof, progress=progress)
        done[exp] = f"TTA {chosen.transforms} ({why}): predicted now"
    return done
