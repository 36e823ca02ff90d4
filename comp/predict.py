"""Test-set (and re-predicted OOF) probabilities from fold checkpoints, with ttach test-time augmentation.

Views are ttach transforms; each view is one batched forward; logits become probabilities
(softmax) BEFORE views are merged, because a geometric mean or sharpening of raw logits gives
NaN or flipped signs. Inference uses the training config recorded beside the checkpoints
(experiments/<exp>/config.yaml), so the eval pipeline is the one the model was trained with.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import ttach as tta
from torch import nn

from comp.config import Config, TTAConfig, build_config, read_yaml
from comp.data.tables import read_csv
from comp.ensemble import oof_path, prob_columns
from comp.errors import CompError, did_you_mean
from comp.optim import autocast, resolve_amp, resolve_device
from comp.progress import SILENT, Progress
from comp.workspace import Workspace, write_csv, write_json

log = logging.getLogger("comp.predict")

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


@torch.inference_mode()
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
    if merge not in ("mean", "gmean"):
        raise CompError(f"unknown TTA merge {merge!r}; use mean or gmean")
    device = torch.device(device)
    amp_dtype = resolve_amp(amp, device)  # the precision training and validation used
    model.eval().to(device)
    views, out = None, []
    for images, *_ in progress.track(loader, description=f"predict ({tta})"):
        images = images.to(device, non_blocking=True)
        views = views or list(build_tta(tta, size=tuple(images.shape[-2:])))
        out.append(_merge_views(model, images, views, merge=merge, device=device, amp_dtype=amp_dtype).cpu())
    if not out:
        raise CompError("nothing to predict: the loader yielded no batches")
    probs = torch.cat(out).double().numpy()
    return probs / probs.sum(axis=1, keepdims=True)


def _merge_views(model: nn.Module, images: torch.Tensor, views: list, *, merge: str, device: torch.device,
                 amp_dtype: torch.dtype | None) -> torch.Tensor:
    acc = None
    for view in views:
        with autocast(device, amp_dtype):
            logits = model(view.augment_image(images).contiguous())  # rot90 views are strided; conv wants dense
        probs = torch.softmax(logits.float(), dim=1)  # (B, C), in float32 whatever the autocast dtype
        term = probs if merge == "mean" else torch.log(probs.clamp_min(1e-7))
        acc = term if acc is None else acc + term
    acc = acc / len(views)
    return acc if merge == "mean" else torch.softmax(acc, dim=1)  # exp(mean log p), renormalised


# ---------------------------------------------------------------- an experiment's folds


def oof_tta_csv(ws: Workspace, exp: str) -> Path:
    return oof_path(ws, exp, "tta")


def predict_json(ws: Workspace, exp: str) -> Path:
    return ws.exp_dir(exp) / "predict.json"


def fold_checkpoints(ws: Workspace, exp: str) -> dict[int, Path]:
    """{fold: best.pt} for every fold folder holding one."""
    found = {}
    for path in ws.exp_dir(exp).glob("fold*/best.pt"):
        suffix = path.parent.name.removeprefix("fold")
        if suffix.isdigit():
            found[int(suffix)] = path
    return dict(sorted(found.items()))


def training_config(ws: Workspace, exp: str, cfg: Config, *, tta_name: str | None = None) -> tuple[Config, str]:
    """(the config the folds were trained with, its train_hash), with only tta and device taken from `cfg`."""
    path = ws.config_yaml(exp)
    if not path.is_file():
        raise CompError(f"{path} does not exist: experiment {exp!r} has not been trained; run `comp fold-train -e {exp}`")
    doc = read_yaml(path)
    recorded = doc.pop("train_hash", None)
    doc.pop("config_hash", None)
    trained = build_config(doc, source=f"{path}: ")
    if recorded != trained.train_hash():
        log.warning("%s: recorded train_hash %s differs from its content's %s", path, recorded, trained.train_hash())
    if cfg.train_hash() != trained.train_hash():
        log.info("%s: using the training config recorded with the checkpoints, not the current one", exp)
    tta_cfg = TTAConfig(transforms=tta_name or cfg.tta.transforms, merge=cfg.tta.merge)
    build_tta(tta_cfg.transforms, size=(32, 32))  # fail early on an unknown name
    train = trained.train.model_copy(update={"device": cfg.train.device, "amp": cfg.train.amp})
    return trained.model_copy(update={"tta": tta_cfg, "train": train}), str(recorded)


def is_stale(ws: Workspace, exp: str, cfg: Config, *, oof: bool = False, tta_name: str | None = None) -> bool:
    """Are the test (and OOF-TTA) predictions missing, older than a checkpoint, or made with other TTA/folds?"""
    ckpts = fold_checkpoints(ws, exp)
    outputs = [ws.test_probs_csv(exp), predict_json(ws, exp)] + ([oof_tta_csv(ws, exp)] if oof else [])
    if not ckpts or not all(p.is_file() for p in outputs):
        return True
    newest = max(p.stat().st_mtime for p in ckpts.values())
    if any(p.stat().st_mtime < newest for p in outputs):
        return True
    made = json.loads(predict_json(ws, exp).read_text())
    wanted = {"tta": tta_name or cfg.tta.transforms, "merge": cfg.tta.merge, "folds": sorted(ckpts)}
    return any(made.get(k) != v for k, v in wanted.items())


def predict_experiment(
    cfg: Config,
    ws: Workspace,
    exp: str,
    *,
    tta: str | None = None,
    oof: bool = False,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Read fold{i}/best.pt; write fold{i}/test.csv, test.csv (fold mean), [oof_tta.csv], predict.json."""
    from comp.data.tables import load_tables  # the data stack is only needed when predicting

    trained, train_hash = training_config(ws, exp, cfg, tta_name=tta)
    ckpts = fold_checkpoints(ws, exp)
    if not ckpts:
        raise CompError(f"no fold checkpoints under {ws.exp_dir(exp)}; run `comp fold-train -e {exp}` first")
    tables = load_tables(trained, ws, check_images=False, progress=progress)  # the image cache names bad files
    if tables.test is None:
        raise CompError("data.test_csv is not set in comp.yaml; there is nothing to predict")
    if len(ckpts) < trained.folds.k:
        log.warning("%s: only folds %s of %d have checkpoints; predicting with those", exp, sorted(ckpts), trained.folds.k)
    models = {fold: load_fold_model(path, trained, tables.classes, train_hash=train_hash) for fold, path in ckpts.items()}
    device = resolve_device(trained.train.device)
    test_ids = tables.test["id"].astype(str).tolist()
    loader = _loader(tables.test, np.arange(len(tables.test)), trained, ws, progress)
    per_fold = []
    for fold, model in models.items():
        probs = _predict(model, loader, trained, device, progress)
        write_csv(ws.test_probs_csv(exp, fold), probs_frame(test_ids, probs, tables.classes))
        per_fold.append(probs)
    write_csv(ws.test_probs_csv(exp), probs_frame(test_ids, np.mean(per_fold, axis=0), tables.classes))
    summary = {"tta": trained.tta.transforms, "merge": trained.tta.merge, "folds": sorted(ckpts),
               "train_hash": train_hash, "test_rows": len(test_ids), "oof_tta": None}
    if oof:
        summary["oof_tta"] = predict_oof(ws, exp, trained, tables, models, device=device, progress=progress)
    write_json(predict_json(ws, exp), summary)
    return summary


def load_fold_model(path: Path, cfg: Config, classes: tuple, *, train_hash: str) -> nn.Module:
    """A fold's best weights in a freshly built model; refuses checkpoints of another config or class set."""
    from comp.models import build_model

    ckpt = read_fold_checkpoint(path)
    if ckpt.get("train_hash") != train_hash:
        raise CompError(f"{path} was trained with config {ckpt.get('train_hash')} but {path.parent.parent / 'config.yaml'} "
                        f"records {train_hash}; rerun `comp fold-train` (--force) so checkpoints and config agree")
    names = [str(c) for c in classes]
    if list(ckpt.get("classes", names)) != names:
        have = [str(c) for c in ckpt["classes"]]
        extra, missing = sorted(set(have) - set(names)), sorted(set(names) - set(have))
        differ = f"extra classes {extra[:5]}, missing classes {missing[:5]}" if extra or missing else "in another order"
        raise CompError(f"{path} predicts other classes than train.csv ({differ}); the data changed since training: "
                        f"retrain with `comp fold-train -e {path.parent.parent.name} --force`")
    model_cfg = cfg.model.model_copy(update={"pretrained": False, "pretrained_path": None})  # weights come from ckpt
    model = build_model(model_cfg, len(names))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def read_fold_checkpoint(path: Path) -> dict[str, Any]:
    """fold{i}/best.pt as a dict; a corrupt or truncated file is a CompError naming it and the fold to retrain."""
    fold, exp = path.parent.name.removeprefix("fold"), path.parent.parent.name
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, a foreign file: all mean the same to the user
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CompError(f"{path} is corrupt or truncated ({reason}); retrain that fold with "
                        f"`comp fold-train -e {exp} --fold {fold}`") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CompError(f"{path} is not a comp fold checkpoint; retrain that fold with `comp fold-train -e {exp} --fold {fold}`")
    return ckpt


def predict_oof(ws: Workspace, exp: str, cfg: Config, tables: Any, models: dict[int, nn.Module], *, device: torch.device, progress: Progress) -> str:
    """Each fold's validation rows (from oof.csv) re-predicted with the TTA used on test -> oof_tta.csv."""
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
    for fold, model in models.items():
        mask = (plain["fold"] == fold).to_numpy()
        if mask.any():
            loader = _loader(tables.train, row_of.loc[plain["id"][mask]].to_numpy(), cfg, ws, progress)
            out.loc[mask, cols] = _predict(model, loader, cfg, device, progress)
    out = out.dropna(subset=cols)
    write_csv(oof_tta_csv(ws, exp), out)
    return str(oof_tta_csv(ws, exp))


def _loader(frame: pd.DataFrame, indices: np.ndarray, cfg: Config, ws: Workspace, progress: Progress) -> Any:
    """The eval loader (THE eval pipeline, the one validation used) over `indices` of `frame`."""
    from comp.data.cache import prepare_images
    from comp.data.dataset import build_eval_loader

    store = prepare_images(frame, cfg, ws, progress=progress)
    return build_eval_loader(store, np.asarray(indices), cfg)


def _predict(model: nn.Module, loader: Any, cfg: Config, device: torch.device, progress: Progress) -> np.ndarray:
    return predict_tta(model, loader, tta=cfg.tta.transforms, merge=cfg.tta.merge, device=device,
                       amp=cfg.train.amp, progress=progress)


def probs_frame(ids: list[str], probs: np.ndarray, classes: tuple) -> pd.DataFrame:
    """id, p_<class>... (the schema of every probability table)."""
    frame = pd.DataFrame(np.asarray(probs), columns=prob_columns(classes))
    frame.insert(0, "id", ids)
    return frame
