"""One member experiment of a bundle: checks that its test predictions can be reproduced, then its weights and spec."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from comp.core.config import Config
from comp.core.errors import CompError
from comp.core.layout import Layout, write_bytes
from comp.data.dataset import eval_batch_size

log = logging.getLogger("comp.export")

EXTERNAL_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def predictions_made(ws: Layout, exp: str, train_hash: str, ckpts: dict[int, Path]) -> dict[str, Any]:
    """The predict record of a member whose test.csv is complete and made from these checkpoints; else a CompError."""
    from comp.infer.predictions import checkpoints_changed, prediction_record

    rerun = f"rerun `comp predict -e {exp}` (and `comp ensemble`) first"
    made = prediction_record(ws, exp)
    if made is None:
        raise CompError(f"member {exp!r} has no complete test predictions ({ws.predict_json(exp)} missing or not "
                        f"matching its files); run `comp predict -e {exp}` first, so the bundle can be checked against them")
    if made.get("train_hash") != train_hash:
        raise CompError(f"member {exp!r}: its test predictions come from config {made.get('train_hash')} but its "
                        f"checkpoints from {train_hash}; {rerun}")
    used = [int(f) if str(f).isdigit() else str(f) for f in made.get("folds", [])]  # fold, or "<fold>-seed<s>"
    missing = [f for f in used if f not in ckpts]
    if missing:
        raise CompError(f"member {exp!r}: its test predictions used folds {used} but fold{missing[0]}/best.pt is missing, "
                        f"so they cannot be reproduced; restore it, or rerun `comp predict -e {exp}` with the folds present")
    if missing := [key for key in ckpts if key not in used]:
        raise CompError(f"member {exp!r}: checkpoint {missing[0]} is not in its test predictions; {rerun}")
    if checkpoints_changed(made.get("checkpoints"), ckpts):  # by content where a copy changed the mtimes
        raise CompError(f"member {exp!r}: its checkpoints changed since its test predictions were made; {rerun}")
    return made


def member_spec(cfg: Config, ws: Layout, exp: str, classes: tuple, folder: Path, *, onnx: bool = False) -> dict[str, Any]:
    """Write <exp>.fold<k>.safetensors (+ .onnx) and <exp>.config.yaml into `folder`; return the member's bundle entry."""
    from comp.data.cache import cache_hw
    from comp.model.factory import resolve_norm
    from comp.infer.predict import CROP, MULTISCALE, training_config

    trained, train_hash = training_config(ws, exp, cfg)
    check_model_name(trained.model.name, exp)
    from comp.train.seeds import checkpoint_hashes

    ckpts = ws.model_checkpoints(exp)  # every seed of every fold (train.seeds): the bundle averages them all
    made = predictions_made(ws, exp, train_hash, ckpts)
    hashes = checkpoint_hashes(ws, exp, list(ckpts), train_hash)
    mean, std = resolve_norm(trained.model)
    spec: dict[str, Any] = {
        "name": exp, "train_hash": train_hash, "folds": list(ckpts), "amp": trained.train.amp,
        "batch_size": eval_batch_size(trained.train.batch_size), "config": f"{exp}.config.yaml",
        "model": {"name": trained.model.name, "num_classes": len(classes), "drop_rate": trained.model.drop_rate,
                  "drop_path_rate": trained.model.drop_path_rate},
        "preprocess": {"input_hw": list(trained.image.hw), "cache_hw": list(cache_hw(trained.image, trained.augment)),
                       "bbox_margin": trained.image.bbox_margin, "mean": list(mean), "std": list(std)},
        "tta": {"name": made["tta"], "merge": made["merge"], "crop": CROP, "scales": list(MULTISCALE)},
        "weights": {}, "onnx": {},
    }
    write_bytes(folder / spec["config"], ws.config_yaml(exp).read_bytes())
    for fold, path in ckpts.items():
        save_fold(spec, fold, path, trained, classes, hashes[fold], folder, onnx=onnx)
    return spec


def save_fold(spec: dict[str, Any], fold: int, path: Path, trained: Config, classes: tuple, train_hash: str,
              folder: Path, *, onnx: bool) -> None:
    """One fold's weights as safetensors (and ONNX, checked against torch) beside the bundle."""
    from safetensors.torch import save_file

    from comp.infer.predict import load_fold_model
    from comp.core.layout import write_with

    model = load_fold_model(path, trained, classes, train_hash=train_hash)  # refuses a checkpoint of another config
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    name = f"{spec['name']}.fold{fold}.safetensors"
    write_with(folder / name, lambda tmp: save_file(state, str(tmp), metadata={"fold": str(fold), "train_hash": train_hash}))
    spec["weights"][str(fold)] = name
    if onnx:
        from comp.export.onnx import export_onnx

        onnx_name = f"{spec['name']}.fold{fold}.onnx"
        spec.setdefault("onnx_max_abs_diff", {})[str(fold)] = export_onnx(model, spec, folder / onnx_name)
        spec["onnx"][str(fold)] = onnx_name


def check_model_name(name: str, exp: str) -> None:
    """Refuse models whose architecture timm would fetch from a hub at inference time."""
    if name.startswith(EXTERNAL_PREFIXES):
        raise CompError(f"member {exp!r} uses model.name {name!r}: timm reads that architecture from outside its "
                        "registry, which an offline notebook cannot do; export needs a timm registry name "
                        "(timm.list_models())")
