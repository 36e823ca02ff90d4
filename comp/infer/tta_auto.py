"""`comp predict --tta auto`: the test-time augmentation chosen on out-of-fold evidence.

Every candidate TTA (none, hflip, flip, d4, and multiscale / five_crop when the images are at least
MIN_SIDE pixels) is a set of ttach views, and the sets overlap (d4 holds hflip's views, flip's
vertical flip of a horizontal flip is d4's 180-degree rotation). One pass over the OOF images
computes each distinct view once (views are told apart by what they do to a probe image), through
comp.infer.predict's own per-view forward; each candidate's OOF probabilities are then merged from its
views, as `comp predict --tta NAME` merges them, and scored with the experiment's metric.

Choosing the best of several candidates on the same rows flatters it, so the choice is also nested:
for each fold f the candidate is chosen on the other folds' OOF rows and fold f's rows are scored with
it; the nested score (all rows, each scored with the choice made without its fold) is the honest
estimate of "TTA chosen automatically", reported beside the in-sample best.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from comp.core.config import Config
from comp.core.errors import CompError
from comp.core.metrics import Metric
from comp.core.progress import SILENT, Progress
from comp.core.layout import Layout

log = logging.getLogger("comp.infer.tta_auto")

CANDIDATES = ("none", "hflip", "flip", "d4", "multiscale", "five_crop")
MIN_SIDE = 32  # multiscale's 0.875 scale and five_crop's 0.875 crops lose too much of smaller images
EPS = 1e-7  # as comp.infer.predict clamps before a geometric mean


def candidates_for(hw: tuple[int, int]) -> list[str]:
    """The candidate TTAs that fit images of size (h, w)."""
    return [c for c in CANDIDATES if c not in ("multiscale", "five_crop") or min(hw) >= MIN_SIDE]


def union_views(names: Sequence[str], hw: tuple[int, int]) -> tuple[list[Any], dict[str, list[int]]]:
    """(every distinct view of the candidates once, {candidate: indices of its views in ttach's order})."""
    import torch

    from comp.infer.predict import build_tta

    probe = torch.rand((1, 3, *hw), generator=torch.Generator().manual_seed(0))
    views, index, keys = [], {}, {}
    for name in names:
        index[name] = []
        for view in build_tta(name, size=hw):
            out = view.augment_image(probe).contiguous()
            key = hashlib.sha256(str(tuple(out.shape)).encode() + out.numpy().tobytes()).hexdigest()
            if key not in keys:
                keys[key] = len(views)
                views.append(view)
            index[name].append(keys[key])
    return views, index


def merge(view_probs: np.ndarray, merge_name: str, task: Any = None) -> np.ndarray:
    """(V, N, C) per-view probabilities -> (N, C) as a TTA merges them: mean, or geometric mean renormalised.

    task: the outputs' task (comp.core.tasks.Task); other kinds than multiclass merge by mean, made valid by the task.
    """
    if task is not None and task.kind != "multiclass":
        return task.normalise(view_probs.mean(axis=0))
    if merge_name == "mean":
        out = view_probs.mean(axis=0)
    else:
        z = np.log(np.clip(view_probs, EPS, None)).mean(axis=0)
        out = np.exp(z - z.max(axis=1, keepdims=True))
    return out / out.sum(axis=1, keepdims=True)


def best_of(scores: dict[str, float], metric: Metric) -> str:
    """The best-scoring name; among equal scores the first listed (the simpler TTA)."""
    names = list(scores)
    best = names[0]
    for name in names[1:]:
        if metric.better(scores[name], scores[best]):
            best = name
    return best


def nested_choice(probs: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, metric: Metric) -> dict[str, Any]:
    """For each fold, the candidate best on the other folds' rows, and the OOF score of scoring each fold with it.

    probs: {candidate: (N, C) OOF probabilities}; returns {"choices": {fold: name}, "nested": score over all
    rows, "nested_folds": {fold: score of the fold's rows}}.
    """
    y, folds = np.asarray(y), np.asarray(folds)
    names = list(probs)
    out = np.empty_like(probs[names[0]])
    choices, per_fold = {}, {}
    for f in np.unique(folds).tolist():
        held = folds == f
        if held.all():
            raise CompError("--tta auto needs OOF rows of two or more folds to nest the choice")
        chosen = best_of({n: metric(y[~held], probs[n][~held]) for n in names}, metric)
        choices[int(f)] = chosen
        out[held] = probs[chosen][held]
        per_fold[int(f)] = float(metric(y[held], probs[chosen][held]))
    return {"choices": choices, "nested": float(metric(y, out)), "nested_folds": per_fold}


@dataclass
class AutoTTA:
    candidates: list[str]
    scores: dict[str, float]  # OOF score of each candidate (in-sample)
    chosen: str
    nested: dict[str, Any]
    views: int  # distinct views computed
    forwards_saved: int  # view forwards a pass per candidate would have added
    metric: str

    def record(self) -> dict[str, Any]:
        """predict.json's `tta_auto`."""
        return {"candidates": self.candidates, "scores": self.scores, "chosen": self.chosen,
                "gain_vs_none": {n: s - self.scores["none"] for n, s in self.scores.items()} if "none" in self.scores else {},
                "nested": self.nested["nested"], "nested_choices": {str(f): c for f, c in self.nested["choices"].items()},
                "nested_folds": {str(f): s for f, s in self.nested["nested_folds"].items()},
                "distinct_views": self.views, "metric": self.metric}


def oof_view_probs(ws: Layout, exp: str, cfg: Config, tables: Any, models: dict[int, Any], views: list[Any], *,
                   device: Any, progress: Progress = SILENT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((V, N, C) probabilities of every view, y, folds) over the OOF rows of training's oof.csv (folds with a model)."""
    import pandas as pd
    import torch

    from comp.data.tables import read_csv
    from comp.run.device import resolve_amp
    from comp.data.folds import check_trained_on
    from comp.infer.predict import _loader, _merge_views_models

    check_trained_on(ws, exp, tables.train)
    path = ws.oof_csv(exp)
    if not path.is_file():
        raise CompError(f"{path} does not exist; finish `comp fold-train -e {exp}` before --tta auto")
    plain = read_csv(path, "OOF table", text=("id", "label"), fix=f"rerun `comp fold-train -e {exp}`")
    plain = plain[plain["fold"].isin(list(models))].reset_index(drop=True)
    row_of = pd.Series(np.arange(len(tables.train)), index=tables.train["id"].astype(str))
    missing = set(plain["id"]) - set(row_of.index)
    if missing:
        raise CompError(f"{path} has ids not in train.csv (e.g. {sorted(missing)[:3]}); retrain the experiment")
    from comp.data.tables import targets_by_id

    y = targets_by_id(tables, plain["id"], what=str(path))
    activate = tables.task.for_config(cfg).activate
    out = np.zeros((len(views), len(plain), len(tables.classes)))
    amp_dtype = resolve_amp(cfg.train.amp, device)
    with torch.inference_mode():
        for fold, seeds in sorted(models.items()):
            mask = (plain["fold"] == fold).to_numpy()
            if not mask.any():
                continue
            seeds = seeds if isinstance(seeds, list) else [seeds]  # one model per seed of the fold (train.seeds)
            for model in seeds:
                model.eval().to(device)
            loader = _loader(tables.train, row_of.loc[plain["id"][mask]].to_numpy(), cfg, ws, progress)
            batches: list[np.ndarray] = []
            for images, *_ in progress.track(loader, description=f"--tta auto: fold {fold}, {len(views)} views"):
                per_view: list[list[list[torch.Tensor]]] = [[] for _ in seeds]
                _merge_views_models(seeds, images.to(device), views, merge="mean", device=device,
                                    amp_dtype=amp_dtype, per_view=per_view, activate=activate)
                # (V, B, C): each view's outputs averaged over the fold's seeds, as predict averages them
                batches.append(np.mean([torch.stack(m[-1]).double().numpy() for m in per_view], axis=0))
            out[:, mask] = np.concatenate(batches, axis=1)
    if not len(plain):
        raise CompError(f"{path} has no rows of the folds with checkpoints; run `comp fold-train -e {exp}`")
    return out, y, plain["fold"].to_numpy()


def choose_tta(cfg: Config, ws: Layout, exp: str, *, progress: Progress = SILENT) -> AutoTTA:
    """Score every candidate TTA on the OOF rows (one pass, each distinct view once) and choose, in-sample and nested."""
    from comp.data.tables import load_tables
    from comp.run.device import resolve_device
    from comp.core.metrics import get_metric
    from comp.infer.predict import load_fold_model, training_config

    trained, train_hash = training_config(ws, exp, cfg)
    ckpts = ws.model_checkpoints(exp)  # one per fold, or one per (fold, seed) with train.seeds
    if not ckpts:
        raise CompError(f"no fold checkpoints under {ws.exp_dir(exp)}; run `comp fold-train -e {exp}` first")
    tables = load_tables(trained, ws, check_images=False, progress=progress)
    from comp.train.seeds import checkpoint_hashes, split_key

    hashes = checkpoint_hashes(ws, exp, list(ckpts), train_hash)
    models: dict[int, list[Any]] = {}
    for key, p in ckpts.items():
        models.setdefault(split_key(key)[0], []).append(load_fold_model(p, trained, tables.classes, train_hash=hashes[key]))
    names = candidates_for(trained.image.hw)
    views, index = union_views(names, trained.image.hw)
    view_probs, y, folds = oof_view_probs(ws, exp, trained, tables, models, views,
                                          device=resolve_device(trained.train.device), progress=progress)
    metric = get_metric(trained.metric, tables.task)
    probs = {n: merge(view_probs[index[n]], cfg.tta.merge, tables.task) for n in names}
    scores = {n: float(metric(y, p)) for n, p in probs.items()}
    chosen = best_of(scores, metric)
    saved = sum(len(v) for v in index.values()) - len(views)
    return AutoTTA(candidates=names, scores=scores, chosen=chosen, nested=nested_choice(probs, y, folds, metric),
                   views=len(views), forwards_saved=saved, metric=metric.name)


def tta_auto_section(ws: Layout, exp: str, auto: AutoTTA, merge_name: str) -> None:
    """The report's section: each candidate's OOF gain over no TTA (bars), the choice and the nested score."""
    import html

    import pandas as pd

    from comp.report.page import add_section, img_html, plt, report_image, save_figure, table_html

    base = auto.scores.get("none", next(iter(auto.scores.values())))
    frame = pd.DataFrame({"candidate": auto.candidates, auto.metric: [auto.scores[n] for n in auto.candidates],
                          "gain vs none": [auto.scores[n] - base for n in auto.candidates]})
    fig, ax = plt.subplots(figsize=(6, 3.2))
    gains = frame["gain vs none"].to_numpy()
    colours = ["C3" if n == auto.chosen else ("C0" if g >= 0 else "C7") for n, g in zip(auto.candidates, gains)]
    ax.bar(frame["candidate"], gains, color=colours)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_ylabel(f"OOF {auto.metric} gain vs none")
    ax.set_title(f"--tta auto: chosen {auto.chosen} ({merge_name})")
    path, src = report_image(ws, exp, "tta-auto.png")
    save_figure(fig, path)
    choices = ", ".join(f"fold {f}: {c}" for f, c in auto.nested["choices"].items())
    body = (f"<p>chosen: {html.escape(auto.chosen)}, OOF {auto.metric} {auto.scores[auto.chosen]:.4f} in-sample "
            f"(the best of {len(auto.candidates)} candidates on the same rows); nested estimate "
            f"{auto.nested['nested']:.4f} (each fold scored with the TTA chosen on the other folds: {html.escape(choices)})"
            f"</p><p class='note'>{auto.views} distinct views computed once over the OOF images</p>"
            + img_html(src, "OOF gain of each candidate TTA") + table_html(frame))
    add_section(ws, exp, "tta-auto", "TTA chosen on OOF (--tta auto)", body, order=72)
